import { describe, expect, test } from "bun:test";
import { ActiveMap, type ActiveMapOptions, type MapWrite } from "../../../src/core/activemap.ts";
import { AssertionError } from "../../../src/core/assert.ts";

const EXT = 4096;
// 8 extents, the last one 3584 bytes long; sync chunks of 1 KiB.
const OPTIONS: ActiveMapOptions = { datasize: 8 * EXT - 512, extentsize: EXT, keepdirty: 2, sectorsize: 512, chunk_bytes: 1024 };

function map(options: Partial<ActiveMapOptions> = {}): ActiveMap {
  return new ActiveMap({ ...OPTIONS, ...options });
}

/** Extents whose bit is set in a map image. */
function bits(image: Uint8Array): number[] {
  const out: number[] = [];
  image.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(i * 8 + b);
  });
  return out;
}

/** The extents set in the (single) piece of a MapWrite. */
function written(write: MapWrite | null): number[] {
  expect(write).not.toBeNull();
  expect(write!.pieces.length).toBe(1);
  expect(write!.pieces[0]!.offset).toBe(0);
  expect(write!.pieces[0]!.bytes.length).toBe(4096);
  return bits(write!.pieces[0]!.bytes);
}

function drainSync(am: ActiveMap): MapWrite[] {
  const writes: MapWrite[] = [];
  for (let chunk = am.nextSyncChunk(), n = 0; chunk !== null && n < 1000; chunk = am.nextSyncChunk(), n++) {
    const write = am.syncChunkDone(chunk, true);
    if (write !== null) writes.push(write);
  }
  return writes;
}

describe("ActiveMap write path", () => {
  test("first write to a clean extent needs a map write before the data write", () => {
    const am = map();
    const write = am.writeStart(100, 200);
    expect(written(write)).toEqual([0]);
    expect(write!.seq).toBe(1);
    expect(write!.flush).toBe(true);
    expect(am.mapSeq).toBe(1);
    expect(am.extentState(0)).toEqual({ pending: 1, dirty: true, on_disk: true, in_sync_set: false, in_keepdirty: true });
    am.checkInvariants();
  });

  test("a second write to an extent in the LRU needs no map write (but the first one's must be durable)", () => {
    const am = map();
    am.writeStart(0, 512);
    expect(am.writeStart(1024, 512)).toBeNull();
    expect(am.mapSeq).toBe(1); // the caller waits for seq 1 before both data writes
    expect(am.extentState(0).pending).toBe(2);
  });

  test("completing a write in the LRU keeps the extent dirty on disk, not in memory", () => {
    const am = map();
    am.writeStart(0, 512);
    expect(am.writeComplete(0, 512)).toBeNull();
    expect(am.extentState(0)).toEqual({ pending: 0, dirty: false, on_disk: true, in_sync_set: false, in_keepdirty: true });
    expect(am.dirtyExtentCount()).toBe(0);
    expect(bits(am.diskImage())).toEqual([0]);
  });

  test("LRU eviction clears an idle evicted extent in the same map write", () => {
    const am = map();
    for (const e of [0, 1]) {
      am.writeStart(e * EXT, 512);
      am.writeComplete(e * EXT, 512);
    }
    expect(written(am.writeStart(2 * EXT, 512))).toEqual([1, 2]);
    expect(am.extentState(0).on_disk).toBe(false);
  });

  test("an evicted extent with writes in flight stays on disk; completing it clears it", () => {
    const am = map();
    am.writeStart(0, 512);
    am.writeStart(EXT, 512);
    expect(written(am.writeStart(2 * EXT, 512))).toEqual([0, 1, 2]);
    expect(written(am.writeComplete(0, 512))).toEqual([1, 2]);
  });

  test("a write across an extent boundary holds both extents", () => {
    const am = map();
    expect(written(am.writeStart(EXT - 512, 1024))).toEqual([0, 1]);
    expect(am.dirtyExtentCount()).toBe(2);
    expect(am.dirtyBytes()).toBe(2 * EXT);
    am.writeComplete(EXT - 512, 1024);
    expect(am.dirtyExtentCount()).toBe(0);
  });

  test("reads and deletes have no entry point; bad ranges are assertion failures", () => {
    const am = map();
    expect(() => am.writeComplete(0, 512)).toThrow(AssertionError);
    expect(() => am.writeStart(OPTIONS.datasize - 512, 1024)).toThrow(AssertionError);
    expect(() => am.writeStart(0, 0)).toThrow(AssertionError);
    expect(() => am.writeStart(-512, 512)).toThrow(AssertionError);
  });

  test("metaflush off makes later map writes skip the flush", () => {
    const am = map({ metaflush: false });
    expect(am.writeStart(0, 512)!.flush).toBe(false);
    am.setMetaflush(true);
    expect(am.writeStart(3 * EXT, 512)!.flush).toBe(true);
  });
});

