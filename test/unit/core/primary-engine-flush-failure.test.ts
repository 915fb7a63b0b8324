// A failed flush may have dropped what it covered (Linux marks the pages clean after a write-back
// error and reports the error once, so a later flush succeeds). The primary copies back from the
// peer what the peer also holds, copies again to the peer what the peer may have dropped, and tells
// the application at its next flush when a flush nobody saw failed here.
import { describe, expect, test } from "bun:test";
import { FLAG_COPY_INCOMPLETE } from "../../../src/core/metadata.ts";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { PrimaryEngine, type PrimaryAction, type PrimaryGeneration } from "../../../src/core/primary-engine.ts";
import { EngineDriver, drainSync, op } from "./engine-driver.ts";

const EXTENT = 4096;
const SECTOR = 512;

type Mode = "fullsync" | "memsync" | "async";

/** A primary over 8 extents, not connected yet. */
function primary(mode: Mode = "fullsync", o: { held_flush_sync_bytes_max?: number; localcnt?: bigint } = {}): EngineDriver {
  return new EngineDriver({
    datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: 1024, mode,
    generation: { resuid: 7n, localcnt: o.localcnt ?? 0n, remotecnt: 0n, flags: 0 }, held_flush_sync_bytes_max: o.held_flush_sync_bytes_max,
  });
}

function inSync(mode: Mode = "fullsync", held_flush_sync_bytes_max?: number, peer_cache_epoch: string | null = null): EngineDriver {
  const d = primary(mode, { held_flush_sync_bytes_max });
  d.connect({ syncsrc: "primary", peer_localcnt: 0n, peer_remotecnt: 0n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch });
  return d;
}

function write(d: EngineDriver, extent: number, local_ok = true, remote_ok = true): number {
  const { id } = d.submit("write", extent * EXTENT, SECTOR);
  d.completeLocal(op(d.pending_local, id), local_ok);
  d.completeRemote(op(d.pending_remote, id), remote_ok);
  return id;
}

function flush(d: EngineDriver, local_ok: boolean, remote_ok: boolean, internal = false): { id: number; actions: PrimaryAction[] } {
  const { id } = d.submit("flush", 0, 0, internal);
  const actions = d.completeLocal(op(d.pending_local, id), local_ok);
  actions.push(...d.completeRemote(op(d.pending_remote, id), remote_ok));
  return { id, actions };
}

function copiesFrom(actions: PrimaryAction[]): Map<number, string> {
  const from = new Map<number, string>();
  for (const a of actions) if (a.type === "sync-copy") from.set(a.chunk.extent, a.from);
  return from;
}


