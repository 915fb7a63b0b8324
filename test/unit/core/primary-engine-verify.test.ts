// Online verification (hastctl verify) in the PrimaryEngine: the walk over the device, the chunks
// kept apart from writes and sync chunks, a difference copied to the peer (or, when this node's copy
// is not confirmed yet, once a flush confirms it), and its end by completion, stop or link loss.
import { describe, expect, test } from "bun:test";
import type { PrimaryAction } from "../../../src/core/primary-engine.ts";
import { describeVerify, VerifyPass } from "../../../src/core/verify-pass.ts";
import { EngineDriver, op } from "./engine-driver.ts";

const SECTOR = 512;
const EXTENT = 4096;
const CHUNK = 1024;
const NEXTENTS = 4;
const DATASIZE = NEXTENTS * EXTENT;

function connected(o: { extents?: number[] } = {}): EngineDriver {
  const d = new EngineDriver({
    datasize: DATASIZE, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: CHUNK, mode: "fullsync",
    generation: { resuid: 7n, localcnt: 0n, remotecnt: 0n, flags: 0 },
  });
  const peer_map = new Uint8Array(d.map.mapsize);
  for (const e of o.extents ?? []) peer_map[e >> 3]! |= 1 << (e & 7);
  d.connect({ syncsrc: "primary", peer_localcnt: 0n, peer_remotecnt: 0n, peer_map, virgin: false, peer_cache_epoch: null });
  return d;
}

/** Completes the sync pass the connect started, and a flush that lets its holds go. */
function settle(d: EngineDriver): void {
  for (let round = 0; round < 100 && d.pending_sync.length + d.pending_local.length + d.pending_remote.length > 0; round++) {
    if (d.pending_sync[0]) d.completeSync(d.pending_sync[0], true);
    else if (d.completableLocal()[0]) d.completeLocal(d.completableLocal()[0]!, true);
    else d.completeRemote(d.completableRemote()[0]!, true);
  }
}

/** Completes every verification chunk as it comes, comparing the two disks (bounded). */
function finishVerify(d: EngineDriver): void {
  for (let round = 0; round < 1000 && d.engine.verifyProgress() !== null; round++) {
    if (d.pending_verify[0]) d.completeVerify(d.pending_verify[0]);
    else if (d.pending_sync[0]) d.completeSync(d.pending_sync[0], true);
    else if (d.completableLocal()[0]) d.completeLocal(d.completableLocal()[0]!, true);
    else if (d.completableRemote()[0]) d.completeRemote(d.completableRemote()[0]!, true);
    else throw new Error("verification stalled");
  }
}

/** In sync, then a write to sector 0 done on both nodes that no flush has covered yet. */
function writtenNotFlushed(): EngineDriver {
  const d = connected();
  settle(d);
  const w = d.submit("write", 0, SECTOR);
  d.completeLocal(op(d.pending_local, w.id), true);
  d.completeRemote(op(d.pending_remote, w.id), true);
  return d;
}

function logs(actions: PrimaryAction[]): string[] {
  return actions.flatMap((a) => (a.type === "log" ? [a.message] : []));
}

describe("VerifyPass", () => {
  test("walks the device in chunks that never cross an extent, the last extent short", () => {
    const pass = new VerifyPass(10 * 512, 2048, 1536);
    const chunks = [];
    for (let c = pass.next(); c !== null; c = pass.next()) chunks.push([c.offset, c.length, c.extent]);
    expect(chunks).toEqual([[0, 1536, 0], [1536, 512, 0], [2048, 1536, 1], [3584, 512, 1], [4096, 1024, 2]]);
    expect(pass.next()).toBeNull(); // every byte handed out
  });

  test("a walk that goes on from an earlier one starts at its offset and counts from there", () => {
    const pass = new VerifyPass(10 * 512, 2048, 1536, 3584);
    expect([pass.next(), pass.next(), pass.next()]).toEqual([{ offset: 3584, length: 512, extent: 1 }, { offset: 4096, length: 1024, extent: 2 }, null]);
    expect(pass.tally()).toMatchObject({ from_offset: 3584, total_bytes: 1536, done_bytes: 0 });
    expect(() => new VerifyPass(4096, 4096, 1024, 4096)).toThrow("verification from 4096 of 4096 bytes");
  });

  test("an offset the operator gave (--from) is rounded down to the start of the chunk holding it", () => {
    // Chunks lie from each extent's start: [0, 1536) [1536, 2048) [2048, 3584) [3584, 4096) [4096, 5120).
    for (const [from, start] of <[number, number][]>[[1, 0], [1535, 0], [1536, 1536], [2047, 1536], [2048, 2048], [3000, 2048], [3584, 3584], [5119, 4096]]) {
      const pass = new VerifyPass(10 * 512, 2048, 1536, from);
      expect([from, pass.tally().from_offset, pass.next()?.offset]).toEqual([from, start, start]);
      expect(pass.tally().total_bytes).toBe(10 * 512 - start);
    }
  });

  test("tallies each outcome, and a chunk ended twice is an invariant violation", () => {
    const pass = new VerifyPass(4096, 4096, 1024);
    const [a, b, c, e] = [pass.next()!, pass.next()!, pass.next()!, pass.next()!];
    pass.ended(a, "same");
    pass.ended(b, "differ");
    pass.ended(c, "skipped");
    pass.ended(e, "failed");
    expect(pass.tally()).toEqual({ from_offset: 0, done_bytes: 4096, total_bytes: 4096, same_bytes: 1024, differ_bytes: 1024, differ_chunks: 1, skipped_bytes: 1024, failed_bytes: 1024 });
    expect(() => pass.ended(e, "same")).toThrow("ended twice");
    expect(describeVerify({ ...pass.tally(), ended: "complete", resume_offset: 4096 }))
      .toBe("2048 bytes compared, 1 chunks (1024 bytes) differed, 1024 bytes not compared (still to be synchronized), 1024 bytes not compared (read errors)");
  });
});

