// While the primary is synchronized from the secondary (decision row 3), its own copy is not
// authoritative: a change must reach the peer or fail, never be answered ok and then be
// overwritten by the copy from the peer.
import { describe, expect, test } from "bun:test";
import { RequestLegs } from "../../../src/core/request-legs.ts";
import { EngineDriver, drainSync, flushWith, op, writeBoth } from "./engine-driver.ts";

const EXTENT = 4096;

function driver(): EngineDriver {
  return new EngineDriver({
    datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: 512, keepdirty: 2, chunk_bytes: 1024, mode: "memsync",
    generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 },
  });
}

function fromPeer(d: EngineDriver, extents: number[]): void {
  const peer_map = new Uint8Array(d.map.mapsize);
  for (const e of extents) peer_map[e >> 3]! |= 1 << (e & 7);
  d.connect({ syncsrc: "secondary", peer_localcnt: 2n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
}

/** Connected, synchronized from here, the first pass done. */
function inSync(mode: "fullsync" | "memsync"): EngineDriver {
  const d = new EngineDriver({
    datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: 512, keepdirty: 2, chunk_bytes: 1024, mode,
    generation: { resuid: 7n, localcnt: 0n, remotecnt: 0n, flags: 0 },
  });
  d.connect({ syncsrc: "primary", peer_localcnt: 0n, peer_remotecnt: 0n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: null });
  while (d.pending_sync.length > 0) d.completeSync(d.pending_sync[0]!, true);
  return d;
}

describe("RequestLegs with remote_required", () => {
  test("answers only when the peer's write is done, ok only if it succeeded", () => {
    const ok = new RequestLegs("memsync", true, true);
    expect(ok.localDone(true)).toEqual({});
    expect(ok.remoteDone(true)).toEqual({ ack: { ok: true, error_from: null }, final: { local_ok: true, remote_ok: true } });
    const failed = new RequestLegs("async", true, true);
    expect(failed.localDone(true)).toEqual({});
    expect(failed.remoteDone(false).ack).toEqual({ ok: false, error_from: "local" });
  });
});

describe("writes while syncing from the secondary", () => {
  test("a write whose remote leg fails is answered with an error and its extent is copied from the peer", () => {
    const d = driver();
    fromPeer(d, [0]);
    const { id } = d.submit("write", 5 * EXTENT, 512);
    const local = d.pending_local.find((o) => o.request.id === id)!;
    const remote = d.pending_remote.find((o) => o.request.id === id)!;
    d.completeLocal(local, true);
    expect(d.replies.has(id)).toBe(false); // memsync would have answered on "received"; here it waits
    d.completeRemote(remote, false);
    expect(d.replies.get(id)?.ok).toBe(false);
    expect(d.map.extentState(5).in_sync_set).toBe(true);
  });

  test("a write while the secondary is gone is refused without touching either disk", () => {
    const d = driver();
    fromPeer(d, [0]);
    d.disconnect();
    const before = d.metadata.length;
    const { id, actions } = d.submit("write", 3 * EXTENT, 512);
    expect(actions.some((a) => a.type === "local" || a.type === "map")).toBe(false);
    expect(d.replies.get(id)?.ok).toBe(false);
    expect(d.metadata.length).toBe(before); // no localcnt bump: no split-brain made here
  });
});

describe("a local write error masked by the peer", () => {
  test("reads of the extent go to the peer, and the sync copies it back from the peer", () => {
    const d = inSync("fullsync");
    const { id } = d.submit("write", 2 * EXTENT, 512);
    d.completeLocal(d.pending_local.find((o) => o.request.id === id)!, false);
    const actions = d.completeRemote(d.pending_remote.find((o) => o.request.id === id)!, true);
    expect(d.replies.get(id)?.ok).toBe(true); // spec 6.8: the peer's copy answers it
    const copies = actions.filter((a) => a.type === "sync-copy");
    expect(copies.length).toBeGreaterThan(0);
    expect(copies.every((a) => a.type === "sync-copy" && a.from === "secondary")).toBe(true);
    const read = d.submit("read", 2 * EXTENT, 512);
    expect(read.actions.map((a) => a.type)).toEqual(["remote"]);
  });

});

describe("the peer's copy may lack changes made here while syncing from it", () => {
  const SECTOR_5 = (5 * EXTENT) / 512;

  test("a failed flush there: an extent whole here is copied to the peer, and read here meanwhile", () => {
    const d = driver();
    fromPeer(d, [0]);
    const version = writeBoth(d, 5 * EXTENT);
    const f = flushWith(d, true, false);
    d.remote[SECTOR_5] = 0; // what the failed flush dropped there
    expect(d.replies.get(f)?.ok).toBe(true); // this node's copy holds the write, flushed
    expect(d.submit("read", 5 * EXTENT, 512).actions.map((a) => a.type)).toEqual(["local"]);
    const from = drainSync(d);
    expect(from.get(5)).toBe("primary");
    expect(from.get(0)).toBe("secondary");
    expect(d.local[SECTOR_5]).toBe(version);
    expect(d.remote[SECTOR_5]).toBe(version);
    expect(d.in_syncs).toBe(1);
  });

  test("a failed flush there: an extent still to be copied from the peer keeps the peer's copy, and the flush fails", () => {
    const d = driver();
    fromPeer(d, [0, 1]); // extent 0's chunks in flight, extent 1's not started
    writeBoth(d, EXTENT);
    const f = flushWith(d, true, false);
    expect(d.replies.get(f)?.ok).toBe(false); // the peer held the only current copy, and may have lost the write
    expect(drainSync(d).get(1)).toBe("secondary");
    expect(d.replies.get(flushWith(d, true, true))?.ok).toBe(true); // reported once
  });

  test("a change that failed there joins the sync copied from here, so a failed flush there reported after it loses nothing", () => {
    const d = driver();
    fromPeer(d, [0]);
    const version = writeBoth(d, 5 * EXTENT);
    const f = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, f.id), true);
    const w = d.submit("write", 5 * EXTENT + 512, 512);
    d.completeLocal(op(d.pending_local, w.id), true);
    const remote = op(d.pending_remote, w.id);
    if (remote.awaiting_received) d.receiveRemote(remote);
    d.completeRemote(remote, false); // its failure answered before the flush's (a quick EIO)
    expect(d.replies.get(w.id)?.ok).toBe(false);
    d.completeRemote(op(d.pending_remote, f.id), false);
    d.remote[SECTOR_5] = 0; // what the failed flush dropped there
    expect(d.replies.get(f.id)?.ok).toBe(true);
    expect(drainSync(d).get(5)).toBe("primary");
    expect(d.remote[SECTOR_5]).toBe(version);
    expect(d.local[SECTOR_5]).toBe(version);
  });

  test("the peer's power loss while it held changes unflushed: copied to it again from here", () => {
    const d = driver();
    fromPeer(d, [0]);
    const version = writeBoth(d, 5 * EXTENT);
    d.disconnect();
    d.remote[SECTOR_5] = 0; // the peer's cache lost with its power
    fromPeer(d, [0]);
    expect(drainSync(d).get(5)).toBe("primary");
    expect(d.local[SECTOR_5]).toBe(version);
    expect(d.remote[SECTOR_5]).toBe(version);
  });

  test("a reconnect the secondary offers to take this node's copy on (its copy marked incomplete since) goes on syncing from it", () => {
    const d = driver();
    const rogue = d.newVersion();
    d.remote.fill(rogue, 0, EXTENT / 512); // the change only the secondary has
    fromPeer(d, [0, 1]); // extent 0's chunks in flight
    const version = writeBoth(d, 5 * EXTENT);
    flushWith(d, true, false); // the secondary's flush failed: its copy is marked incomplete there
    d.remote[SECTOR_5] = 0;
    d.disconnect(); // extent 0's chunks lost with the link
    const peer_map = new Uint8Array(d.map.mapsize);
    d.connect({ syncsrc: "primary", peer_localcnt: 2n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
    const from = drainSync(d);
    expect(from.get(0)).toBe("secondary");
    expect(from.get(5)).toBe("primary");
    expect(d.local[0]).toBe(rogue);
    expect(d.local[SECTOR_5]).toBe(version);
    expect(d.remote[SECTOR_5]).toBe(version);
  });

  test("a change the peer made before the link went, answered after, bumps no counter (the next handshake is no split-brain)", () => {
    const d = driver();
    fromPeer(d, [0]);
    const { id } = d.submit("write", 5 * EXTENT, 512);
    const remote = op(d.pending_remote, id);
    if (remote.awaiting_received) d.receiveRemote(remote);
    d.completeRemote(remote, true);
    d.disconnect();
    d.completeLocal(op(d.pending_local, id), true);
    expect(d.replies.get(id)?.ok).toBe(true);
    expect(d.engine.generation.localcnt).toBe(1n); // as the handshake sent it: row 3 again, not row 6
  });

  test("a change the peer made before the link went, whose leg here ended after, is copied to the peer again at the next connect", () => {
    for (const row3 of [false, true]) {
      const d = row3 ? driver() : inSync("fullsync");
      if (row3) fromPeer(d, [0]);
      const { id } = d.submit("write", 5 * EXTENT, 512);
      const version = d.requests.get(id)!.version;
      const remote = op(d.pending_remote, id);
      if (remote.awaiting_received) d.receiveRemote(remote);
      d.completeRemote(remote, true);
      d.disconnect();
      d.completeLocal(op(d.pending_local, id), true);
      d.remote[SECTOR_5] = 0; // the peer's cache lost meanwhile (its power, or a failed flush)
      if (row3) fromPeer(d, [0]);
      else d.connect({ syncsrc: "primary", peer_localcnt: 0n, peer_remotecnt: 0n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: null });
      expect(drainSync(d).get(5)).toBe("primary");
      expect(d.remote[SECTOR_5]).toBe(version);
    }
  });

  test("a peer that changed data since: its copy is taken, and the next flush reports the loss", () => {
    const d = driver();
    fromPeer(d, [0]);
    writeBoth(d, 5 * EXTENT);
    d.disconnect();
    const peer_map = new Uint8Array(d.map.mapsize);
    peer_map[0] = 1;
    d.connect({ syncsrc: "secondary", peer_localcnt: 3n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
    expect(drainSync(d).get(5)).toBe("secondary");
    expect(d.replies.get(flushWith(d, true, true))?.ok).toBe(false);
  });
});

describe("reads the peer serves", () => {
  test("a read the peer serves while a write's remote leg fails there is read again, here", () => {
    // memsync: the write is answered on "received"; a failed flush here makes its extent stale (the
    // peer has it all, it seems), so a read goes to the peer; then the write fails on the peer's
    // disk. The peer answers in order: the read was served there without the write.
    const d = inSync("memsync");
    const write = d.submit("write", 2 * EXTENT, 512);
    d.completeLocal(d.pending_local.find((o) => o.request.id === write.id)!, true);
    const remote = d.pending_remote.find((o) => o.request.id === write.id)!;
    d.receiveRemote(remote);
    expect(d.replies.get(write.id)?.ok).toBe(true);
    const flush = d.submit("flush", 0, 0);
    d.completeLocal(d.pending_local.find((o) => o.request.id === flush.id)!, false);
    const read = d.submit("read", 2 * EXTENT, EXTENT);
    expect(read.actions.map((a) => a.type)).toEqual(["remote"]);
    d.completeRemote(remote, false); // its copy lacks the answered write: this node's is kept
    const again = d.completeRemote(d.pending_remote.find((o) => o.request.id === read.id)!, true);
    expect(d.replies.has(read.id)).toBe(false);
    expect(again.filter((a) => a.type === "local" || a.type === "remote").map((a) => a.type)).toEqual(["local"]);
  });
});

describe("orderly stop", () => {
  test("a connected, idle, flushed primary lets its keepdirty extents go; with work pending it keeps them", () => {
    const d = inSync("fullsync");
    const w = d.submit("write", 3 * EXTENT, 512);
    d.completeLocal(d.pending_local.find((o) => o.request.id === w.id)!, true);
    d.completeRemote(d.pending_remote.find((o) => o.request.id === w.id)!, true);
    expect(d.engine.forgetKeepdirty()).toEqual([]); // held until the peer flushed
    const f = d.submit("flush", 0, 0);
    d.completeLocal(d.pending_local.find((o) => o.request.id === f.id)!, true);
    d.completeRemote(d.pending_remote.find((o) => o.request.id === f.id)!, true);
    expect(d.map.extentState(3)).toMatchObject({ dirty: false, in_keepdirty: true, on_disk: true });
    expect(d.engine.forgetKeepdirty().map((a) => a.type)).toEqual(["map"]);
    expect(d.map.extentState(3)).toMatchObject({ dirty: false, in_keepdirty: false, on_disk: false });
  });
});
