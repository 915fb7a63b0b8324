// Bytes received on a socket, kept as the chunks they arrived in. Data arrives with arbitrary
// boundaries; a message that lies inside one chunk is returned as a view (no copy), one that
// spans chunks is assembled once with Uint8Array.set (native memcpy). Never a JS byte loop.
// Consuming bytes moves an offset into the first chunk: no subarray per request header.
//
// A large message that has not fully arrived can instead be filled in its final buffer: first
// from the chunks held here, then straight from the socket (`fill` with a QueuedRead), which
// skips the event loop's fresh buffer per read and the assembly copy (docs/performance.md).
//
// With `free_consumed`, a large chunk no view was taken of is freed as soon as it is consumed
// (ArrayBuffer.transfer(0)) rather than left to the garbage collector: under 1 MiB writes the
// socket reads are hundreds of MiB per second of garbage, and what the collector had not yet
// reclaimed was ~20 MiB of a worker's peak RSS. With `copy_messages` as well, every message is
// copied out (into the caller's reused buffers), so no view outlives a chunk and chunks of any
// size are freed once consumed: the allocator then hands the same warm memory to the next socket
// read, where a chunk left to the collector made the next read fault fresh pages in
// (docs/performance.md, eighth round).

/** Reads into `into` what the kernel queued on the socket behind the bytes delivered so far: the
 * count, or 0 when nothing came (or the stream ended). With nothing queued and `wait_us` > 0 it
 * first waits that long at most for bytes to arrive (the thread blocks meanwhile). */
export type QueuedRead = (into: Uint8Array, wait_us: number) => number;

/**
 * Where a large message may go instead of a buffer: the secondary's disk, for a large WRITE,
 * which the socket's owner then moves there without a copy through memory (splice).
 */
export interface MessageSink {
  /** Bytes of the message that came through the event loop, at `at` within it; not kept. */
  write(bytes: Uint8Array, at: number): void;
  /** Takes up to `max` bytes queued on the socket behind the delivered ones, for `at` on (waiting
   * at most `wait_us` when none are): the count, 0 when none came. */
  take(at: number, max: number, wait_us: number): number;
}

/** Messages smaller than this wait for the event loop: a syscall costs more than the copy it saves. */
export const QUEUED_READ_MIN_BYTES = 64 * 1024;
/**
 * Once a large message started to arrive, the rest is normally on its way (the sender is blocked
 * on a full socket buffer, ~200 KiB for a local socket): takeMessage waits for it, up to
 * QUEUED_WAITS_MAX waits of QUEUED_WAIT_US per message (2 ms blocked at most), rather than go back
 * to the event loop, whose next read would bring those bytes through a fresh buffer and one more
 * copy (and leave the buffer to the garbage collector). A wait that times out ends the waiting
 * for that message: a sender that paused is left to the event loop.
 */
export const QUEUED_WAIT_US = 250;
export const QUEUED_WAITS_MAX = 8;

/** Consumed chunks smaller than this are left to the collector. */
const FREE_CONSUMED_MIN_BYTES = 64 * 1024;

export class ReceiveBuffer {
  private chunks: Uint8Array[] = [];
  /** The chunk a view was last taken of (peek/take): never freed. Views are only taken of the
   * head chunk, so a chunk that had one is still this one when it is consumed. */
  private lent: Uint8Array | null = null;
  /** Index of the first live chunk in `chunks` (consumed ones are dropped in batches). */
  private first = 0;
  /** Bytes of chunks[first] already consumed. */
  private head_offset = 0;
  /** Total bytes held. */
  bytes = 0;
  /** Consumed chunks smaller than this are left to the collector (free_consumed). */
  private readonly free_min_bytes: number;
  /** A message being filled in its final buffer (takeMessage) or handed to a sink (sinkMessage). */
  private partial: { to: Uint8Array | MessageSink; n: number; filled: number; waits: { left: number } } | null = null;

