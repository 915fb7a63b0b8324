// Requests submitted together (one NBD read's worth) may each need an activemap update before
// their data. Written one by one, each update costs the component a flush (on a disk, most of a
// random write's time); DRBD gathers them into one activity-log transaction. batchMapWrites
// does the same for a batch of submits whose actions have not started: their map updates become
// one, ahead of every other action of the batch. That is safe because, with nothing of the batch
// carried out yet:
//   - the merged update is durable before any data of the batch, as each one's own would be;
//   - an update only sets bits of extents its request writes, or clears bits of extents with no
//     write in flight (keepdirty evictions) whose data was durable when the update was made; its
//     flush_before still runs first, so writing it earlier vouches for nothing new;
//   - pieces keep their order, so each 4 KiB map block ends with its newest image.
// Actions produced while a batch is carried out (completions) are not batched: their order may
// matter (a clean bit after the flush that made its data durable).
import type { MapWrite } from "./activemap.ts";
import { assert } from "./assert.ts";
import type { PrimaryAction } from "./primary-engine.ts";

/** The batch's actions with its map updates merged into one, at the place of the first. */
export function batchMapWrites(actions: readonly PrimaryAction[]): PrimaryAction[] {
  const writes: MapWrite[] = [];
  for (const a of actions) if (a.type === "map") writes.push(a.write);
  if (writes.length < 2) return [...actions];
  const merged = mergeMapWrites(writes);
  const out: PrimaryAction[] = [];
  for (const a of actions) {
    if (a.type !== "map") out.push(a);
    else if (a.write === writes[0]) out.push({ type: "map", write: merged });
  }
  return out;
}

/** One MapWrite doing what `writes` (in seq order) do: every piece in order, each flush once. */
export function mergeMapWrites(writes: readonly MapWrite[]): MapWrite {
  assert(writes.length > 0, "no map writes to merge");
  for (let i = 1; i < writes.length; i++) {
    assert(writes[i]!.seq > writes[i - 1]!.seq, () => `map writes out of order: seq ${writes[i - 1]!.seq} before ${writes[i]!.seq}`);
  }
  return {
    seq: writes[writes.length - 1]!.seq,
    pieces: writes.flatMap((w) => w.pieces),
    flush: writes.some((w) => w.flush),
    flush_before: writes.some((w) => w.flush_before),
  };
}
