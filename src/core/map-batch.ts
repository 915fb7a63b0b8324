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
//   - pieces keep their order, so each 4 KiB map block ends with its newest image; a piece that a
//     later one of the same range overwrites is dropped (nothing is written between them).
// The executor runs a pending batch before anything made after it, so map writes keep seq order.
// Updates made by completions are never moved earlier (a clean bit must not overtake the flush
// that made its data durable); HeldMapWrites only moves those that clear bits later.
import type { MapPiece, MapWrite } from "./activemap.ts";
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

/**
 * One MapWrite doing what `writes` (in seq order) do: their pieces in order, each flush once. A
 * piece whose range a later piece rewrites whole is left out: the block ends the same, with one
 * write instead of one per request (a burst of first writes to new extents of one map block).
 */
export function mergeMapWrites(writes: readonly MapWrite[]): MapWrite {
  assert(writes.length > 0, "no map writes to merge");
  for (let i = 1; i < writes.length; i++) {
    assert(writes[i]!.seq > writes[i - 1]!.seq, () => `map writes out of order: seq ${writes[i - 1]!.seq} before ${writes[i]!.seq}`);
  }
  return {
    seq: writes[writes.length - 1]!.seq,
    pieces: lastOfEachRange(writes.flatMap((w) => w.pieces)),
    flush: writes.some((w) => w.flush),
    flush_before: writes.some((w) => w.flush_before),
    sets: writes.some((w) => w.sets),
  };
}

/** `pieces` in order without those a later piece of the same offset and length rewrites. */
function lastOfEachRange(pieces: MapPiece[]): MapPiece[] {
  const later = new Map<number, number[]>(); // offset -> lengths written after
  const kept: MapPiece[] = [];
  for (let i = pieces.length - 1; i >= 0; i--) {
    const p = pieces[i]!;
    const lengths = later.get(p.offset);
    if (lengths?.includes(p.bytes.length)) continue;
    if (lengths) lengths.push(p.bytes.length);
    else later.set(p.offset, [p.bytes.length]);
    kept.push(p);
  }
  return kept.reverse();
}

/** How long an update that only clears bits may wait to be written (HeldMapWrites): what a crash
 * can then leave dirty on disk is what got clean in that time, copied again by the next pass. */
export const CLEARS_HELD_MS = 100;

/**
 * Map updates that only clear bits (a write completed, an extent synchronized) guard nothing:
 * a bit still dirty on disk only makes a resync copy more. The executor holds them back and
 * writes them merged with the next update, or CLEARS_HELD_MS after the first was held, so a
 * synchronization pass (an extent cleared every few milliseconds) or a burst of completions costs
 * one flush, not one (or two, with flush_before) each. An update that sets a bit is never held, and
 * takes the held ones with it, in seq order (a held block image is older than its). They are kept
 * merged: as many pieces as map blocks changed, however many updates wait.
 */
export class HeldMapWrites {
  private held: MapWrite | null = null;

  /** What to write now for `write`: null when it was held (the caller writes drain() in time). */
  take(write: MapWrite): MapWrite | null {
    if (!write.sets) {
      this.held = this.held === null ? write : mergeMapWrites([this.held, write]);
      return null;
    }
    const held = this.drain();
    return held === null ? write : mergeMapWrites([held, write]);
  }

  get holding(): boolean {
    return this.held !== null;
  }

  /** The held updates as one write, or null. */
  drain(): MapWrite | null {
    const held = this.held;
    this.held = null;
    return held;
  }
}