describe("a failed flush of this node's disk", () => {
  test("copies back from the peer what the peer also holds; reads go to the peer meanwhile", () => {
    const d = inSync();
    write(d, 3);
    const f = flush(d, false, true);
    expect(d.replies.get(f.id)?.ok).toBe(false);
    expect(copiesFrom(f.actions).get(3)).toBe("secondary");
    expect(d.submit("read", 3 * EXTENT, SECTOR).actions.map((a) => a.type)).toEqual(["remote"]);
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true);
    expect(d.submit("read", 3 * EXTENT, SECTOR).actions.map((a) => a.type)).toEqual(["local"]);
  });

  test("a change in flight counts as dropped: it fails unless the peer's leg succeeds", () => {
    const d = inSync();
    const { id } = d.submit("write", 5 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, id), true);
    flush(d, false, true);
    d.completeRemote(op(d.pending_remote, id), false);
    expect(d.replies.get(id)?.ok).toBe(false); // the local copy may have been dropped
  });

  test("a change in flight counts as dropped: answered from the peer's copy, which is copied back", () => {
    const d = inSync();
    const { id } = d.submit("write", 5 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, id), true); // written here, not yet on the peer
    flush(d, false, true);
    expect(d.replies.has(id)).toBe(false); // its local leg no longer counts: it waits for the peer's
    const actions = d.completeRemote(op(d.pending_remote, id), true);
    expect(d.replies.get(id)?.ok).toBe(true);
    expect(copiesFrom([...actions, ...d.pending_sync.map((s) => ({ type: "sync-copy" as const, chunk: s.chunk, from: s.from }))]).get(5)).toBe("secondary");
  });

  test("a change this node kept alone (its peer leg failed) makes this node's copy the one kept", () => {
    const d = inSync("async");
    const { id } = d.submit("write", 6 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, id), true);
    expect(d.replies.get(id)?.ok).toBe(true); // async: answered already
    flush(d, false, true); // extent 6 goes stale here...
    d.completeRemote(op(d.pending_remote, id), false); // ...but the peer never got the change
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true);
    expect(d.local[6 * EXTENT / SECTOR]).toBe(d.remote[6 * EXTENT / SECTOR]);
    expect(d.local[6 * EXTENT / SECTOR]).toBe(d.requests.get(id)!.version); // copied from here
  });

  test("a write finished while a flush was failing is reported by a flush started after the failure", () => {
    const d = primary("async", { localcnt: 1n }); // no peer: every change is this node's alone
    const failing = d.submit("flush", 0, 0);
    const running = d.submit("flush", 0, 0);
    const w = d.submit("write", 2 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, w.id), true);
    expect(d.replies.get(w.id)?.ok).toBe(true);
    d.completeLocal(op(d.pending_local, failing.id), false); // the write's pages may be gone too
    expect(d.replies.get(failing.id)?.ok).toBe(false);
    d.completeLocal(op(d.pending_local, running.id), true); // started before the write was answered
    expect(d.replies.get(running.id)?.ok).toBe(false);
    const after = d.submit("flush", 0, 0); // the first to cover the write
    d.completeLocal(op(d.pending_local, after.id), true);
    expect(d.replies.get(after.id)?.ok).toBe(false);
    const next = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, next.id), true);
    expect(d.replies.get(next.id)?.ok).toBe(true);
  });

  test("a map or metadata write's failed flush is reported by a flush that covers what it may have dropped (simulator seed 114)", () => {
    const d = primary("async", { localcnt: 1n }); // no peer: every change is this node's alone
    const early = d.submit("flush", 0, 0); // started before the write was answered
    const w = d.submit("write", 2 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, w.id), true);
    expect(d.replies.get(w.id)?.ok).toBe(true);
    d.engine.localFlushFailed(); // the worker's own write's fdatasync failed: the write's pages may be gone
    d.completeLocal(op(d.pending_local, early.id), true);
    expect(d.replies.get(early.id)?.ok).toBe(false); // the failure, reported once...
    const after = d.submit("flush", 0, 0); // ...but not for the write, which the early flush did not cover
    d.completeLocal(op(d.pending_local, after.id), true);
    expect(d.replies.get(after.id)?.ok).toBe(false);
    const next = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, next.id), true);
    expect(d.replies.get(next.id)?.ok).toBe(true);
  });

  test("a flush nobody saw fails here: the next application flush reports it, once", () => {
    const d = inSync();
    flush(d, false, true, true); // background flush; nothing was written, so nothing goes stale
    const reported = flush(d, true, true);
    expect(d.replies.get(reported.id)?.ok).toBe(false);
    expect(reported.actions).toContainEqual(expect.objectContaining({ type: "log", message: expect.stringContaining("an earlier flush failed") }));
    expect(d.replies.get(flush(d, true, true).id)?.ok).toBe(true);
  });

  test("a flush waits until the extents stale here are copied back and flushed (a crash would lose which copy is good)", () => {
    const d = inSync();
    write(d, 2);
    flush(d, false, true);
    const held = flush(d, true, true); // extent 2 still to copy back
    expect(d.replies.has(held.id)).toBe(false);
    expect(held.actions).toContainEqual(expect.objectContaining({ type: "log", message: expect.stringContaining(`Flush ${held.id} waits until the 1 extents`) }));
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true); // the pass ends with a flush of both nodes
    expect(d.replies.get(held.id)?.ok).toBe(true);
    expect(d.replies.get(flush(d, true, true).id)?.ok).toBe(true);
  });

  test("a held flush fails when the peer leaves before the copy back; disconnected, such a flush fails at once", () => {
    const d = inSync();
    write(d, 2);
    flush(d, false, true);
    const held = flush(d, true, true);
    const left = d.disconnect();
    expect(d.replies.get(held.id)?.ok).toBe(false);
    expect(left).toContainEqual(expect.objectContaining({ type: "log", message: expect.stringContaining("the peer left before this node's copy was copied back") }));
    const { id } = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, id), true);
    expect(d.replies.get(id)?.ok).toBe(false);
  });

  test("a flush fails at once rather than wait for a pass with more than the bound left to copy", () => {
    const d = inSync("fullsync", EXTENT - 1); // the one stale extent is already more than that
    write(d, 2);
    flush(d, false, true);
    const f = flush(d, true, true);
    expect(d.replies.get(f.id)?.ok).toBe(false);
    expect(f.actions).toContainEqual(expect.objectContaining({ type: "log", message: expect.stringContaining("still to be copied back from the peer") }));
  });

  test("writes to an extent stale here need the peer: refused while it is gone", () => {
    const d = inSync();
    write(d, 4);
    flush(d, false, true);
    d.disconnect();
    const w = d.submit("write", 4 * EXTENT, SECTOR);
    expect(w.actions.some((a) => a.type === "local")).toBe(false);
    expect(d.replies.get(w.id)?.ok).toBe(false);
    const other = d.submit("write", 1 * EXTENT, SECTOR); // an extent not stale: written here
    expect(other.actions.some((a) => a.type === "local")).toBe(true);
  });

  test("a read spanning an extent stale here and one the peer still lacks fails", () => {
    const d = inSync();
    write(d, 2);
    flush(d, false, true); // extent 2 stale here
    write(d, 3, true, false); // extent 3: only here, to be copied to the peer
    const r = d.submit("read", 3 * EXTENT - SECTOR, 2 * SECTOR);
    expect(r.actions.map((a) => a.type)).toEqual(["log", "reply"]);
    expect(d.replies.get(r.id)?.ok).toBe(false);
  });

  test("a read running here when the flush fails is read again from the peer (it may have read what the flush dropped)", () => {
    const d = inSync();
    write(d, 3);
    const r = d.submit("read", 3 * EXTENT, SECTOR);
    expect(r.actions.map((a) => a.type)).toEqual(["local"]);
    flush(d, false, true); // extent 3 goes stale here while the read runs
    const again = d.completeLocal(op(d.pending_local, r.id), true);
    expect(d.replies.has(r.id)).toBe(false);
    expect(again).toContainEqual(expect.objectContaining({ type: "remote", id: r.id, kind: "read" }));
    d.completeRemote(op(d.pending_remote, r.id), true);
    expect(d.replies.get(r.id)).toEqual(expect.objectContaining({ ok: true, source: "remote" }));
  });

  // The link drops between the failed flush and the copy back, with the peer's flush of the write
  // never answered: the peer may still hold the write only in its disk cache.
  function staleAcrossReconnect(epoch_then: string | null, epoch_now: string | null): { d: EngineDriver; reconnect: PrimaryAction[] } {
    const d = inSync("fullsync", undefined, epoch_then);
    const peer_map = new Uint8Array(d.map.mapsize);
    write(d, 3);
    const { id } = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, id), false); // extent 3 stale here; the peer's flush still out
    d.disconnect();
    // Stale while the peer is away: reads cannot be answered from this node's copy.
    const r = d.submit("read", 3 * EXTENT, SECTOR);
    expect(d.replies.get(r.id)?.ok).toBe(false);
    const reconnect = d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 0n, peer_map, virgin: false, peer_cache_epoch: epoch_now });
    return { d, reconnect };
  }

  test("after a reconnect, a stale extent the peer held unflushed is copied back from it if its disk cache lasted", () => {
    const { d, reconnect } = staleAcrossReconnect("boot-1", "boot-1");
    expect(copiesFrom(reconnect).get(3)).toBe("secondary");
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true);
    expect(d.local[3 * EXTENT / SECTOR]).toBe(d.remote[3 * EXTENT / SECTOR]);
  });

  test("after a reconnect, this node's copy of such an extent is kept if the peer rebooted or cannot tell", () => {
    for (const [then, now] of [["boot-1", "boot-2"], ["boot-1", null], [null, null]] as const) {
      const { reconnect } = staleAcrossReconnect(then, now);
      expect(copiesFrom(reconnect).get(3)).toBe("primary");
    }
  });

  test("after a reconnect, a stale extent the peer hands back is never copied back from it (its copy may be incomplete)", () => {
    const d = inSync("fullsync", undefined, "boot-1");
    write(d, 3);
    flush(d, false, true); // extent 3 stale here, the peer's copy confirmed durable
    d.disconnect();
    const handed_back = new Uint8Array(d.map.mapsize).fill(0xff); // e.g. a re-created secondary whose first reply was lost
    d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 0n, peer_map: handed_back, virgin: false, peer_cache_epoch: "boot-1" });
    const from = new Map<number, string>();
    while (d.pending_sync.length > 0) {
      const chunk = d.pending_sync[0]!;
      from.set(chunk.chunk.extent, chunk.from);
      d.completeSync(chunk, true);
    }
    expect(from.get(3)).toBe("primary");
  });

  test("a write this node missed is not copied back from a peer that hands its extent back: this copy is kept and the loss reported", () => {
    const d = inSync("fullsync", undefined, "boot-1");
    const missed = write(d, 3, false, true); // the local write failed, the peer made it: extent 3 stale here ("missed")
    expect(d.replies.get(missed)?.ok).toBe(true);
    d.disconnect();
    const handed_back = new Uint8Array(d.map.mapsize).fill(0xff); // e.g. a re-created secondary whose first reply was lost
    d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 0n, peer_map: handed_back, virgin: false, peer_cache_epoch: "boot-1" });
    expect(drainSync(d).get(3)).toBe("primary");
    expect(d.remote[3 * EXTENT / SECTOR]).toBe(d.local[3 * EXTENT / SECTOR]);
    expect(flush(d, true, true).actions).toContainEqual({ type: "reply", id: expect.any(Number), ok: false });
  });

  test("a write this node missed is not copied back from a peer whose flush failed: this copy is kept and the loss reported", () => {
    const d = inSync();
    write(d, 3, false, true); // extent 3 stale here ("missed")
    // The peer's flush fails: what it covered may be gone there, the missed write too. That flush
    // reports the loss of the missed write (it succeeded here, but this copy lacks the write).
    const f = flush(d, true, false);
    expect(d.replies.get(f.id)?.ok).toBe(false);
    expect(drainSync(d).get(3)).toBe("primary");
    expect(d.remote[3 * EXTENT / SECTOR]).toBe(d.local[3 * EXTENT / SECTOR]);
  });

  test("a memsync write the peer had received when the link went down counts as on the peer's cache", () => {
    const d = inSync("memsync", undefined, "boot-1");
    const { id } = d.submit("write", 3 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, id), true);
    d.receiveRemote(op(d.pending_remote, id));
    expect(d.replies.get(id)?.ok).toBe(true); // answered on "received"
    const f = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, f.id), false); // extent 3 stale here; its write still out on the peer
    d.disconnect(); // the peer carries out what it received
    const reconnect = d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 0n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: "boot-1" });
    expect(copiesFrom(reconnect).get(3)).toBe("secondary");
  });

  test("a write answered with an error is owed nothing: its extent stays stale and is copied back from the peer", () => {
    const d = inSync();
    write(d, 3);
    flush(d, false, true); // extent 3 stale here
    const { id } = d.submit("write", 3 * EXTENT, SECTOR); // needs the peer now; waits for the copy back
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, false); // which fails: still stale
    d.completeLocal(op(d.pending_local, id), true);
    d.completeRemote(op(d.pending_remote, id), false);
    expect(d.replies.get(id)?.ok).toBe(false);
    expect(d.submit("read", 3 * EXTENT, SECTOR).actions.map((a) => a.type)).toEqual(["remote"]); // still stale
  });
});

