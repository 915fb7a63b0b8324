// The activemap sent after HANDSHAKE_REPLY, split into BITMAP frames of at most BITMAP_CHUNK_BYTES,
// in order, covering exactly bitmap_bytes.
import { BITMAP_CHUNK_BYTES, MAX_BITMAP_BYTES } from "./constants.ts";
import type { Frame } from "./types.ts";

export function bitmapFrames(bitmap: Uint8Array): Frame[] {
  if (bitmap.length > MAX_BITMAP_BYTES) throw new Error(`bitmap of ${bitmap.length} bytes exceeds ${MAX_BITMAP_BYTES}`);
  const frames: Frame[] = [];
  for (let offset = 0; offset < bitmap.length; offset += BITMAP_CHUNK_BYTES) {
    frames.push({ kind: "bitmap", offset, data: bitmap.subarray(offset, offset + BITMAP_CHUNK_BYTES) });
  }
  return frames;
}

export type BitmapProgress = { kind: "more" } | { kind: "done"; bitmap: Uint8Array } | { kind: "error"; reason: string };

/** Receiver side: collects BITMAP frames into one buffer of the size HANDSHAKE_REPLY announced. */
export class BitmapAssembler {
  readonly #bitmap: Uint8Array;
  #received_bytes = 0;

  constructor(bitmap_bytes: number) {
    if (!Number.isSafeInteger(bitmap_bytes) || bitmap_bytes <= 0 || bitmap_bytes > MAX_BITMAP_BYTES) {
      throw new Error(`BitmapAssembler: bitmap_bytes ${bitmap_bytes} out of range (1..${MAX_BITMAP_BYTES})`);
    }
    this.#bitmap = new Uint8Array(bitmap_bytes);
  }

  add(offset: number, data: Uint8Array): BitmapProgress {
    if (offset !== this.#received_bytes) {
      return { kind: "error", reason: `BITMAP chunk at offset ${offset}, expected ${this.#received_bytes}` };
    }
    if (offset + data.length > this.#bitmap.length) {
      return { kind: "error", reason: `BITMAP chunk ends at ${offset + data.length}, bitmap is ${this.#bitmap.length} bytes` };
    }
    this.#bitmap.set(data, offset);
    this.#received_bytes += data.length;
    return this.#received_bytes === this.#bitmap.length ? { kind: "done", bitmap: this.#bitmap } : { kind: "more" };
  }
}
