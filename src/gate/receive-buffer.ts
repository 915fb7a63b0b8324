// Bytes received on a socket, kept as the chunks they arrived in. Data arrives with arbitrary
// boundaries; a message that lies inside one chunk is returned as a view (no copy), one that
// spans chunks is assembled once with Uint8Array.set (native memcpy). Never a JS byte loop.

export class ReceiveBuffer {
  private chunks: Uint8Array[] = [];
  /** Total bytes held. */
  bytes = 0;

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
  }

  /** The first `n` bytes as one contiguous array, without consuming them. */
  peek(n: number): Uint8Array {
    if (n > this.bytes) throw new Error(`receive buffer: peek of ${n} bytes with only ${this.bytes} held`);
    const first = this.chunks[0];
    if (n === 0 || first === undefined) return new Uint8Array(0);
    if (first.byteLength >= n) return first.subarray(0, n);
    const out = new Uint8Array(n);
    let filled = 0;
    for (const chunk of this.chunks) {
      const part = Math.min(chunk.byteLength, n - filled);
      out.set(part === chunk.byteLength ? chunk : chunk.subarray(0, part), filled);
      filled += part;
      if (filled === n) break;
    }
    return out;
  }

  /** Removes and returns the first `n` bytes (a view when they lie in one chunk). */
  take(n: number): Uint8Array {
    const out = this.peek(n);
    this.discard(n);
    return out;
  }

  /** Drops up to `n` bytes from the front; returns how many were dropped. */
  discard(n: number): number {
    let left = Math.min(n, this.bytes);
    const dropped = left;
    while (left > 0) {
      const first = this.chunks[0]!;
      if (first.byteLength <= left) {
        this.chunks.shift();
        left -= first.byteLength;
      } else {
        this.chunks[0] = first.subarray(left);
        left = 0;
      }
    }
    this.bytes -= dropped;
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.bytes = 0;
  }
}