describe("a failed flush of the peer's disk", () => {
  test("copies again to the peer what it was sent since its last good flush", () => {
    const d = inSync();
    write(d, 1);
    const f = flush(d, true, false);
    expect(d.replies.get(f.id)?.ok).toBe(true); // durable here
    expect(d.map.extentState(1).in_sync_set).toBe(true);
    expect(copiesFrom(f.actions).get(1)).toBe("primary");
  });

  test("a chunk being copied from the peer is dropped when the peer's copy stops counting", () => {
    const d = inSync();
    write(d, 2);
    const { id } = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, id), false); // extent 2 is copied back from the peer...
    const chunk = d.pending_sync.find((s) => s.chunk.extent === 2)!;
    expect(chunk.from).toBe("secondary");
    expect(d.engine.syncChunkLive(chunk.chunk)).toBe(true);
    d.completeRemote(op(d.pending_remote, id), false); // ...whose flush failed too: it may lack the write
    expect(d.engine.syncChunkLive(chunk.chunk)).toBe(false); // this node's copy is kept
  });

  test("at the end of a pass, is acted on when the peer's answer comes, and not again when the pass ends", () => {
    const map = new ActiveMap({ datasize: 8 * EXTENT, extentsize: EXTENT, keepdirty: 2, sectorsize: SECTOR, chunk_bytes: 1024 });
    const engine = new PrimaryEngine(map, { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 }, "fullsync");
    const peer_map = new Uint8Array(map.mapsize);
    peer_map[0] = 1 << 1; // extent 1 to copy
    let actions = engine.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
    let flush: Extract<PrimaryAction, { type: "sync-flush" }> | undefined;
    for (let n = 0; n < 100 && flush === undefined; n++) {
      const copy = actions.find((a) => a.type === "sync-copy");
      if (copy === undefined || copy.type !== "sync-copy") break;
      actions = [...actions.filter((a) => a !== copy), ...engine.syncCopyDone(copy.chunk, true)];
      flush = actions.find((a): a is Extract<PrimaryAction, { type: "sync-flush" }> => a.type === "sync-flush");
    }
    expect(flush).toBeDefined();
    const early = engine.syncPeerFlushFailed(flush!.pass);
    expect(early.some((a) => a.type === "log" && a.message.startsWith("The peer's flush failed: 1 extents"))).toBe(true);
    expect(map.extentState(1).in_sync_set).toBe(true);
    const end = engine.syncFlushDone(flush!.pass, true, false);
    expect(end.some((a) => a.type === "log" && a.message.startsWith("The peer's flush failed"))).toBe(false);
    expect(end.some((a) => a.type === "in-sync")).toBe(false); // the pass is retried, not ended
  });

  test("is acted on when its answer comes, before this node's flush ends: a read the peer serves meanwhile is read again", () => {
    const d = inSync();
    while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true);
    write(d, 1); // on both disks, in both caches
    const f = d.submit("flush", 0, 0);
    const read = d.submit("read", EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, read.id), false); // EIO here: the peer's copy is read instead
    const from_peer = op(d.pending_remote, read.id);
    // The peer's flush fails (Linux drops the write's pages there), then it reads the old data.
    const failed = d.completeRemote(op(d.pending_remote, f.id), false);
    expect(failed.some((a) => a.type === "log" && a.message.startsWith("The peer's flush failed"))).toBe(true);
    expect(d.map.extentState(1).in_sync_set).toBe(true);
    const again = d.completeRemote(from_peer, true);
    expect(d.replies.has(read.id)).toBe(false);
    expect(again.filter((a) => a.type === "local" || a.type === "remote").map((a) => a.type)).toEqual(["local"]);
    // Read here again and failing again, it is not sent to the peer, whose copy may lack the write.
    d.completeLocal(op(d.pending_local, read.id), false);
    expect(d.replies.get(read.id)?.ok).toBe(false);
    // This node's flush ends: answered ok (durable here), the failure not marked twice.
    const done = d.completeLocal(op(d.pending_local, f.id), true);
    expect(done.some((a) => a.type === "log" && a.message.startsWith("The peer's flush failed"))).toBe(false);
    expect(d.replies.get(f.id)?.ok).toBe(true);
  });
});

