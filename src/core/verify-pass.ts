// Online verification (`hastctl verify`, DRBD's online verify): one walk over the whole device in
// chunks that never cross an extent, each compared between the two copies while no change of it is
// in flight. This is the walk and its tally; the PrimaryEngine keeps the chunks apart from writes.
import { assert } from "./assert.ts";

export interface VerifyChunk {
  offset: number;
  length: number;
  extent: number;
}

/** How a chunk ended: both copies equal, not equal, not compared (its extent was still to be
 * synchronized, so the copies differ by design), or a read failed on either node. */
export type VerifyOutcome = "same" | "differ" | "skipped" | "failed";

export interface VerifyCounts {
  /** Where the walk began: 0, or where an earlier one ended early (hastctl verify --resume). */
  from_offset: number;
  /** Bytes handed out and ended, whatever the outcome; total_bytes is the device from from_offset. */
  done_bytes: number;
  total_bytes: number;
  same_bytes: number;
  differ_bytes: number;
  /** Chunks found different (each is copied to the peer). */
  differ_chunks: number;
  skipped_bytes: number;
  failed_bytes: number;
}

export interface VerifyResult extends VerifyCounts {
  /** Ran to its end, or ended early (the rest was not compared): the link went down, or the
   * operator stopped it. */
  ended: "complete" | "disconnected" | "stopped";
  /** Where a walk that goes on from this one begins: the first byte not compared from there on
   * (the device's size once complete). */
  resume_offset: number;
}

export class VerifyPass {
  private next_offset: number;
  private readonly counts: VerifyCounts;

  /** `from`: where to begin, rounded down to the start of the chunk holding it: 0, where an
   * earlier walk ended early (its resume_offset), or an offset the operator gave (--from). */
  constructor(private readonly datasize: number, private readonly extentsize: number, private readonly chunk_bytes: number, from_byte = 0) {
    assert(Number.isSafeInteger(datasize) && datasize > 0, () => `datasize ${datasize}`);
    assert(Number.isSafeInteger(chunk_bytes) && chunk_bytes > 0, () => `chunk_bytes ${chunk_bytes}`);
    assert(Number.isSafeInteger(from_byte) && from_byte >= 0 && from_byte < datasize, () => `verification from ${from_byte} of ${datasize} bytes`);
    // Chunks are laid from each extent's start (next() never lets one cross an extent).
    const extent_start = Math.floor(from_byte / extentsize) * extentsize;
    const from = extent_start + Math.floor((from_byte - extent_start) / chunk_bytes) * chunk_bytes;
    this.next_offset = from;
    this.counts = {
      from_offset: from, done_bytes: 0, total_bytes: datasize - from, same_bytes: 0, differ_bytes: 0, differ_chunks: 0, skipped_bytes: 0, failed_bytes: 0,
    };
  }

  /** The first byte not yet handed out. */
  get position(): number {
    return this.next_offset;
  }

  /** The next range to compare, in device order, or null once every byte was handed out. */
  next(): VerifyChunk | null {
    const offset = this.next_offset;
    if (offset >= this.datasize) return null;
    const extent = Math.floor(offset / this.extentsize);
    const extent_end = Math.min(this.datasize, (extent + 1) * this.extentsize);
    const length = Math.min(this.chunk_bytes, extent_end - offset);
    this.next_offset = offset + length;
    return { offset, length, extent };
  }

  ended(chunk: VerifyChunk, outcome: VerifyOutcome): void {
    const c = this.counts;
    c.done_bytes += chunk.length;
    assert(c.done_bytes <= this.next_offset - c.from_offset, () => `verify chunk at ${chunk.offset} ended twice`);
    if (outcome === "same") c.same_bytes += chunk.length;
    else if (outcome === "differ") {
      c.differ_bytes += chunk.length;
      c.differ_chunks++;
    } else if (outcome === "skipped") c.skipped_bytes += chunk.length;
    else c.failed_bytes += chunk.length;
  }

  /** Ends `chunk` as skipped and, when it is the last handed out, the rest of its extent too. */
  skipExtent(chunk: VerifyChunk): void {
    if (chunk.offset + chunk.length !== this.next_offset) return this.ended(chunk, "skipped");
    const extent_end = Math.min(this.datasize, (chunk.extent + 1) * this.extentsize);
    this.next_offset = extent_end;
    this.ended({ ...chunk, length: extent_end - chunk.offset }, "skipped");
  }

  tally(): VerifyCounts {
    return { ...this.counts };
  }
}

/** One line for the log and hastctl: what a verification found. */
export function describeVerify(r: VerifyResult): string {
  const parts = [`${r.same_bytes + r.differ_bytes} bytes compared`, `${r.differ_chunks} chunks (${r.differ_bytes} bytes) differed`];
  if (r.skipped_bytes > 0) parts.push(`${r.skipped_bytes} bytes not compared (still to be synchronized)`);
  if (r.failed_bytes > 0) parts.push(`${r.failed_bytes} bytes not compared (read errors)`);
  return parts.join(", ");
}
