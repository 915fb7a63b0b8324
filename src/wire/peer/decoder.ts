// Streaming frame decoder. push() socket chunks, then call next() until it says "need-more".
// Bad input never throws: next() returns an error value (and keeps returning it), and the
// caller ends the connection logging `reason`. A payload is allocated only once all of its
// bytes have arrived, so memory per connection stays within one bounded frame plus one chunk.
import { HEADER_BYTES, MAX_DATA_PAYLOAD_BYTES } from "./constants.ts";
import { DecodeFailure } from "./errors.ts";
import { decodeFrameBody } from "./frame.ts";
import { decodeHeader, type Header } from "./header.ts";
import type { DecodeResult, PeerPrimitives } from "./types.ts";

const NEED_MORE: DecodeResult = { kind: "need-more" };
const EMPTY = new Uint8Array(0);

export class FrameDecoder {
  readonly #prims: PeerPrimitives;
  /** Unconsumed input: #chunks[#first] from byte #first_offset on, then the following chunks. */
  #chunks: Uint8Array[] = [];
  #first = 0;
  #first_offset = 0;
  #buffered_bytes = 0;
  #header: Header | null = null;
  #failure: DecodeResult | null = null;
  readonly #header_scratch = new Uint8Array(HEADER_BYTES);
  readonly #reuse: boolean;
  /** With `reuse_payloads`: one buffer for payloads that span chunks, grown as needed. */
  #payload_scratch = EMPTY;

  /**
   * reuse_payloads: a frame's data is only valid until the next call to next() (it may live in a
   * buffer the decoder reuses). For a consumer that is done with each frame before asking for the
   * next, e.g. the secondary writing it to disk, this avoids one large allocation per frame.
   */
  constructor(prims: PeerPrimitives, opts: { reuse_payloads?: boolean } = {}) {
    this.#prims = prims;
    this.#reuse = opts.reuse_payloads === true;
  }

  /** Bytes received but not yet consumed by a returned frame. */
  get buffered_bytes(): number {
    return this.#buffered_bytes;
  }

  /**
   * Frames may reference `chunk` (zero copy), so the caller must not modify it afterwards.
   * Contract: next() was drained to "need-more" (or "error") before each push.
   */
  push(chunk: Uint8Array): void {
    if (this.#failure !== null || chunk.length === 0) return;
    if (this.#buffered_bytes >= this.#needed_bytes()) throw new Error("FrameDecoder.push: a complete frame is pending; drain next() first");
    this.#chunks.push(chunk);
    this.#buffered_bytes += chunk.length;
  }

  next(): DecodeResult {
    if (this.#failure !== null) return this.#failure;
    try {
      return this.#next();
    } catch (error) {
      if (!(error instanceof DecodeFailure)) throw error;
      this.#failure = { kind: "error", code: error.code, reason: error.reason };
      this.#chunks = [];
      this.#buffered_bytes = 0;
      return this.#failure;
    }
  }

  #next(): DecodeResult {
    if (this.#header === null) {
      if (this.#buffered_bytes < HEADER_BYTES) return NEED_MORE;
      this.#header = decodeHeader(this.#take(HEADER_BYTES, this.#header_scratch));
      if (this.#header.payload_bytes > MAX_DATA_PAYLOAD_BYTES) throw new Error("FrameDecoder: header validation let an oversized payload through");
    }
    const header = this.#header;
    if (this.#buffered_bytes < header.payload_bytes) return NEED_MORE;
    const payload = this.#take(header.payload_bytes, this.#reuse ? this.#scratch(header.payload_bytes) : null);
    this.#header = null;
    return { kind: "frame", frame: decodeFrameBody(header, payload, this.#prims) };
  }

  #scratch(n: number): Uint8Array {
    if (this.#payload_scratch.length < n) this.#payload_scratch = new Uint8Array(n);
    return this.#payload_scratch.subarray(0, n);
  }

  #needed_bytes(): number {
    return this.#header === null ? HEADER_BYTES : this.#header.payload_bytes;
  }

  /** n bytes from the front: a subarray when they lie in one chunk, else copied once into `into` or a new buffer. */
  #take(n: number, into: Uint8Array | null): Uint8Array {
    if (n === 0) return EMPTY;
    this.#buffered_bytes -= n;
    const first = this.#chunks[this.#first]!;
    if (first.length - this.#first_offset >= n) {
      const out = first.subarray(this.#first_offset, this.#first_offset + n);
      this.#advance(n);
      return out;
    }
    const out = into ?? new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[this.#first]!;
      const count = Math.min(n - filled, chunk.length - this.#first_offset);
      out.set(chunk.subarray(this.#first_offset, this.#first_offset + count), filled);
      filled += count;
      this.#advance(count);
    }
    return out;
  }

  #advance(n: number): void {
    this.#first_offset += n;
    if (this.#first_offset < this.#chunks[this.#first]!.length) return;
    // Let the consumed chunk go now: under a steady stream the array rarely empties, and slots
    // still holding socket chunks kept up to 1024 of them (hundreds of MiB) alive.
    this.#chunks[this.#first] = CONSUMED;
    this.#first += 1;
    this.#first_offset = 0;
    if (this.#first === this.#chunks.length) {
      this.#chunks = [];
      this.#first = 0;
    } else if (this.#first >= COMPACT_AFTER_CHUNKS) {
      this.#chunks = this.#chunks.slice(this.#first);
      this.#first = 0;
    }
  }
}

const CONSUMED = new Uint8Array(0);
/** Consumed chunk slots kept before the array is compacted (amortizes Array.shift). */
const COMPACT_AFTER_CHUNKS = 64;