describe("a loss found when a change fails on the peer", () => {
  test("is reported to a flush that covers the change, not only to the next flush to end (simulator seed 23198)", () => {
    const d = inSync("async");
    const early = d.submit("flush", 0, 0); // started before the write below finished: does not cover it
    const failing = d.submit("flush", 0, 0);
    const w = d.submit("write", 3 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, w.id), true);
    expect(d.replies.get(w.id)?.ok).toBe(true); // async: answered, its remote leg in flight
    d.completeLocal(op(d.pending_local, failing.id), false); // extent 3 stale here: the peer will have it
    d.completeRemote(op(d.pending_remote, failing.id), true);
    expect(d.replies.get(failing.id)?.ok).toBe(false);
    const covering = d.submit("flush", 0, 0); // after the write's answer: covers it
    d.disconnect(); // the write's remote leg fails: this node's copy is kept, and the write is lost
    d.completeLocal(op(d.pending_local, early.id), true);
    d.completeLocal(op(d.pending_local, covering.id), true);
    expect(d.replies.get(early.id)?.ok).toBe(false);
    expect(d.replies.get(covering.id)?.ok).toBe(false);
    // Reported: the next flush succeeds.
    const next = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, next.id), true);
    expect(d.replies.get(next.id)?.ok).toBe(true);
  });
});

