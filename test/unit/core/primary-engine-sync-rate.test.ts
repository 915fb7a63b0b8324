// sync_rate in the PrimaryEngine: a pass's copies to the peer start only while the allowance the
// daemon hands out (allowSync) is positive; copies back to this node are never held back.
import { describe, expect, test } from "bun:test";
import { EngineDriver } from "./engine-driver.ts";

const SECTOR = 512;
const EXTENT = 4096;
const CHUNK = 1024;
const NEXTENTS = 4;
const DATASIZE = NEXTENTS * EXTENT;

/** Connected with `extents` marked in the peer's map: a pass copies them, from `syncsrc`. */
function connected(syncsrc: "primary" | "secondary", extents: number[], pace?: number): EngineDriver {
  const d = new EngineDriver({
    datasize: DATASIZE, extentsize: EXTENT, sector_bytes: SECTOR, keepdirty: 2, chunk_bytes: CHUNK, mode: "fullsync",
    generation: { resuid: 7n, localcnt: 1n, remotecnt: 1n, flags: 0 },
  });
  if (pace !== undefined) d.allowSync(0, pace); // from unpaced to paced: the allowance is the cap
  const peer_map = new Uint8Array(d.map.mapsize);
  for (const e of extents) peer_map[e >> 3]! |= 1 << (e & 7);
  d.connect({ syncsrc, peer_localcnt: 1n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
  return d;
}

const offsets = (d: EngineDriver) => d.pending_sync.map((op) => op.chunk.offset);

describe("sync_rate", () => {
  test("copies to the peer start while the allowance is positive, each taking its length off; the pass ends once allowed", () => {
    const d = connected("primary", [1], CHUNK / 2);
    expect(offsets(d)).toEqual([EXTENT]); // half a chunk allowed: one starts
    d.completeSync(d.pending_sync[0]!, true);
    expect(offsets(d)).toEqual([]); // allowance -CHUNK/2
    d.allowSync(CHUNK / 2, CHUNK);
    expect(offsets(d)).toEqual([]); // 0: still none
    d.allowSync(10 * CHUNK, 3 * CHUNK / 2); // capped: two may start, and two do
    expect(offsets(d)).toEqual([EXTENT + CHUNK, EXTENT + 2 * CHUNK]);
    for (const op of [...d.pending_sync]) d.completeSync(op, true);
    d.allowSync(CHUNK, CHUNK);
    const last = d.completeSync(d.pending_sync[0]!, true); // the extent's last chunk
    expect(last.map((a) => a.type)).not.toContain("sync-flush"); // allowance spent: the end is not seen yet
    expect(d.allowSync(CHUNK, CHUNK).map((a) => a.type)).toContain("sync-flush");
    expect(d.pending_sync).toEqual([]);
    expect(d.map.syncExtentCount()).toBe(0);
  });

  test("copies back from the peer are not held back: a peer with newer data, or extents stale here", () => {
    // The allowance spent on an earlier connection; the next one's pass comes from the peer.
    const d = connected("primary", [1], 1);
    d.disconnect();
    expect(d.allowSync(0, 1)).toEqual([]);
    const peer_map = new Uint8Array(d.map.mapsize);
    peer_map[0] = 0b101;
    d.connect({ syncsrc: "secondary", peer_localcnt: 2n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null });
    for (let round = 0; round < 20 && d.pending_sync.length > 0; round++) {
      for (const op of [...d.pending_sync]) {
        expect(op.from).toBe("secondary");
        d.completeSync(op, true);
      }
    }
    expect(d.map.syncExtentCount()).toBe(0); // the whole pass, without any allowance handed out

    // A write that failed here but not on the peer: its extent is copied back, paced or not.
    const e = connected("primary", [3], 1);
    expect(offsets(e)).toEqual([3 * EXTENT]); // the allowance is spent
    const w = e.submit("write", 0, SECTOR);
    e.completeRemote(e.pending_remote.find((o) => o.request.id === w.id)!, true);
    e.completeLocal(e.pending_local.find((o) => o.request.id === w.id)!, false);
    expect(e.engine.stale_extents).toBe(1);
    // While extent 0 is stale the pass is not held back: the rest of extent 3, then extent 0 from
    // the peer, though no allowance came.
    const started: string[] = [];
    for (let round = 0; round < 20 && e.pending_sync.length > 0; round++) {
      const op = e.pending_sync[0]!;
      started.push(`${op.chunk.offset / CHUNK}:${op.from}`);
      e.completeSync(op, true);
    }
    expect(started).toEqual(["12:primary", "13:primary", "14:primary", "15:primary", "0:secondary", "1:secondary", "2:secondary", "3:secondary"]);
    expect(e.engine.stale_extents).toBe(0);
  });

  test("unpaced again (Infinity), every chunk may start at once", () => {
    const d = connected("primary", [1, 2], 1);
    expect(offsets(d)).toHaveLength(1);
    d.allowSync(Infinity, Infinity);
    expect(offsets(d).length).toBeGreaterThan(1);
    expect(() => d.allowSync(-1, CHUNK)).toThrow("synchronization allowance of -1 bytes capped at 1024");
  });
});
