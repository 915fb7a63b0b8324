// Faults while the primary is synchronized from its secondary (decision row 3), found by a review
// of the first version of that handling: each sequence lost an acknowledged write silently, or
// took the secondary's changes (already read) back to before the failover. Where neither copy can
// be whole, a flush must fail instead.
import { describe, expect, test } from "bun:test";
import { EngineDriver, drainSync, flushWith, op, writeBoth } from "./engine-driver.ts";

const EXTENT = 4096;
const S = EXTENT / 512; // first sector of extent 1

function driver(mode: "memsync" | "fullsync" = "memsync"): EngineDriver {
  return new EngineDriver({
    datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: 512, keepdirty: 2, chunk_bytes: 1024, mode,
    generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 },
  });
}

function connect(d: EngineDriver, extents: number[], syncsrc: "primary" | "secondary" = "secondary", epoch: string | null = null): void {
  const peer_map = new Uint8Array(d.map.mapsize);
  for (const e of extents) peer_map[e >> 3]! |= 1 << (e & 7);
  d.connect({ syncsrc, peer_localcnt: 2n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: epoch });
}

/** Extent 1 holds the secondary's change from its time as primary; extent 0's chunks are in flight. */
function failedBack(extents = [0, 1], epoch: string | null = null): { d: EngineDriver; rogue: number } {
  const d = driver();
  const rogue = d.newVersion();
  d.remote.fill(rogue, S, 2 * S);
  connect(d, extents, "secondary", epoch);
  return { d, rogue };
}

/** A flush whose legs end as told; whether it was answered ok. */
function flush(d: EngineDriver, local_ok: boolean, remote_ok: boolean): boolean | undefined {
  return d.replies.get(flushWith(d, local_ok, remote_ok))?.ok;
}