describe("the stale extents a restart reads (Metadata.stale)", () => {
  const listed = (g: PrimaryGeneration | undefined) => g?.stale?.extents ?? [];
  const incomplete = (g: PrimaryGeneration | undefined) => g !== undefined && (g.flags & FLAG_COPY_INCOMPLETE) !== 0;
  const kinds = (actions: PrimaryAction[]) => actions.map((a) => a.type === "metadata" ? (a.generation.stale ? "listed" : "metadata") : a.type);
  const connection = (d: EngineDriver, peer_cache_epoch: string | null, peer_map = new Uint8Array(d.map.mapsize)) =>
    ({ syncsrc: "primary" as const, peer_localcnt: 0n, peer_remotecnt: 0n, peer_map, virgin: false, peer_cache_epoch });
  const EPOCH = "0123456789abcdef0123456789abcdef";

  test("a write answered from the peer's copy alone is answered after the metadata lists its extent, which follows the map write keeping it dirty", () => {
    const d = inSync("fullsync", undefined, EPOCH);
    write(d, 2); // extent 2 dirty and kept: the masked write below needs no map write to start
    const { id } = d.submit("write", 2 * EXTENT, SECTOR);
    d.completeLocal(op(d.pending_local, id), false);
    const actions = d.completeRemote(op(d.pending_remote, id), true);
    expect(d.replies.get(id)?.ok).toBe(true);
    const order = kinds(actions);
    expect(order.indexOf("listed")).toBeGreaterThan(order.indexOf("map"));
    expect(order.indexOf("listed")).toBeLessThan(order.indexOf("reply"));
    const first = d.metadata.find((g) => g.stale);
    expect(first?.stale).toEqual({ extents: [2], peer_epoch: EPOCH });
    expect(d.onDiskExtents()).toContain(2);
    // Copied back: the metadata lists nothing any more.
    expect(drainSync(d).get(2)).toBe("secondary");
    expect(listed(d.metadata.at(-1))).toEqual([]);
  });

  test("a failed flush lists the extents it left stale; they stay listed while the peer is gone, and each leaves the list once copied back", () => {
    const d = inSync();
    write(d, 3);
    write(d, 6);
    flush(d, false, true);
    d.disconnect();
    expect(listed(d.metadata.at(-1))).toEqual([3, 6]);
    d.connect(connection(d, null));
    expect(listed(d.metadata.at(-1))).toEqual([3, 6]);
    const chunk = d.pending_sync.find((s) => s.chunk.extent === 3)!;
    for (let n = 0; n < 100 && d.map.extentState(3).in_sync_set; n++) d.completeSync(d.pending_sync.find((s) => s.chunk.extent === 3) ?? chunk, true);
    expect(listed(d.metadata.at(-1))).toEqual([6]);
    drainSync(d);
    expect(listed(d.metadata.at(-1))).toEqual([]);
    expect(d.metadata.some(incomplete)).toBe(false);
  });

  test("an extent with a change still on its way to the peer is listed only once the peer answered it; kept here if it failed there", () => {
    for (const remote_ok of [true, false]) {
      const d = inSync("async");
      const { id } = d.submit("write", 3 * EXTENT, SECTOR);
      d.completeLocal(op(d.pending_local, id), true); // async: answered; the peer's leg is in flight
      expect(d.replies.get(id)?.ok).toBe(true);
      flush(d, false, true); // extent 3 may have lost it here: stale, while the peer may have it
      expect(d.metadata.some((g) => g.stale)).toBe(false);
      d.completeRemote(op(d.pending_remote, id), remote_ok);
      // Answered there: a restart copies it back. Failed there: this copy is the one kept.
      expect(listed(d.metadata.at(-1))).toEqual(remote_ok ? [3] : []);
    }
  });

  test("a failed flush with nothing the peer holds lists nothing (what it dropped is copied from here)", () => {
    const d = primary();
    d.submit("write", 4 * EXTENT, SECTOR); // no peer: the change is this node's alone
    d.completeLocal(d.pending_local[0]!, true);
    const { id } = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, id), false);
    expect(d.replies.get(id)?.ok).toBe(false);
    expect(d.metadata.some((g) => g.stale !== undefined || incomplete(g))).toBe(false);
  });

  test("more stale extents than a slot lists mark the copy incomplete instead (a restart is refused); fewer again, they are listed", () => {
    const d = new EngineDriver({
      datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: 1024, mode: "fullsync",
      generation: { resuid: 7n, localcnt: 0n, remotecnt: 0n, flags: 0 }, stale_listed_max: 2,
    });
    d.connect(connection(d, null));
    for (const e of [1, 4, 5]) write(d, e);
    flush(d, false, true);
    expect(incomplete(d.metadata.at(-1))).toBe(true);
    expect(d.metadata.at(-1)?.stale).toBeUndefined();
    const first = d.pending_sync[0]!;
    for (let n = 0; n < 100 && d.map.extentState(first.chunk.extent).in_sync_set; n++) {
      d.completeSync(d.pending_sync.find((s) => s.chunk.extent === first.chunk.extent)!, true);
    }
    expect(incomplete(d.metadata.at(-1))).toBe(false);
    expect(listed(d.metadata.at(-1))).toHaveLength(2);
  });

  test("a restarted primary copies its listed extents back from a peer whose cache lasted; reads go to the peer meanwhile", () => {
    const restarted = new EngineDriver({
      datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: 1024, mode: "fullsync",
      generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 }, stale: { extents: [2, 5], peer_epoch: EPOCH },
    });
    const read = restarted.submit("read", 2 * EXTENT, SECTOR);
    expect(restarted.replies.get(read.id)?.ok).toBe(false); // no peer: it fails rather than return stale data
    restarted.connect(connection(restarted, EPOCH));
    const from = drainSync(restarted);
    expect([from.get(2), from.get(5)]).toEqual(["secondary", "secondary"]);
    expect(listed(restarted.metadata.at(-1))).toEqual([]);
  });

  test("a restarted primary keeps its own copy of listed extents when the peer rebooted since, and says so", () => {
    const restarted = new EngineDriver({
      datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: 1024, mode: "fullsync",
      generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 }, stale: { extents: [2], peer_epoch: EPOCH },
    });
    restarted.connect(connection(restarted, "ffffffffffffffffffffffffffffffff"));
    expect(listed(restarted.metadata.at(-1))).toEqual([]);
    expect(drainSync(restarted).get(2)).toBe("primary");
    const { id } = restarted.submit("flush", 0, 0);
    restarted.completeLocal(op(restarted.pending_local, id), true);
    restarted.completeRemote(op(restarted.pending_remote, id), true);
    expect(restarted.replies.get(id)?.ok).toBe(false); // what the dropped extent lost is reported
  });
});
