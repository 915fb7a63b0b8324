// Invariants over the state of both nodes, each a pure function returning a one-line problem or
// null. The simulation runs them after every tick and at the end of a run.
import type { SimConfig } from "./context.ts";
import type { SimDisk } from "./disk.ts";
import type { PrimaryProc } from "./primary-proc.ts";

/**
 * Crash safety of the activemap: every extent whose data differs between the nodes is dirty in
 * the durable map of at least one of them (the primary merges the secondary's map at the next
 * handshake), so a crash at this instant cannot leave a difference no sync will copy. Checked for
 * what both caches hold, and for what a power loss of either node leaves when its whole cache is
 * lost (its stable storage against the other's cache).
 */
export function checkMapCoversDifferences(a: SimDisk, b: SimDisk, cfg: SimConfig): string | null {
  const per_extent = cfg.extent_bytes / cfg.sector_bytes;
  for (let e = 0; e < cfg.nextents; e++) {
    if (a.mapBitDurable(e) || b.mapBitDurable(e)) continue;
    const uncovered = (what: string, s: number, x: number, y: number) =>
      `activemap does not cover a difference${what}: extent ${e} (sector ${s}: ${x} vs ${y}) is clean in both durable maps`;
    for (let s = e * per_extent, end = Math.min(s + per_extent, cfg.sectors); s < end; s++) {
      if (a.data[s] !== b.data[s]) return uncovered("", s, a.data[s]!, b.data[s]!);
      if (a.data_durable[s] !== b.data[s]) return uncovered(" (A's stable storage vs B)", s, a.data_durable[s]!, b.data[s]!);
      if (a.data[s] !== b.data_durable[s]) return uncovered(" (A vs B's stable storage)", s, a.data[s]!, b.data_durable[s]!);
    }
  }
  return null;
}

/** After the final sync and flush: both data regions equal, in the cache and on stable storage. */
export function checkReplicasIdentical(a: SimDisk, b: SimDisk): string | null {
  for (let s = 0; s < a.sectors; s++) {
    if (a.data[s] !== b.data[s]) return `replicas differ after sync: sector ${s} holds ${a.data[s]} vs ${b.data[s]}`;
    if (a.data_durable[s] !== b.data_durable[s]) return `replicas differ on stable storage after the final flush: sector ${s}`;
  }
  return null;
}

/**
 * The pair is in sync and idle: connected, no sync pass running or pending, no request or reply
 * outstanding, and the counters mirrored (the end of a successful pass) and durable.
 */
export function isInSync(p: PrimaryProc): boolean {
  return passMirrored(p) && p.engine.inflight() === 0 && p.remote_waiters === 0;
}

/** A sync pass ended well on the live link: nothing left to copy, counters mirrored and durable. */
export function passMirrored(p: PrimaryProc): boolean {
  const g = p.engine.generation;
  const peer = p.peer_counters;
  return p.connected && peer !== null && !p.engine.syncProgress().active && p.map.syncExtentCount() === 0 &&
    g.localcnt === peer.remotecnt && g.remotecnt === peer.localcnt &&
    p.meta.localcnt === g.localcnt && p.meta.remotecnt === g.remotecnt;
}