describe("a failed flush of the secondary's disk", () => {
  for (const order of ["the write's peer leg first", "the flush's failure first"] as const) {
    test(`a write in flight on an extent still to be copied from it is reported lost (${order})`, () => {
      const { d, rogue } = failedBack();
      const f = d.submit("flush", 0, 0);
      const w = d.submit("write", EXTENT, 512);
      const remote = op(d.pending_remote, w.id);
      if (remote.awaiting_received) d.receiveRemote(remote);
      if (order === "the write's peer leg first") d.completeRemote(remote, true);
      d.completeRemote(op(d.pending_remote, f.id), false);
      if (order === "the flush's failure first") d.completeRemote(remote, true);
      d.remote[S] = rogue; // the failure dropped W there
      d.completeLocal(op(d.pending_local, f.id), true);
      d.completeLocal(op(d.pending_local, w.id), true);
      expect(d.replies.get(w.id)?.ok).toBe(true);
      expect(flush(d, true, true)).toBe(false); // W is gone with the copy from the peer: said so
      drainSync(d);
      expect(d.local[S]).toBe(rogue);
      expect(flush(d, true, true)).toBe(true); // once
    });
  }

  test("an extent stale here and still to be copied from it keeps its copy (the secondary's changes, already read)", () => {
    const { d, rogue } = failedBack();
    writeBoth(d, EXTENT);
    expect(flush(d, false, true)).toBe(false); // this node's flush fails: extent 1 stale here
    expect(d.submit("read", EXTENT + 3 * 512, 512).actions.map((a) => a.type)).toEqual(["remote"]);
    writeBoth(d, EXTENT + 512);
    flush(d, true, false); // the secondary's flush fails
    expect(drainSync(d).get(1)).toBe("secondary");
    expect(d.remote[S + 3]).toBe(rogue);
    expect(d.local[S + 3]).toBe(rogue);
  });

  test("the same through a reconnect after its power loss", () => {
    const { d, rogue } = failedBack();
    writeBoth(d, EXTENT);
    flush(d, false, true);
    writeBoth(d, EXTENT + 512); // unconfirmed there
    d.disconnect();
    connect(d, [0, 1]);
    expect(drainSync(d).get(1)).toBe("secondary");
    expect(d.remote[S + 3]).toBe(rogue);
    expect(d.local[S + 3]).toBe(rogue);
    expect(flush(d, true, true)).toBe(false);
  });

  test("after the pass copied an extent from its unconfirmed cache, a flush covering a change there fails", () => {
    const { d, rogue } = failedBack([0, 1, 2]);
    writeBoth(d, EXTENT);
    const f = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, f.id), true);
    d.remote[S] = rogue; // its write-back of W failed: the page is dropped, the error waits for its next flush
    for (let n = 0; n < 8; n++) d.completeSync(d.pending_sync[0]!, true); // extents 0 and 1 copied from it
    expect(d.local[S]).toBe(rogue);
    d.completeRemote(op(d.pending_remote, f.id), false);
    drainSync(d);
    expect(d.replies.get(f.id)?.ok).toBe(false);
  });

  test("its power loss after the pass copied an extent from its unconfirmed cache: this node's copy, whole then, is kept", () => {
    const { d, rogue } = failedBack([0, 1, 2]);
    const version = writeBoth(d, EXTENT);
    for (let n = 0; n < 8; n++) d.completeSync(d.pending_sync[0]!, true); // extent 1 copied from its cache, W with it
    expect(d.local[S]).toBe(version);
    d.disconnect();
    d.remote[S] = rogue; // its power loss took W
    connect(d, []);
    expect(drainSync(d).get(1)).toBe("primary");
    expect(d.remote[S]).toBe(version);
    expect(flush(d, true, true)).toBe(false); // a failed write-back could have struck before the copy read it
  });

  test("after the link went: the reconnect that goes on from its copy (marked incomplete) takes its cache as lost", () => {
    const { d, rogue } = failedBack([0, 1], "boot-1");
    writeBoth(d, EXTENT);
    const f = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, f.id), true);
    d.disconnect(); // the flush's peer leg goes with the link
    expect(d.replies.get(f.id)?.ok).toBe(false); // W only in a cache there, its extent only current there
    d.remote[S] = rogue; // the flush failed there after the link went
    connect(d, [], "primary", "boot-1"); // same boot; its copy marked incomplete: "dropped"
    drainSync(d);
    expect(flush(d, true, true)).toBe(false);
  });
});

describe("an extent copied back from the peer's unconfirmed cache (stale here), outside row 3", () => {
  test("a failed flush there copies it to the peer again, with the changes made here since, and reports the loss", () => {
    const d = driver("fullsync");
    d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: null });
    drainSync(d);
    const first = writeBoth(d, 2 * EXTENT); // unconfirmed there until a flush covers it
    writeBoth(d, 3 * EXTENT);
    const f = d.submit("flush", 0, 0);
    d.completeLocal(op(d.pending_local, f.id), false); // this node's leg fails first: extents 2, 3 stale here
    // Extent 2 copied back from the peer's cache, W with it; extent 3's copy (and the pass) not done.
    for (let n = 0; n < 4; n++) {
      expect(d.pending_sync[0]!.chunk.extent).toBe(2);
      d.completeSync(d.pending_sync[0]!, true);
    }
    expect(d.local[(2 * EXTENT) / 512]).toBe(first);
    const later = writeBoth(d, 2 * EXTENT + 512);
    d.completeRemote(op(d.pending_remote, f.id), false); // the peer's leg fails too...
    d.remote.fill(0, (2 * EXTENT) / 512, (3 * EXTENT) / 512); // ...and dropped its cache of extent 2
    expect(drainSync(d).get(2)).toBe("primary");
    expect(d.remote[(2 * EXTENT) / 512]).toBe(first);
    expect(d.remote[(2 * EXTENT + 512) / 512]).toBe(later);
    expect(flush(d, true, true)).toBe(false);
  });
});

