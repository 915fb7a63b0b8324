// Request buffers (READ replies, WRITE payloads) a connection reuses once it is done with them,
// instead of allocating one per request: fresh memory costs a page fault per 4 KiB page on first
// touch, a third of the frontend's time for 1 MiB requests (docs/performance.md). Buffers
// are matched by exact size, which is what block clients send over and over (fio, filesystems,
// nbdcopy), and at most `max_free_bytes` wait here. They are Buffers: copy with
// `new Uint8Array(b)`, never `b.slice()` (a view).

export class BufferPool {
  /** Free buffers by size. */
  private readonly free = new Map<number, Uint8Array[]>();
  private free_bytes = 0;

  constructor(
    /** Smaller buffers are left to the allocator (they come from its free lists anyway). */
    readonly min_bytes: number,
    readonly max_free_bytes: number,
  ) {}

  /** A buffer of exactly `bytes`; its contents are undefined. */
  take(bytes: number): Uint8Array {
    if (bytes < this.min_bytes) return Buffer.allocUnsafe(bytes);
    const list = this.free.get(bytes);
    const buf = list?.pop();
    if (buf === undefined) return Buffer.allocUnsafeSlow(bytes);
    if (list!.length === 0) this.free.delete(bytes);
    this.free_bytes -= bytes;
    return buf;
  }

  /**
   * Hands back a buffer nothing references any more. Only whole buffers are kept (a view into a
   * larger one, e.g. part of a socket chunk, is left alone).
   */
  give(buf: Uint8Array): void {
    if (buf.byteLength < this.min_bytes || buf.byteOffset !== 0 || buf.byteLength !== buf.buffer.byteLength) return;
    if (this.free_bytes + buf.byteLength > this.max_free_bytes) return;
    let list = this.free.get(buf.byteLength);
    if (list === undefined) this.free.set(buf.byteLength, (list = []));
    list.push(buf);
    this.free_bytes += buf.byteLength;
  }

  get bytes_free(): number {
    return this.free_bytes;
  }
}