describe("ActiveMap defer_clears (a primary with a peer)", () => {
  /** Extents 0 and 1 written and completed: the LRU (keepdirty 2) is full, both idle. */
  function fullLru(): ActiveMap {
    const am = map({ defer_clears: true });
    for (const e of [0, 1]) {
      am.writeStart(e * EXT, 512);
      am.writeComplete(e * EXT, 512);
    }
    return am;
  }

  test("an eviction's clear waits: the write that sets a bit carries no clear, and no flush before it", () => {
    const am = fullLru();
    const write = am.writeStart(2 * EXT, 512)!;
    expect(written(write)).toEqual([0, 1, 2]); // 0 evicted, still set on disk
    expect(write.flush_before).toBe(false);
    expect(write.flush).toBe(true);
    expect(am.clearsWaiting).toBe(1);
    expect(am.extentState(0)).toEqual({ pending: 0, dirty: false, on_disk: true, in_sync_set: false, in_keepdirty: false });
    am.checkInvariants();
  });

  test("written once a flush started after it got clean succeeded, without a flush before it", () => {
    const am = fullLru();
    const before = am.flushStarting(); // started before extent 0 got clean: covers nothing of it
    am.writeStart(2 * EXT, 512);
    expect(am.flushCovered(before)).toBeNull();
    const after = am.flushStarting();
    const clear = am.flushCovered(after)!;
    expect(written(clear)).toEqual([1, 2]);
    expect(clear).toMatchObject({ flush_before: false, sets: false });
    expect(am.clearsWaiting).toBe(0);
    am.checkInvariants();
  });

  test("an extent written again while its clear waits stays dirty, and no clear follows", () => {
    const am = fullLru();
    am.writeStart(2 * EXT, 512);
    const token = am.flushStarting();
    expect(am.writeStart(0, 512)).toBeNull(); // set on disk already: nothing to write
    expect(am.clearsWaiting).toBe(1); // extent 1 now, evicted by this write
    expect(am.flushCovered(token)).toBeNull(); // started before extent 1 got clean
    expect(am.extentState(0)).toMatchObject({ dirty: true, on_disk: true });
    expect(written(am.flushCovered(am.flushStarting()))).toEqual([0, 2]);
    am.checkInvariants();
  });

  test("forgetKeepdirty clears the LRU and the waiting clears at once, after a flush", () => {
    const am = fullLru();
    am.writeStart(2 * EXT, 512);
    am.writeComplete(2 * EXT, 512);
    const write = am.forgetKeepdirty()!;
    expect(written(write)).toEqual([]);
    expect(write.flush_before).toBe(true);
    expect(am.clearsWaiting).toBe(0);
    am.checkInvariants();
  });

  test("with metaflush off nothing waits (no flush to save)", () => {
    const am = map({ defer_clears: true, metaflush: false });
    for (const e of [0, 1]) {
      am.writeStart(e * EXT, 512);
      am.writeComplete(e * EXT, 512);
    }
    expect(written(am.writeStart(2 * EXT, 512))).toEqual([1, 2]);
    expect(am.clearsWaiting).toBe(0);
  });
});

describe("ActiveMap resync marking", () => {
  test("needSync on a clean extent writes it dirty and holds it for sync", () => {
    const am = map();
    expect(written(am.needSync(5 * EXT, 10))).toEqual([5]);
    expect(am.extentState(5)).toEqual({ pending: 1, dirty: true, on_disk: true, in_sync_set: true, in_keepdirty: false });
    expect(am.needSync(5 * EXT, 10)).toBeNull();
    expect(am.extentState(5).pending).toBe(1);
    expect(am.syncPendingBytes()).toBe(EXT);
  });

  test("remoteFailed during a write keeps the extent dirty after the write completes (sharp edge 17)", () => {
    const am = map({ keepdirty: 1 });
    am.writeStart(0, 512);
    am.writeStart(EXT, 512); // evicts extent 0 from the LRU
    expect(am.remoteFailed(0, 512)).toBeNull(); // already dirty on disk
    expect(am.writeComplete(0, 512)).toBeNull();
    expect(am.extentState(0)).toEqual({ pending: 1, dirty: true, on_disk: true, in_sync_set: true, in_keepdirty: false });
  });

  test("without remoteFailed the same write leaves its extent clean (HAST behaviour)", () => {
    const am = map({ keepdirty: 1 });
    am.writeStart(0, 512);
    am.writeStart(EXT, 512);
    expect(written(am.writeComplete(0, 512))).toEqual([1]);
  });

  test("dirty and sync bytes count the short last extent by its real length", () => {
    const am = map();
    am.needSync(7 * EXT, 512);
    expect(am.dirtyBytes()).toBe(EXT - 512);
    expect(am.syncPendingBytes()).toBe(EXT - 512);
  });
});

