// SecondaryWorker over a disk that fails as Linux does on a write-back error: the failed pages are
// dropped (stable storage keeps the old data) and the next fsync on the file reports EIO, once.
// When the fsync that takes the error is a map or metadata write's, not a FLUSH's, the next FLUSH
// must fail in its place: else it succeeds, releases the marks of what was dropped, and nothing
// covers the loss (found by a review of session 27's map-write changes). And marks whose map write
// failed reach the disk at the end of the link, written with the whole map.
import { describe, expect, test } from "bun:test";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { ACTIVEMAP_OFFSET, computeLayout } from "../../../src/core/layout.ts";
import { decideConnect } from "../../../src/core/connect-decision.ts";
import { copyIncomplete, FLAG_COPY_INCOMPLETE, FLAG_RESUID_UNCONFIRMED, FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../../../src/core/metadata.ts";
import { SecondaryEngine } from "../../../src/core/secondary-engine.ts";
import { SecondaryWorker } from "../../../src/daemon/secondary.ts";
import { answerHandshake } from "../../../src/daemon/secondary-handshake.ts";
import { BufferPool } from "../../../src/gate/buffer-pool.ts";
import { MetadataStore } from "../../../src/io/metadata-store.ts";
import { PROTOCOL_VERSION_MAX, VERSION_CACHE_EPOCH } from "../../../src/wire/peer/index.ts";
import { PAGE, WritebackDisk } from "./writeback-disk.ts";

const PAYLOAD = 64 * 1024;

/** A component over a WritebackDisk, its metadata written and flushed. */
function component(meta_extra: Partial<Metadata> = {}) {
  const disk = new WritebackDisk();
  const layout = computeLayout({ mediasize: 1024 * 1024 * 1024, sectorsize: 512, extentsize: 0, keepdirty: 0 });
  const meta: Metadata = {
    resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
    mapsize: layout.mapsize, sectorsize: 512, resuid: 1n, localcnt: 1n, remotecnt: 1n, prevrole: "secondary",
    flags: 0, ...meta_extra,
  };
  disk.map_end = layout.localoff;
  const store = new MetadataStore(disk as never);
  store.initialize(meta);
  return { disk, meta, store };
}

function secondary(complete = true) {
  const { disk, meta, store } = component({ flags: complete ? 0 : FLAG_COPY_INCOMPLETE });
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
  map.copyIn(store.readMap(meta.mapsize));
  const engine = new SecondaryEngine(map, { datasize: meta.datasize, sector_bytes: 512, max_request_bytes: 4 * 1024 * 1024 }, complete);
  const replies = new Map<number, string>();
  const link = {
    send: (f: { kind: string; seq: number; error: string }) => void (f.kind === "reply" && replies.set(f.seq, f.error)),
    flush: () => {},
    close: () => {},
    landingTo: () => null,
  };
  const log = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
  const Worker = SecondaryWorker as unknown as new (...args: unknown[]) => {
    onFrame(frame: object): void;
    carryOut(): void;
    lost(reason: string): void;
    done: Promise<number>;
  };
  const worker = new Worker(disk, store, meta, engine, link, new BufferPool(PAGE, 1 << 24), log,
    { emit: () => {}, report: () => {} }, 4);
  const request = async (frame: object) => {
    worker.onFrame(frame);
    worker.carryOut();
    for (let i = 0; i < 10; i++) await Promise.resolve();
    await Bun.sleep(1);
  };
  const syncWrite = (seq: number, extent: number, fill: number) =>
    request({ kind: "write", seq, offset: extent * meta.extentsize, length: PAYLOAD, memsync: false, sync: true, data: new Uint8Array(PAYLOAD).fill(fill) });
  const mapBit = (e: number) => {
    const b = new Uint8Array(1);
    disk.read(b, ACTIVEMAP_OFFSET + (e >> 3), true);
    return (b[0]! >> (e & 7)) & 1;
  };
  const durable = (extent: number, fill: number) => {
    const b = new Uint8Array(PAYLOAD);
    disk.read(b, meta.localoff + extent * meta.extentsize, true);
    return b.every((x) => x === fill);
  };
  return { disk, meta, store, worker, replies, request, syncWrite, mapBit, durable };
}

describe("SecondaryWorker: map writes and flushes that fail", () => {
  test("taken by a map write's flush: the next FLUSH fails and the lost write's extent stays marked", async () => {
    const s = secondary();
    await s.syncWrite(1, 0, 0xaa);
    s.disk.failWriteback(s.meta.localoff); // write 1's pages dropped
    await s.syncWrite(2, 100, 0xbb); // its mark's write takes the error
    await s.request({ kind: "flush", seq: 3 });
    expect(s.replies.get(1)).toBe("OK");
    expect(s.durable(0, 0xaa)).toBe(false);
    expect(s.replies.get(3)).not.toBe("OK"); // the primary copies again what the flush covered
    expect(s.mapBit(0)).toBe(1); // and so does the next handshake
    expect(s.meta.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
  });

  test("taken by the whole-map write after a failed map pwrite: the same", async () => {
    const s = secondary();
    await s.syncWrite(1, 0, 0xaa);
    s.disk.failWriteback(s.meta.localoff);
    s.disk.map_pwrite_failures = 1; // write 2's mark fails; the whole map, written next, takes the error
    await s.syncWrite(2, 100, 0xbb);
    await s.request({ kind: "flush", seq: 3 });
    expect(s.durable(0, 0xaa)).toBe(false);
    expect(s.replies.get(3)).not.toBe("OK");
    expect(s.mapBit(0)).toBe(1);
  });

  test("a failed memsync write's mark whose map write failed reaches the disk when the link ends", async () => {
    const s = secondary();
    await s.request({ kind: "read", seq: 1, offset: 0, length: 512, sync: false }); // the map's clear
    s.disk.map_pwrite_failures = 2; // the memsync write's pwrite, then its mark's
    s.disk.map_end = Infinity;
    await s.request({ kind: "write", seq: 2, offset: 5 * s.meta.extentsize, length: PAYLOAD, memsync: true, sync: false, data: new Uint8Array(PAYLOAD) });
    s.disk.map_end = s.meta.localoff;
    expect(s.replies.get(2)).toBe("EIO");
    s.worker.lost("test");
    await s.worker.done;
    expect(s.mapBit(5)).toBe(1); // handed back at the next handshake: the primary copies it here
  });

  test("taken by the metadata write of IN_SYNC's copy complete: the copy ends marked incomplete on disk", async () => {
    const s = secondary(false);
    await s.syncWrite(1, 0, 0xaa);
    await s.request({ kind: "flush", seq: 2 });
    await s.request({ kind: "write", seq: 3, offset: 7 * s.meta.extentsize, length: PAYLOAD, memsync: false, sync: false, data: new Uint8Array(PAYLOAD).fill(0xcc) });
    s.disk.failWriteback(s.meta.localoff); // write 3's pages dropped
    await s.request({ kind: "in-sync", replies_failed: 0 }); // "complete" written; its fdatasync takes the error
    await s.request({ kind: "flush", seq: 4 }); // flushes that "complete" to disk, and fails
    expect(s.replies.get(4)).toBe("EIO");
    s.worker.lost("test");
    await s.worker.done;
    expect(s.store.read()!.meta.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE); // not promotable
  });

  test("a failed FLUSH whose 'incomplete' metadata write failed too: the end marks the copy incomplete and is not orderly", async () => {
    const s = secondary();
    await s.request({ kind: "write", seq: 1, offset: 0, length: PAYLOAD, memsync: false, sync: false, data: new Uint8Array(PAYLOAD).fill(0xaa) });
    s.disk.failWriteback(s.meta.localoff); // write 1's pages dropped
    s.disk.meta_pwrite_failures = 1; // the "incomplete" metadata write fails in its pwrite
    await s.request({ kind: "flush", seq: 2 });
    expect(s.replies.get(2)).toBe("EIO");
    expect(s.store.read()!.meta.flags & FLAG_COPY_INCOMPLETE).toBe(0);
    s.worker.lost("test");
    // Not EX_OK: the main process keeps the errors its descriptor meets (HeldComponent.absorb).
    expect(await s.worker.done).not.toBe(0);
    expect(s.store.read()!.meta.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
  });

  test("without such an error the FLUSH succeeds and releases the marks", async () => {
    const s = secondary();
    await s.syncWrite(1, 0, 0xaa);
    await s.syncWrite(2, 100, 0xbb);
    await s.request({ kind: "flush", seq: 3 });
    expect([s.replies.get(1), s.replies.get(2), s.replies.get(3)]).toEqual(["OK", "OK", "OK"]);
    expect(s.durable(0, 0xaa) && s.durable(100, 0xbb)).toBe(true);
    expect([s.mapBit(0), s.mapBit(100)]).toEqual([0, 0]);
  });
});

describe("the handshake", () => {
  test("after the main process's flush failed: no epoch, and a copy from the primary marks this one incomplete", () => {
    for (const flush_error of [null, "fdatasync: Input/output error (EIO)"]) {
      const { meta, store } = component({ localcnt: 1n, remotecnt: 1n });
      const decision = decideConnect(meta, { ...meta, localcnt: 2n, virgin: false, initial_full_sync: false }, copyIncomplete(meta));
      expect(decision).toMatchObject({ kind: "accept", syncsrc: "primary", map: "own" });
      const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
      const epoch = flush_error === null ? new Uint8Array(16).fill(9) : null;
      // Version 2 (cache epochs, no IN_SYNC): only a failed flush marks the copy incomplete here.
      const answer = answerHandshake(store, { ...meta }, map, decision as never, meta.resuid, VERSION_CACHE_EPOCH, { epoch, flush_error });
      expect(answer.cache_epoch).toEqual(epoch);
      expect(store.read()!.meta.flags & FLAG_COPY_INCOMPLETE).toBe(flush_error === null ? 0 : FLAG_COPY_INCOMPLETE);
    }
  });

  test("a primary's stale extents reach the on-disk map before the list leaves the metadata", () => {
    const { disk, meta, store } = component({ stale: { extents: [3], peer_epoch: null } });
    const decision = decideConnect(meta, { ...meta, virgin: false, initial_full_sync: false }, copyIncomplete(meta));
    expect(decision).toMatchObject({ kind: "accept", row: 4, map: "own" });
    const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
    const answer = answerHandshake(store, { ...meta }, map, decision as never, meta.resuid, PROTOCOL_VERSION_MAX, null);
    expect(answer.cache_epoch).toBeNull();
    const m = store.read()!.meta;
    expect(m.stale).toBeUndefined();
    expect(m.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
    const bit = new Uint8Array(1);
    disk.read(bit, ACTIVEMAP_OFFSET, true);
    expect(bit[0]! & (1 << 3)).toBe(1 << 3);
  });

  test("a secondary of its own pair forgets the flags of a primary whose first answer was lost (review: a re-created peer got no copy)", () => {
    const { meta, store } = component({ resuid: 55n, flags: FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT });
    const decision = decideConnect(meta, { ...meta, virgin: false, initial_full_sync: false }, copyIncomplete(meta));
    expect(decision).toMatchObject({ kind: "accept", adopt_resuid: false });
    const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
    answerHandshake(store, { ...meta }, map, decision as never, meta.resuid, PROTOCOL_VERSION_MAX, null);
    // Primary again one day, it claims no virgin pair (connector: virgin needs an unconfirmed resuid).
    expect(store.read()!.meta.flags & (FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT)).toBe(0);
  });

  test("a new secondary's adopted resuid reaches the disk with its copy marked incomplete, in one write", () => {
    const { disk, meta, store } = component({ resuid: 0n, localcnt: 0n, remotecnt: 0n, prevrole: "init" });
    const primary_resuid = 77n;
    const decision = decideConnect(meta, { resuid: primary_resuid, localcnt: 1n, remotecnt: 0n, virgin: false, initial_full_sync: false }, false);
    expect(decision).toMatchObject({ kind: "accept", row: 1, map: "full", adopt_resuid: true });
    // The full map's write, the resuid's, then "incomplete" if it took a write of its own: that one fails.
    disk.map_pwrite_failures = 0;
    let control_writes = 0;
    const write = disk.write.bind(disk);
    disk.write = (buf: Uint8Array, offset: number) => {
      if (offset < disk.map_end && ++control_writes === 3) disk.map_pwrite_failures = 1;
      write(buf, offset);
    };
    const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
    try {
      answerHandshake(store, { ...meta }, map, decision as never, primary_resuid, PROTOCOL_VERSION_MAX, null);
    } catch {
      // The connection ends; what counts is what the disk holds.
    }
    disk.flush();
    const on_disk = store.read()!.meta;
    expect(on_disk.resuid).toBe(primary_resuid);
    expect(on_disk.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE); // never promotable before a sync
  });
});