  /**
   * free_consumed: pushed chunks are fresh buffers nothing else refers to (Bun's socket reads);
   * large ones are freed once consumed. copy_messages: takeMessage always copies into `alloc`,
   * and with free_consumed any consumed chunk is freed (see the top).
   */
  constructor(private readonly opts: { free_consumed?: boolean; copy_messages?: boolean } = {}) {
    this.free_min_bytes = opts.copy_messages ? 0 : FREE_CONSUMED_MIN_BYTES;
  }

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
    if (first.byteLength - start >= n) {
      this.lent = first;
      return first.subarray(start, start + n);
    }
    const out = alloc(n);
    this.copyOut(out, 0, n);
    return out;
  }

  /** Removes and returns the first `n` bytes (a view when they lie in one chunk). */
  take(n: number, alloc?: (n: number) => Uint8Array): Uint8Array {
    const out = this.peek(n, alloc);
    this.discard(n);
    return out;
  }

  /**
   * Removes and returns the next message of `n` bytes once all of it is here, else null (ask
   * again, for the same message, after the next push). Held whole, it comes as from take() (copied
   * into `alloc(n)` with copy_messages). With
   * `read`, one of QUEUED_READ_MIN_BYTES or more that has not fully arrived is filled in `alloc(n)`:
   * held bytes move there at once, the rest comes from `read` (waiting for it, see QUEUED_WAIT_US)
   * and later pushes (see fill).
   */
  takeMessage(n: number, alloc: (n: number) => Uint8Array, read?: QueuedRead): Uint8Array | null {
    if (this.partial === null) {
      if (this.bytes >= n) return this.opts.copy_messages ? this.copyMessage(n, alloc) : this.take(n, alloc);
      if (read === undefined || n < QUEUED_READ_MIN_BYTES) return null;
      this.partial = { to: alloc(n), n, filled: 0, waits: { left: QUEUED_WAITS_MAX } };
    }
    const p = this.partial;
    if (!(p.to instanceof Uint8Array) || p.n !== n) throw new Error(`receive buffer: message of ${n} bytes asked while another is being filled`);
    p.filled = this.fill(p.to, p.filled, read, p.waits);
    if (p.filled < n) return null;
    this.partial = null;
    return p.to;
  }

  /**
   * Hands the next message of `n` bytes to `sink` as it arrives: held bytes at once, then, with
   * `direct` (the socket may be read now, as for a QueuedRead), what is queued on the socket,
   * waiting for the rest as takeMessage does. True once all of it went there; else ask again,
   * with the same sink, after the next push.
   */
  sinkMessage(n: number, sink: MessageSink, direct: boolean): boolean {
    this.partial ??= { to: sink, n, filled: 0, waits: { left: QUEUED_WAITS_MAX } };
    const p = this.partial;
    if (p.to !== sink || p.n !== n) throw new Error(`receive buffer: message of ${n} bytes sunk while another is being filled`);
    p.filled += this.drainTo(sink, p.filled, Math.min(this.bytes, n - p.filled));
    while (direct && p.filled < n) {
      const got = readOrWait((wait_us) => sink.take(p.filled, n - p.filled, wait_us), p.waits);
      if (got <= 0) break;
      p.filled += got;
    }
    if (p.filled < n) return false;
    this.partial = null;
    return true;
  }

  /** Writes the first `n` held bytes to `sink` (as views of the chunks) and consumes them. */
  private drainTo(sink: MessageSink, at: number, n: number): number {
    let done = 0;
    while (done < n) {
      const part = Math.min(this.headBytes(), n - done);
      sink.write(this.head!.subarray(this.head_offset, this.head_offset + part), at + done);
      done += this.discard(part);
    }
    return done;
  }

  private copyMessage(n: number, alloc: (n: number) => Uint8Array): Uint8Array {
    const out = alloc(n);
    this.fill(out, 0);
    return out;
  }

  /** With nothing held, reads what the socket queued behind the delivered bytes, up to `n`, into a
   * new array it then holds (waiting up to `wait_us` for bytes to come); returns the count. */
  pull(n: number, read: QueuedRead, wait_us = 0): number {
    if (this.bytes !== 0) throw new Error("receive buffer: queued read with bytes still held");
    const into = new Uint8Array(n);
    let got = read(into, 0);
    if (got <= 0 && wait_us > 0) got = read(into, wait_us);
    if (got > 0) this.push(got === n ? into : into.subarray(0, got));
    return got;
  }

  /** Bytes of the message takeMessage is filling that it already holds (they no longer count in `bytes`). */
  get partial_bytes(): number {
    return this.partial?.filled ?? 0;
  }

  /**
   * Fills `out` from `at` on, first with held bytes, then, while it is short, with what `read`
   * returns; returns the new fill level. `read` runs only once nothing is held, so bytes stay
   * in stream order. When nothing is queued, it waits for more while `waits.left` allows (each
   * wait uses one; one that brings nothing uses them all).
   */
  fill(out: Uint8Array, at: number, read?: QueuedRead, waits: { left: number } = { left: 0 }): number {
    const take = Math.min(this.bytes, out.byteLength - at);
    this.copyOut(out, at, take);
    at += this.discard(take);
    while (read !== undefined && at < out.byteLength) {
      if (this.bytes !== 0) throw new Error("receive buffer: queued read with bytes still held");
      const got = readOrWait((wait_us) => read(out.subarray(at), wait_us), waits);
      if (got <= 0) break;
      at += got;
    }
    return at;
  }

  /** Copies the first `n` held bytes into `out` at `at`, without consuming them. */
  private copyOut(out: Uint8Array, at: number, n: number): void {
    for (let i = this.first, done = 0; done < n; i++) {
      const chunk = this.chunks[i]!;
      const start = i === this.first ? this.head_offset : 0;
      const part = Math.min(chunk.byteLength - start, n - done);
      if (part <= BYTE_LOOP_MAX) {
        for (let k = 0, to = at + done; k < part; k++) out[to + k] = chunk[start + k]!;
      } else {
        out.set(part === chunk.byteLength ? chunk : chunk.subarray(start, start + part), at + done);
      }
      done += part;
    }
  }

  /** Drops up to `n` bytes from the front; returns how many were dropped. */
  discard(n: number): number {
    const dropped = Math.min(n, this.bytes);
    let left = dropped;
    while (left > 0) {
      const rest = this.chunks[this.first]!.byteLength - this.head_offset;
      if (rest <= left) {
        if (this.opts.free_consumed) this.free(this.chunks[this.first]!);
        this.chunks[this.first++] = EMPTY;
        this.head_offset = 0;
        left -= rest;
      } else {
        this.head_offset += left;
        left = 0;
      }
    }
    this.bytes -= dropped;
    if (this.bytes === 0) this.dropChunks();
    else if (this.first >= COMPACT_AFTER_CHUNKS) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
    return dropped;
  }

  private free(chunk: Uint8Array): void {
    if (chunk === this.lent || chunk.byteLength < this.free_min_bytes) return;
    // Only a chunk that is its whole ArrayBuffer: a view into a larger one is not ours to free.
    if (chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength || !(chunk.buffer instanceof ArrayBuffer)) return;
    chunk.buffer.transfer(0);
  }

  /** Forgets everything held, a message being filled included. */
  clear(): void {
    this.dropChunks();
    this.partial = null;
  }

  private dropChunks(): void {
    this.chunks.length = 0;
    this.first = 0;
    this.head_offset = 0;
    this.bytes = 0;
  }
}

/** One read of what is queued; when it brings nothing and `waits` allows, one bounded wait for
 * more (a wait that brings nothing ends the waiting for this message). */
function readOrWait(read: (wait_us: number) => number, waits: { left: number }): number {
  const got = read(0);
  if (got > 0 || waits.left === 0) return got;
  waits.left--;
  const waited = read(QUEUED_WAIT_US);
  if (waited <= 0) waits.left = 0;
  return waited;
}

const EMPTY = new Uint8Array(0);
/** Copies up to this size (a frame header) go byte by byte: cheaper than a view and a set(). */
const BYTE_LOOP_MAX = 64;
/** Assembled messages above this size are allocated without zeroing (every byte is overwritten). */
const UNINITIALIZED_FROM_BYTES = 4096;

function allocate(n: number): Uint8Array {
  return n > UNINITIALIZED_FROM_BYTES ? Buffer.allocUnsafe(n) : new Uint8Array(n);
}
/** Consumed chunk slots kept before the array is compacted (amortizes Array.shift). */
const COMPACT_AFTER_CHUNKS = 64;
