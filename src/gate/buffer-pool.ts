// Large request buffers (READ replies, WRITE payloads) a connection reuses once it is done with
// them, instead of allocating one per request: fresh memory costs a page fault per 4 KiB page on
// first touch, a third of the frontend's time for 1 MiB requests (docs/performance.md). Buffers
// are matched by exact size, which is what block clients send over and over (fio, filesystems,
// nbdcopy), and at most `max_free_bytes` wait here. They are Buffers: copy with
// `new Uint8Array(b)`, never `b.slice()` (a view).

export class BufferPool {
  private readonly free: Uint8Array[] = [];
  private free_bytes = 0;

  constructor(
    /** Smaller buffers are left to the allocator (they come from its free lists anyway). */
    readonly min_bytes: number,
    readonly max_free_bytes: number,
  ) {}

  /** A buffer of exactly `bytes`; its contents are undefined. */
  take(bytes: number): Uint8Array {
    if (bytes >= this.min_bytes) {
      const at = this.free.findIndex((b) => b.byteLength === bytes);
      if (at >= 0) {
        const buf = this.free[at]!;
        this.free[at] = this.free[this.free.length - 1]!;
        this.free.pop();
        this.free_bytes -= bytes;
        return buf;
      }
      return Buffer.allocUnsafeSlow(bytes);
    }
    return Buffer.allocUnsafe(bytes);
  }

  /**
   * Hands back a buffer nothing references any more. Only whole buffers are kept (a view into a
   * larger one, e.g. part of a socket chunk, is left alone).
   */
  give(buf: Uint8Array): void {
    if (buf.byteLength < this.min_bytes || buf.byteOffset !== 0 || buf.byteLength !== buf.buffer.byteLength) return;
    if (this.free_bytes + buf.byteLength > this.max_free_bytes) return;
    this.free.push(buf);
    this.free_bytes += buf.byteLength;
  }

  get bytes_free(): number {
    return this.free_bytes;
  }
}