describe("ActiveMap copy-in, merge, clear", () => {
  test("copyIn schedules every dirty extent, LRU ones included, and ignores bits past the end", () => {
    const before = map();
    before.writeStart(0, 512);
    before.writeComplete(0, 512); // clean in memory, dirty on disk via the LRU
    before.needSync(3 * EXT, 512);
    const image = before.diskImage();
    image[1] = 0xff; // bits 8..15: past the 8 extents
    const am = map();
    am.copyIn(image);
    expect(am.extentState(0)).toEqual({ pending: 1, dirty: true, on_disk: true, in_sync_set: true, in_keepdirty: false });
    expect(am.syncExtentCount()).toBe(2);
    expect(bits(am.diskImage())).toEqual([0, 3]);
    am.checkInvariants();
    expect(() => am.copyIn(image)).toThrow(AssertionError);
  });

  test("mergeRemote adds the peer's extents once, writes them and rewinds", () => {
    const am = map();
    am.needSync(2 * EXT, 512);
    expect(am.nextSyncChunk()!.extent).toBe(2);
    const peer = new Uint8Array(4096);
    peer[0] = 0b0010_0101; // extents 0, 2, 5
    expect(written(am.mergeRemote(peer))).toEqual([0, 2, 5]);
    expect(am.extentState(2).pending).toBe(1);
    expect(am.extentState(5).pending).toBe(1);
    expect(am.nextSyncChunk()!.extent).toBe(0); // rewound
    expect(am.mergeRemote(peer)).toBeNull();
  });

  test("clear zeroes the whole region and refuses while writes are in flight", () => {
    const am = map({ mapsize: 8192 });
    am.needSync(0, 512);
    const write = am.clear();
    expect(write.pieces).toEqual([{ offset: 0, bytes: new Uint8Array(8192) }]);
    expect(am.syncExtentCount()).toBe(0);
    am.writeStart(0, 512);
    expect(() => am.clear()).toThrow(AssertionError);
  });
});

