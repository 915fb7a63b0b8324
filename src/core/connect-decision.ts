// The connect decision (spec 7.2), evaluated by the secondary when a primary connects: who is the
// sync source, what the secondary sends as its map, or why the connection is refused.
// One change from FreeBSD: a brand-new pair (both sides never used) does a full initial sync
// unless the primary's metadata says its data needs none (spec 7.3 sharp edge, docs/operations.md).

export interface Generation {
  resuid: bigint;
  localcnt: bigint;
  remotecnt: bigint;
}

export interface PrimaryHello extends Generation {
  /** The primary generated its resuid during this handshake. */
  virgin: boolean;
  /** The primary's data is authoritative for a brand-new pair and must be copied whole. */
  initial_full_sync: boolean;
}

export type SyncSource = "primary" | "secondary";

export type ConnectDecision =
  | {
      kind: "accept";
      /** Decision table row (1-7), for logs and tests. */
      row: number;
      syncsrc: SyncSource;
      /** Map the secondary answers with: none, its own on-disk map, or all ones (full sync). */
      map: "none" | "own" | "full";
      /** Row 1: the secondary takes the primary's resuid and writes it. */
      adopt_resuid: boolean;
      /** Reply `virgin` (row 1) so the primary moves localcnt 0 → 1. */
      virgin: boolean;
      warning?: string;
    }
  | { kind: "split-brain"; row: 6; message: string }
  | { kind: "resuid-mismatch"; row: 2; message: string };

/** `secondary_incomplete`: the secondary's copy lacks changes its peer has (Metadata copyIncomplete):
 * it is never the sync source, even where its counters say its data is newer. */
export function decideConnect(secondary: Generation, primary: PrimaryHello, secondary_incomplete = false): ConnectDecision {
  if (secondary.resuid === 0n) {
    const full = !primary.virgin || primary.initial_full_sync;
    return { kind: "accept", row: 1, syncsrc: "primary", map: full ? "full" : "none", adopt_resuid: true, virgin: true };
  }
  if (secondary.resuid !== primary.resuid) {
    return {
      kind: "resuid-mismatch", row: 2,
      message: `Resource unique ID mismatch (primary=${primary.resuid}, secondary=${secondary.resuid}).`,
    };
  }
  const S = secondary, P = primary;
  const accept = (row: number, syncsrc: SyncSource, map: "own" | "full", warning?: string): ConnectDecision =>
    ({ kind: "accept", row, syncsrc, map, adopt_resuid: false, virgin: false, ...(warning ? { warning } : {}) });
  // Its copy would go over the primary's whole, stale parts included: the primary's copy is taken
  // instead, over the extents the secondary changed (its map), and those changes are dropped.
  const dropped = "This node's copy is incomplete, so the primary's copy is taken although this node changed data since: " +
    "those changes are dropped (the primary copies its own over them).";
  if (S.localcnt > P.remotecnt && S.remotecnt === P.localcnt) {
    return secondary_incomplete ? accept(3, "primary", "own", dropped) : accept(3, "secondary", "own");
  }
  if (S.localcnt === P.remotecnt && S.remotecnt === P.localcnt) return accept(4, "primary", "own");
  if (S.localcnt === P.remotecnt && S.remotecnt < P.localcnt) return accept(5, "primary", "own");
  if (S.localcnt > P.remotecnt && P.localcnt > S.remotecnt) {
    return { kind: "split-brain", row: 6, message: "Split-brain condition!" };
  }
  const warning = `Generation counters disagree (primary localcnt=${P.localcnt} remotecnt=${P.remotecnt}, ` +
    `secondary localcnt=${S.localcnt} remotecnt=${S.remotecnt}); doing a full synchronization.`;
  return accept(7, S.localcnt > P.remotecnt && !secondary_incomplete ? "secondary" : "primary", "full", warning);
}

/**
 * The primary's counters moved since its HANDSHAKE carried them (a first change made while
 * connecting bumps localcnt): the secondary decided on counters that no longer say so, and acting
 * on its reply could copy the peer's data over that change (row 3 where it is row 6). The primary
 * drops that connection and connects again.
 */
export function countersMoved(sent: Omit<Generation, "resuid">, now: Omit<Generation, "resuid">): boolean {
  return sent.localcnt !== now.localcnt || sent.remotecnt !== now.remotecnt;
}
