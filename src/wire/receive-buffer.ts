// Bytes received on a socket, kept as the chunks they arrived in. Data arrives with arbitrary
// boundaries; a message that lies inside one chunk is returned as a view (no copy), one that
// spans chunks is assembled once with Uint8Array.set (native memcpy). Never a JS byte loop.
// Consuming bytes moves an offset into the first chunk: no subarray per request header.

export class ReceiveBuffer {
  private chunks: Uint8Array[] = [];
  /** Index of the first live chunk in `chunks` (consumed ones are dropped in batches). */
  private first = 0;
  /** Bytes of chunks[first] already consumed. */
  private head_offset = 0;
  /** Total bytes held. */
  bytes = 0;

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
  }

  /** The chunk holding the first unconsumed byte (undefined when empty); it sits at `headOffset`.
   * With `headBytes()` a parser can read a header in place, without a view. */
  get head(): Uint8Array | undefined {
    return this.bytes === 0 ? undefined : this.chunks[this.first];
  }

  get headOffset(): number {
    return this.head_offset;
  }

  /** Bytes readable contiguously at the head. */
  headBytes(): number {
    const chunk = this.head;
    return chunk === undefined ? 0 : chunk.byteLength - this.head_offset;
  }

  /** The first `n` bytes as one contiguous array, without consuming them. Bytes that span
   * chunks are assembled into `alloc(n)` (default: a new array). */
  peek(n: number, alloc: (n: number) => Uint8Array = allocate): Uint8Array {
    if (n > this.bytes) throw new Error(`receive buffer: peek of ${n} bytes with only ${this.bytes} held`);
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[this.first]!;
    const start = this.head_offset;
    if (first.byteLength - start >= n) return first.subarray(start, start + n);
    const out = alloc(n);
    out.set(first.subarray(start), 0);
    let filled = first.byteLength - start;
    for (let i = this.first + 1; filled < n; i++) {
      const chunk = this.chunks[i]!;
      const part = Math.min(chunk.byteLength, n - filled);
      out.set(part === chunk.byteLength ? chunk : chunk.subarray(0, part), filled);
      filled += part;
    }
    return out;
  }

  /** Removes and returns the first `n` bytes (a view when they lie in one chunk). */
  take(n: number, alloc?: (n: number) => Uint8Array): Uint8Array {
    const out = this.peek(n, alloc);
    this.discard(n);
    return out;
  }

  /** Drops up to `n` bytes from the front; returns how many were dropped. */
  discard(n: number): number {
    const dropped = Math.min(n, this.bytes);
    let left = dropped;
    while (left > 0) {
      const rest = this.chunks[this.first]!.byteLength - this.head_offset;
      if (rest <= left) {
        this.chunks[this.first++] = EMPTY;
        this.head_offset = 0;
        left -= rest;
      } else {
        this.head_offset += left;
        left = 0;
      }
    }
    this.bytes -= dropped;
    if (this.bytes === 0) this.clear();
    else if (this.first >= COMPACT_AFTER_CHUNKS) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
    return dropped;
  }

  clear(): void {
    this.chunks.length = 0;
    this.first = 0;
    this.head_offset = 0;
    this.bytes = 0;
  }
}

const EMPTY = new Uint8Array(0);
/** Assembled messages above this size are allocated without zeroing (every byte is overwritten). */
const UNINITIALIZED_FROM_BYTES = 4096;

function allocate(n: number): Uint8Array {
  return n > UNINITIALIZED_FROM_BYTES ? Buffer.allocUnsafe(n) : new Uint8Array(n);
}
/** Consumed chunk slots kept before the array is compacted (amortizes Array.shift). */
const COMPACT_AFTER_CHUNKS = 64;