describe("ActiveMap sync iteration", () => {
  test("walks each extent from its start in chunks; the last extent ends short", () => {
    const am = map();
    am.needSync(EXT, 1);
    am.needSync(7 * EXT, 1);
    const chunks: [number, number][] = [];
    const writes: number[][] = [];
    for (let chunk = am.nextSyncChunk(); chunk !== null; chunk = am.nextSyncChunk()) {
      chunks.push([chunk.offset, chunk.length]);
      const write = am.syncChunkDone(chunk, true);
      if (write !== null) writes.push(written(write));
    }
    expect(chunks).toEqual([
      [4096, 1024], [5120, 1024], [6144, 1024], [7168, 1024],
      [28672, 1024], [29696, 1024], [30720, 1024], [31744, 512],
    ]);
    expect(writes).toEqual([[7], []]); // each completed extent is written clean
    expect(am.syncPassDone()).toBe(true);
    expect(am.dirtyExtentCount()).toBe(0);
  });

  test("an extent that joins the sync set behind the cursor is picked up in the same pass", () => {
    const am = map();
    am.needSync(4 * EXT, 1);
    const first = am.nextSyncChunk()!;
    expect(first.extent).toBe(4);
    am.needSync(1 * EXT, 1);
    for (let i = 0; i < 3; i++) am.syncChunkDone(am.nextSyncChunk()!, true);
    am.syncChunkDone(first, true);
    expect(am.nextSyncChunk()!.extent).toBe(1);
  });

  test("an extent completes only when its last outstanding chunk is done (pipelined chunks)", () => {
    const am = map();
    am.needSync(0, 1);
    const chunks = [am.nextSyncChunk()!, am.nextSyncChunk()!, am.nextSyncChunk()!, am.nextSyncChunk()!];
    expect(am.nextSyncChunk()).toBeNull();
    expect(am.syncPassDone()).toBe(false);
    expect(am.syncChunkDone(chunks[3]!, true)).toBeNull();
    expect(am.syncChunkDone(chunks[0]!, true)).toBeNull();
    expect(am.syncChunkDone(chunks[2]!, true)).toBeNull();
    expect(written(am.syncChunkDone(chunks[1]!, true))).toEqual([]);
    expect(am.syncPassDone()).toBe(true);
  });

  test("a failed chunk keeps its extent dirty until a later pass copies it (sharp edge 18)", () => {
    const am = map();
    am.needSync(0, 1);
    am.needSync(EXT, 1);
    for (let chunk = am.nextSyncChunk(); chunk !== null; chunk = am.nextSyncChunk()) {
      am.syncChunkDone(chunk, chunk.offset !== 1024); // the second chunk of extent 0 fails
    }
    expect(am.syncPassDone()).toBe(true);
    expect(am.syncDeferredExtentCount()).toBe(1);
    expect(am.extentState(0)).toMatchObject({ dirty: true, in_sync_set: true });
    expect(am.extentState(1)).toMatchObject({ dirty: false, in_sync_set: false });
    am.syncRewind();
    expect(drainSync(am).length).toBe(1);
    expect(am.syncExtentCount()).toBe(0);
  });

  test("a write marked for resync while its extent is being copied makes the pass copy it again", () => {
    const am = map();
    am.needSync(0, 1);
    const c0 = am.nextSyncChunk()!;
    am.syncChunkDone(c0, true);
    am.writeStart(0, 512); // lands on the already-copied chunk
    am.remoteFailed(0, 512);
    am.writeComplete(0, 512);
    const rest = [am.nextSyncChunk()!, am.nextSyncChunk()!, am.nextSyncChunk()!];
    for (const chunk of rest) expect(am.syncChunkDone(chunk, true)).toBeNull();
    expect(am.extentState(0).in_sync_set).toBe(true);
    expect(am.nextSyncChunk()).toMatchObject({ offset: 0, extent: 0 });
  });

  test("syncRewind abandons chunks in flight; their completion is ignored", () => {
    const am = map();
    am.needSync(0, 1);
    const stale = am.nextSyncChunk()!;
    am.syncRewind();
    expect(am.syncChunkDone(stale, true)).toBeNull();
    expect(am.nextSyncChunk()).toMatchObject({ offset: 0, length: 1024 });
    expect(drainSync(am).length).toBe(0); // the first chunk of this pass is still out
    expect(am.syncPassDone()).toBe(false);
  });

  test("a sync chunk done twice is an assertion failure", () => {
    const am = map({ chunk_bytes: 4096 });
    am.needSync(0, 1);
    am.needSync(EXT, 1);
    const chunk = am.nextSyncChunk()!;
    am.syncChunkDone(chunk, true);
    expect(() => am.syncChunkDone(chunk, true)).toThrow(AssertionError);
  });
});

describe("ActiveMap map writes name only the changed 4 KiB blocks", () => {
  const big = (): ActiveMap =>
    new ActiveMap({ datasize: 100_000 * 512, extentsize: 512, keepdirty: 4, sectorsize: 512, chunk_bytes: 512 });

  test("region size follows the extent count", () => {
    expect(big().mapsize).toBe(16384);
  });

  test("a write across a block boundary is one merged piece", () => {
    const write = big().writeStart(32767 * 512, 1024)!;
    expect(write.pieces.map((p) => [p.offset, p.bytes.length])).toEqual([[0, 8192]]);
    expect(write.pieces[0]!.bytes[4095]).toBe(0x80);
    expect(write.pieces[0]!.bytes[4096]).toBe(0x01);
  });

  test("separate blocks are separate pieces in ascending order", () => {
    const am = big();
    const peer = new Uint8Array(16384);
    peer[0] = 1;
    peer[12288] = 1;
    const write = am.mergeRemote(peer)!;
    expect(write.pieces.map((p) => [p.offset, p.bytes.length])).toEqual([[0, 4096], [12288, 4096]]);
  });

  test("pieces are copies: later changes do not alter a write already handed out", () => {
    const am = big();
    const write = am.writeStart(0, 512)!;
    am.writeStart(512, 512);
    expect(write.pieces[0]!.bytes[0]).toBe(0x01);
  });
});
