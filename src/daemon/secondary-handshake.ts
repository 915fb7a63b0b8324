// The secondary's disk side of an accepted connection (spec 6.2, docs/protocol.md): the map it
// answers with, and the metadata the decision changes (an adopted resuid, the stale list folded
// into the map, "copy incomplete"), all durable before the HANDSHAKE_REPLY. The cache epoch the
// reply carries was taken by the main process before this worker started (held-component.ts).
import type { ActiveMap } from "../core/activemap.ts";
import { allBits, setBits } from "../core/bitmap.ts";
import type { ConnectDecision } from "../core/connect-decision.ts";
import { FLAG_COPY_INCOMPLETE, FLAG_RESUID_UNCONFIRMED, FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../core/metadata.ts";
import type { FlushAnswer } from "../io/held-component.ts";
import type { MetadataStore } from "../io/metadata-store.ts";
import { expectedBitmapBytes, VERSION_IN_SYNC } from "../wire/peer/index.ts";

export interface SecondaryAnswer {
  /** The map sent after the reply: none, the on-disk map, or all extents. */
  bitmap: Uint8Array;
  /** null: the primary trusts none of this node's unconfirmed changes (held-component.ts). */
  cache_epoch: Uint8Array | null;
}

type Accept = Extract<ConnectDecision, { kind: "accept" }>;

/**
 * Readies the disk for an accepted connection and returns what the reply carries. `map` (empty)
 * takes the on-disk map; `meta` is updated in place; `cache` is the main process's epoch for this
 * connection (null below VERSION_CACHE_EPOCH). A failed map or metadata write throws: the
 * connection ends and the next handshake starts from what the disk holds.
 */
export function answerHandshake(
  store: MetadataStore, meta: Metadata, map: ActiveMap,
  decision: Accept, primary_resuid: bigint, version: number, cache: FlushAnswer | null,
): SecondaryAnswer {
  const flush_failed = cache?.flush_error != null;
  const ondisk = store.readMap(meta.mapsize);
  if (meta.stale) {
    // Its stale extents join the map the primary merges, on the disk first (the list goes
    // below), so that the primary copies them here whatever an earlier map write left.
    setBits(ondisk, meta.stale.extents);
    store.writeMapImage(ondisk);
  }
  map.copyIn(ondisk);
  const bitmap_bytes = expectedBitmapBytes(meta.datasize, meta.extentsize);
  const bitmap = decision.map === "own" ? ondisk.subarray(0, bitmap_bytes)
    : decision.map === "full" ? allBits(bitmap_bytes, map.nextents) : new Uint8Array(0);
  // A copy toward this node is about to start (only a primary speaking IN_SYNC can say when it
  // ends), or its flush just failed while it is not the sync source, or it was a primary whose
  // copy was stale in the extents its metadata lists (its map holds them, so the primary copies
  // them): it is incomplete until the primary says otherwise. As the sync source (decision row
  // 3) its copy holds changes the primary lacks, and marked incomplete it would lose them all at
  // the next handshake; what the failed flush may have dropped of the primary's changes, the
  // primary copies here again (it took this node's cache as lost: no epoch).
  const incomplete = (decision.syncsrc === "primary" && (version >= VERSION_IN_SYNC || flush_failed)) || meta.stale !== undefined;
  let changed = false;
  if (decision.adopt_resuid) {
    // A full copy is coming: the on-disk map says so first, so that a reply lost with this
    // connection still asks for it at the next one (the map is cleared only once the primary
    // has merged it), instead of a copy of the primary's dirty extents alone.
    if (decision.map === "full") store.writeMapImage(bitmap);
    meta.resuid = primary_resuid;
    meta.prevrole = "secondary";
    // Joining the primary's pair: this node's "copy my data whole at my first connect as
    // primary" (create --initial-sync full) no longer applies; its data comes from the primary.
    meta.flags &= ~FLAG_SYNC_FULL_ON_CONNECT;
    changed = true;
  } else if (primary_resuid === meta.resuid && (meta.flags & (FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT)) !== 0) {
    // The primary holds this node's resuid: the pair exists. Left from a time this node was primary
    // and its first answer was lost, "resuid unconfirmed" would one day claim a virgin pair to a
    // re-created peer (no copy: it would stay without this pair's data, marked complete), and
    // "copy my data whole at my first connect" no longer applies: its data comes from the primary.
    meta.flags &= ~(FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT);
    changed = true;
  }
  if (incomplete && ((meta.flags & FLAG_COPY_INCOMPLETE) === 0 || meta.stale)) {
    delete meta.stale;
    meta.flags |= FLAG_COPY_INCOMPLETE;
    changed = true;
  }
  // One slot write: an adopted resuid never reaches the disk without "incomplete" (a power loss
  // between two writes would leave a copy that was never synchronized promotable in this pair).
  if (changed) store.write(meta);
  return { bitmap, cache_epoch: cache?.epoch ?? null };
}