describe("online verification", () => {
  test("is refused without a peer, while one runs, while a synchronization is pending, and while this node is synchronized from the secondary", () => {
    const alone = new EngineDriver({
      datasize: DATASIZE, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: CHUNK, mode: "fullsync",
    });
    expect(alone.engine.verifyRefusal()).toBe("the secondary is not connected");
    const d = connected({ extents: [1] });
    expect(d.engine.verifyRefusal()).toBe("a synchronization is running or pending; verify once the nodes are in sync");
    settle(d);
    expect(d.engine.verifyRefusal()).toBeNull();
    d.startVerify();
    expect(d.engine.verifyRefusal()).toBe("a verification is already running");
    const from_peer = new EngineDriver({ datasize: DATASIZE, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: CHUNK, mode: "fullsync" });
    const peer_map = new Uint8Array(from_peer.map.mapsize);
    peer_map[0] = 1; // extent 0 to copy from the secondary: the pass runs
    from_peer.connect({ syncsrc: "secondary", peer_localcnt: 1n, peer_remotecnt: 0n, peer_map, virgin: false, peer_cache_epoch: null });
    expect(from_peer.engine.verifyRefusal()).toBe("this node's copy is being synchronized from the secondary");
  });

  test("equal copies: every chunk compared, nothing copied, one report at the end", () => {
    const d = connected();
    settle(d);
    d.startVerify();
    expect(d.pending_verify.map((c) => c.offset)).toEqual([0, CHUNK]); // VERIFY_CHUNKS_MAX at once
    finishVerify(d);
    expect(d.verified).toEqual([{
      from_offset: 0, done_bytes: DATASIZE, total_bytes: DATASIZE, same_bytes: DATASIZE, differ_bytes: 0, differ_chunks: 0, skipped_bytes: 0, failed_bytes: 0,
      ended: "complete", resume_offset: DATASIZE,
    }]);
    expect(d.map.syncExtentCount()).toBe(0);
  });

  test("a chunk damaged on the peer is copied there from this node; extents still to be synchronized are skipped", () => {
    const d = connected();
    settle(d);
    d.remote[2 * (EXTENT / SECTOR) + 1] = d.newVersion(); // extent 2, chunk 0: bit rot on the peer
    d.startVerify();
    // Extent 3 joins the sync set (a write the peer failed); its sync chunks stay in flight.
    const w = d.submit("write", 3 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, w.id), true);
    d.completeRemote(op(d.pending_remote, w.id), false);
    expect(d.map.extentState(3).in_sync_set).toBe(true);
    const actions: PrimaryAction[] = [];
    for (let round = 0; round < 100 && d.engine.verifyProgress() !== null; round++) {
      const chunk = d.pending_verify[0];
      if (!chunk) break;
      actions.push(...d.completeVerify(chunk).actions);
    }
    // Extent 2's chunk 1 was in flight already; its chunks 2 and 3 are skipped once it is to be synchronized.
    expect(d.verified.at(-1)).toMatchObject({ ended: "complete", differ_chunks: 1, differ_bytes: CHUNK, skipped_bytes: EXTENT + 2 * CHUNK, same_bytes: 2 * EXTENT + CHUNK });
    expect(logs(actions)).toContain(`Verification: ${CHUNK} bytes at offset ${2 * EXTENT} differ from the peer's copy; copying this node's copy to the peer.`);
    expect(d.map.extentState(2).in_sync_set).toBe(true);
    settle(d);
    expect(d.remote).toEqual(d.local);
  });

  test("writes wait for a chunk being compared, and a chunk waits for writes in flight over it", () => {
    const d = connected();
    settle(d);
    const w = d.submit("write", CHUNK + 512, 512); // in flight over chunk 1
    d.startVerify();
    expect(d.pending_verify.map((c) => c.offset)).toEqual([0]); // chunk 1 waits for the write
    const held = d.submit("write", 256, 512); // over chunk 0: held until it is compared
    expect(held.actions).toEqual([]);
    d.checkNoOverlap();
    d.completeLocal(op(d.pending_local, w.id), true);
    d.completeRemote(op(d.pending_remote, w.id), true);
    expect(d.pending_verify.map((c) => c.offset)).toEqual([0, CHUNK]);
    d.completeVerify(d.pending_verify[0]!);
    expect(d.pending_local.map((o) => o.request.id)).toContain(held.id);
    d.checkNoOverlap();
    finishVerify(d);
    expect(d.verified.at(-1)).toMatchObject({ ended: "complete", differ_chunks: 0, same_bytes: DATASIZE });
  });

  test("a difference where this node's newest change is not flushed yet is decided after a flush, the chunk kept from writes meanwhile, then copied", () => {
    const d = writtenNotFlushed();
    d.remote[1] = d.newVersion(); // the peer's copy of chunk 0 damaged
    d.startVerify();
    const first = d.completeVerify(d.pending_verify.find((c) => c.offset === 0)!);
    expect(first.outcome).toBe("differ");
    expect(first.actions.some((a) => a.type === "flush")).toBe(true);
    expect(d.map.extentState(0).in_sync_set).toBe(false); // nothing copied yet
    // Until the flush ends, a write to the chunk waits: what was compared is what the flush confirms.
    const held = d.submit("write", SECTOR, SECTOR);
    expect(d.pending_local.some((o) => o.request.id === held.id)).toBe(false);
    // The flush succeeds on both nodes: chunk 0 is copied to the peer (not compared again), and the
    // write goes on.
    finishVerify(d);
    expect(d.verified.at(-1)).toMatchObject({ ended: "complete", differ_chunks: 1, differ_bytes: CHUNK });
    expect(d.pending_local.some((o) => o.request.id === held.id)).toBe(true);
    settle(d);
    expect(d.remote).toEqual(d.local);
  });

  test("a difference in an extent written again during every flush is still decided, once (review: it was compared again for ever)", () => {
    const d = writtenNotFlushed();
    d.remote[1] = d.newVersion(); // the peer's copy of chunk 0 damaged
    d.startVerify();
    let flushes = 0;
    for (let round = 0; round < 200 && d.engine.verifyProgress() !== null; round++) {
      const flush = d.pending_local.find((o) => o.kind === "flush");
      if (flush) {
        // Another chunk of the same extent (chunk 3) is written while the flush runs.
        flushes++;
        const w = d.submit("write", 3 * CHUNK, SECTOR);
        d.completeLocal(op(d.pending_local, w.id), true);
        d.completeRemote(op(d.pending_remote, w.id), true);
        d.completeLocal(flush, true);
        d.completeRemote(op(d.pending_remote, flush.request.id), true);
      } else if (d.pending_verify[0]) d.completeVerify(d.pending_verify[0]);
      else if (d.pending_sync[0]) d.completeSync(d.pending_sync[0], true);
      else if (d.completableLocal()[0]) d.completeLocal(d.completableLocal()[0]!, true);
      else if (d.completableRemote()[0]) d.completeRemote(d.completableRemote()[0]!, true);
      else throw new Error("verification stalled");
    }
    expect(d.verified.at(-1)).toMatchObject({ ended: "complete", differ_chunks: 1, done_bytes: DATASIZE });
    expect(flushes).toBe(1);
    settle(d);
    expect(d.remote).toEqual(d.local);
  });

  test("... and when that flush fails here, the extent is copied back from the peer, not compared again", () => {
    const d = writtenNotFlushed();
    const good = d.local[0]!;
    d.local[0] = 0; // what a write-back error dropped here (the failed flush will say so)
    d.startVerify();
    d.completeVerify(d.pending_verify.find((c) => c.offset === 0)!);
    const flush = d.pending_local.find((o) => o.kind === "flush")!;
    d.completeLocal(flush, false);
    d.completeRemote(op(d.pending_remote, flush.request.id), true);
    expect(d.engine.stale_extents).toBe(1);
    finishVerify(d);
    // Chunks 1 and 2 were compared before the flush failed; chunks 0 (again) and 3 are skipped.
    expect(d.verified.at(-1)).toMatchObject({ ended: "complete", differ_chunks: 0, skipped_bytes: 2 * CHUNK, same_bytes: DATASIZE - 2 * CHUNK });
    settle(d);
    expect(d.local[0]).toBe(good);
    expect(d.remote).toEqual(d.local);
  });

  test("paced (verify_rate): chunks start while the allowance is positive, each taking its length off; unpaced again, every chunk at once", () => {
    const d = connected();
    settle(d);
    d.allowVerify(0, CHUNK / 2); // from unpaced to paced: the allowance is the cap
    d.startVerify();
    expect(d.pending_verify.map((c) => c.offset)).toEqual([0]); // half a chunk allowed: one starts
    d.completeVerify(d.pending_verify[0]!);
    expect(d.pending_verify).toEqual([]); // allowance -CHUNK/2
    d.allowVerify(CHUNK / 2, CHUNK / 2);
    expect(d.pending_verify).toEqual([]); // 0: still none
    d.allowVerify(10 * CHUNK, 3 * CHUNK / 2); // capped: two chunks may start, and two do
    expect(d.pending_verify.map((c) => c.offset)).toEqual([CHUNK, 2 * CHUNK]);
    const ended = () => d.verified.length;
    for (let round = 0; round < 100 && ended() === 0; round++) {
      for (const c of [...d.pending_verify]) d.completeVerify(c);
      if (ended() === 0) d.allowVerify(CHUNK, CHUNK);
    }
    expect(d.verified.map((r) => [r.ended, r.same_bytes])).toEqual([["complete", DATASIZE]]);
    d.allowVerify(Infinity, Infinity); // unpaced again: every chunk at once
    d.startVerify();
    expect(d.pending_verify.map((c) => c.offset)).toEqual([0, CHUNK]);
    expect(() => d.allowVerify(-1, CHUNK)).toThrow("verification allowance of -1 bytes capped at 1024");
  });

  test("ended early, it says where to go on from (the first chunk not compared), and a walk from there covers the rest", () => {
    const d = connected();
    settle(d);
    d.startVerify();
    const at = (offset: number) => d.pending_verify.find((c) => c.offset === offset)!;
    d.completeVerify(at(0)); // in flight now: CHUNK, 2 * CHUNK
    expect(d.pending_verify.map((c) => c.offset)).toEqual([CHUNK, 2 * CHUNK]);
    d.completeVerify(at(2 * CHUNK));
    d.stopVerify();
    expect(d.verified[0]).toMatchObject({ ended: "stopped", from_offset: 0, done_bytes: 2 * CHUNK, resume_offset: CHUNK });
    d.pending_verify = [];
    expect(logs(d.startVerify(CHUNK))[0]).toBe(`Verification started: ${DATASIZE - CHUNK} bytes from offset ${CHUNK} to compare with the peer's copy.`);
    expect(d.pending_verify.map((c) => c.offset)).toEqual([CHUNK, 2 * CHUNK]);
    finishVerify(d);
    expect(d.verified[1]).toEqual({
      from_offset: CHUNK, done_bytes: DATASIZE - CHUNK, total_bytes: DATASIZE - CHUNK, same_bytes: DATASIZE - CHUNK, differ_bytes: 0, differ_chunks: 0,
      skipped_bytes: 0, failed_bytes: 0, ended: "complete", resume_offset: DATASIZE,
    });
  });

  test("--stop ends it and lets held writes go; the link's loss ends it too", () => {
    const d = connected();
    settle(d);
    d.startVerify();
    const held = d.submit("write", 0, 512);
    expect(held.actions).toEqual([]);
    const stop = d.stopVerify()!;
    expect(logs(stop)[0]).toMatch(/^Verification stopped by the operator after 0 of 16384 bytes/);
    // Where to go on from, also once the worker forgot it (--from).
    expect(logs(stop)[0]).toMatch(/; it goes on from offset 0 with hastctl verify --resume, or --from 0 once this worker restarted\.$/);
    expect(stop.map((a) => a.type)).toContain("local"); // the held write starts
    expect(d.stopVerify()).toBeNull();
    const chunk = d.pending_verify[0]!;
    expect(d.completeVerify(chunk).actions).toEqual([]); // a late report of a chunk it let go
    d.startVerify();
    d.disconnect();
    expect(d.verified.map((r) => r.ended)).toEqual(["stopped", "disconnected"]);
    expect(d.engine.verifyProgress()).toBeNull();
  });
});