describe("the link going and coming back while a change's leg here still runs (a second review)", () => {
  test("a change the peer answered before the link went is copied to it again when its cache was lost, the pass after a quick reconnect included", () => {
    for (const row3 of [false, true]) {
      const d = driver();
      const rogue = row3 ? d.newVersion() : 0;
      const reconnect = (epoch: string) => {
        if (row3) connect(d, [0, 1], "secondary", epoch);
        else d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: epoch });
      };
      d.remote.fill(rogue, S, 2 * S);
      reconnect("boot-1");
      if (!row3) drainSync(d);
      const { id } = d.submit("write", EXTENT, 512); // extent 1: still to be copied from the peer in row 3
      const version = d.requests.get(id)!.version;
      const remote = op(d.pending_remote, id);
      if (remote.awaiting_received) d.receiveRemote(remote);
      d.completeRemote(remote, true); // in the peer's cache only
      d.disconnect();
      d.remote[S] = rogue; // the peer lost power, W with its cache
      reconnect("boot-2");
      d.completeLocal(op(d.pending_local, id), true);
      expect(d.replies.get(id)?.ok).toBe(true);
      const f = flushWith(d, true, true);
      drainSync(d);
      if (row3) expect(d.replies.get(f)?.ok === true && d.local[S] !== version).toBe(false); // kept, or its loss said
      else {
        expect(d.remote[S]).toBe(version);
        d.checkMapCoversDifferences();
      }
    }
  });

  test("a flush of the previous connection that ends on this one marks nothing of this one's", () => {
    for (const row3 of [false, true]) {
      const d = driver("fullsync");
      const reconnect = () => {
        if (row3) connect(d, [0, 1], "secondary", "boot-1");
        else d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: "boot-1" });
      };
      reconnect();
      const f = d.submit("flush", 0, 0); // its leg here is slow
      d.disconnect();
      reconnect(); // same peer, its cache lasted
      const version = writeBoth(d, EXTENT);
      d.completeLocal(op(d.pending_local, f.id), true); // F ends now
      expect(flush(d, true, true)).toBe(true); // nothing was lost
      drainSync(d);
      expect(d.local[S]).toBe(version);
    }
  });

  test("a write that failed here but that the peer made, in a chunk a pass already copied, is copied again", () => {
    const d = new EngineDriver({
      datasize: 8 * EXTENT, extentsize: EXTENT, sector_bytes: 512, keepdirty: 1, chunk_bytes: 2048, mode: "fullsync",
      generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 },
    });
    const peer_map = new Uint8Array(d.map.mapsize);
    peer_map[0] = 1 << 2;
    d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
    d.completeSync(d.pending_sync.find((o) => o.chunk.offset === 2 * EXTENT + 2048)!, true);
    const { id } = d.submit("write", 2 * EXTENT + 2048 + 512, 512); // in the chunk already copied
    d.completeRemote(op(d.pending_remote, id), true);
    d.completeLocal(op(d.pending_local, id), false);
    expect(d.replies.get(id)?.ok).toBe(false);
    drainSync(d);
    writeBoth(d, 5 * EXTENT);
    writeBoth(d, 6 * EXTENT); // the keepdirty list lets extent 2 go
    expect(d.differingExtents()).toEqual([]);
  });
});

describe("counters", () => {
  test("outside a synchronization from the peer, a change answered after the link went bumps localcnt even when the peer made it", () => {
    const d = driver("fullsync");
    d.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map: new Uint8Array(d.map.mapsize), virgin: false, peer_cache_epoch: null });
    drainSync(d);
    const { id } = d.submit("write", EXTENT, 512);
    d.completeRemote(op(d.pending_remote, id), true);
    d.disconnect();
    d.completeLocal(op(d.pending_local, id), true);
    expect(d.replies.get(id)?.ok).toBe(true);
    expect(d.engine.generation.localcnt).toBe(2n); // the peer may yet lose it from its cache
  });
});
