// One open local component (hast.conf `local`): a regular file or a disk, as hastd accepts.
// Synchronous by design (see src/native.ts), but for flushAsync and readAsync, which wait for the
// disk on a helper thread; every failure is a NativeError naming the path.
//
// Invariants checked on every call: offsets and lengths are whole, non-negative and inside
// the component (size_bytes is fixed when it is opened); writes need a writable open.

import { native, NativeError, type SpliceResult } from "../native.ts";

export interface LocalDiskOptions {
  write: boolean;
  direct?: boolean; // O_DIRECT: buffers, offsets and lengths must be multiples of sector_bytes
  lock?: boolean;   // exclusive flock(): a second locked open fails with EWOULDBLOCK
}

/**
 * After a read the page cache missed, readSoon asks it (cachestat, ~0.45 µs) before this many
 * reads rather than try them at once: a read with RWF_NOWAIT that misses still starts the disk
 * read, on the calling thread, and the event loop then spent ~18 µs of kernel time per cold 4 KiB
 * read doing so (the helper thread then only waited). Reads that hit end the probing.
 */
export const PROBE_READS = 64;

export class LocalDisk {
  readonly path: string;
  readonly size_bytes: number;
  readonly sector_bytes: number;
  readonly kind: "file" | "block";
  readonly writable: boolean;
  #fd: number;
  #flush_unsupported: NativeError | undefined; // the first EOPNOTSUPP, returned ever after
  #async_in_flight = 0; // flushAsync and readAsync calls not yet settled
  #flush_last: Promise<void> = Promise.resolve(); // the newest fdatasync asked for, settled or not
  #flush_waiting: Promise<void> | null = null; // asked for and not started: later calls share it
  #twin: LocalDisk | null = null; // twin(): a second open file of this component, closed with it
  #probe_reads = 0; // readSoon calls left that ask the page cache first (see PROBE_READS)

  private constructor(path: string, fd: number, kind: "file" | "block", size_bytes: number,
    sector_bytes: number, writable: boolean) {
    this.path = path;
    this.#fd = fd;
    this.kind = kind;
    this.size_bytes = size_bytes;
    this.sector_bytes = sector_bytes;
    this.writable = writable;
  }

  static open(path: string, opts: LocalDiskOptions): LocalDisk {
    return LocalDisk.#adopt(native.open(path, { write: opts.write, direct: opts.direct === true }), path, opts);
  }

  /** Read-only, the open(2) itself on a helper thread: for the main process, whose event loop
   * serves every resource and must not wait on a device that hangs in open (held-component.ts). */
  static async openReadAsync(path: string): Promise<LocalDisk> {
    return LocalDisk.#adopt(await native.openReadAsync(path), path, { write: false });
  }

  /** The component behind a descriptor just opened: checked, then owned (closed on failure). */
  static #adopt(fd: number, path: string, opts: LocalDiskOptions): LocalDisk {
    try {
      const kind = native.kind(fd, path);
      if (kind !== "file" && kind !== "block") {
        // hastd rejects these with EFTYPE; Linux has no EFTYPE, so errno falls back to EINVAL.
        const errno = native.errnoValue("EFTYPE") ?? native.errno.EINVAL;
        throw new NativeError({ op: "open", path, errno, code: "EFTYPE",
          reason: `neither block device nor regular file (it is a ${kind === "char" ? "character device" : kind})` });
      }
      if (opts.lock === true) native.lockExclusive(fd, path);
      const size_bytes = native.mediaSize(fd, path);
      const sector_bytes = native.sectorSize(fd, path);
      if (!(sector_bytes > 0 && (sector_bytes & (sector_bytes - 1)) === 0)) {
        throw new Error(`open ${path}: sector size ${sector_bytes} is not a power of two`);
      }
      return new LocalDisk(path, fd, kind, size_bytes, sector_bytes, opts.write);
    } catch (err) {
      try {
        native.close(fd, path);
      } catch {
        // Nothing was written through fd; the error above is the one worth reporting.
      }
      throw err;
    }
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** False once fdatasync answered EOPNOTSUPP; later flushes then fail without a syscall. */
  get flush_supported(): boolean {
    return this.#flush_unsupported === undefined;
  }

  /** Fills buf from offset; a short read (component shrank underneath us) is EIO. */
  read(buf: Uint8Array, offset: number): void {
    this.#checkRange("pread", offset, buf.length);
    this.#checkRead(buf, offset, native.pread(this.#fd, this.path, buf, offset));
  }

  /** The bytes of buf's range the page cache holds, copied at once: how many (from the start;
   * 0 when the system cannot tell). readSoon reads the rest with readAsync. */
  readCached(buf: Uint8Array, offset: number): number {
    this.#checkRange("pread", offset, buf.length);
    return native.preadCached(this.#fd, this.path, buf, offset);
  }

  /**
   * Fills buf from offset without blocking on the disk: what the page cache holds is copied at
   * once (null when that was all of it, the common case, with no promise made), the rest is read
   * by readAsync, on its terms. A failure of the first part throws here.
   */
  readSoon(buf: Uint8Array, offset: number): Promise<void> | null {
    if (this.#probe_reads > 0) {
      this.#probe_reads--;
      this.#checkRange("pread", offset, buf.length); // thrown here, as readCached throws it
      if (native.rangeCached(this.#fd, this.path, offset, buf.length) === false) return this.#missed(buf, offset);
    }
    const cached = this.readCached(buf, offset);
    return cached === buf.length ? null : this.#missed(buf.subarray(cached), offset + cached);
  }

  /** readSoon of what the medium holds: the range's clean pages leave the page cache first (an
   * online verification compares what the disks return, not what hastd last wrote; pages still
   * waiting for write-back are read as cached). */
  readMedium(buf: Uint8Array, offset: number): Promise<void> | null {
    this.#checkRange("pread", offset, buf.length);
    this.#checkOpen("pread");
    native.dropCached(this.#fd, this.path, offset, buf.length);
    return this.readSoon(buf, offset);
  }

  #missed(rest: Uint8Array, offset: number): Promise<void> {
    this.#probe_reads = PROBE_READS;
    return this.readAsync(rest, offset);
  }

  /**
   * read() on a helper thread, for reads the page cache may not hold (a sync pass's chunks): the
   * event loop serves requests meanwhile. The owner lets every such read settle before it closes
   * the disk (close() asserts it), and keeps the range from changing until then.
   */
  async readAsync(buf: Uint8Array, offset: number): Promise<void> {
    this.#checkRange("pread", offset, buf.length);
    this.#checkOpen("pread");
    this.#async_in_flight++;
    try {
      this.#checkRead(buf, offset, await native.preadAsync(this.#fd, this.path, buf, offset));
    } finally {
      this.#async_in_flight--;
    }
  }

  #checkRead(buf: Uint8Array, offset: number, got: number): void {
    if (got !== buf.length) {
      throw new NativeError({ op: "pread", path: this.path, errno: native.errno.EIO, code: "EIO",
        where: ` at offset ${offset} (${buf.length} bytes)`, reason: `short read, got ${got} bytes` });
    }
  }

  /** Whether the page cache holds all of the range (false where the system cannot tell). */
  cached(offset: number, length: number): boolean {
    this.#checkRange("pread", offset, length);
    return native.rangeCached(this.#fd, this.path, offset, length) === true;
  }

  /** sendfile of the range to a nonblocking stream socket (`what` names it in errors): the bytes
   * the socket took now, from the start; -1 where the system has no sendfile. A range the page
   * cache does not hold would block on the disk (check cached() first). */
  sendTo(socket: number, what: string, offset: number, length: number): number {
    this.#checkRange("pread", offset, length);
    return native.sendfile(socket, what, this.#fd, this.path, offset, length);
  }

  /** Up to `length` bytes queued on a socket, written at `offset` straight from it (splice
   * through `pipe`, see native spliceIn); a failed write is reported in the result. */
  receive(socket: number, what: string, pipe: [number, number], offset: number, length: number, wait_us: number): SpliceResult {
    this.#checkWritable("pwrite", offset, length);
    // A closed descriptor (-1) would make spliceIn discard the bytes and report them written.
    this.#checkOpen("pwrite");
    return native.spliceIn(socket, what, pipe, this.#fd, this.path, offset, length, wait_us);
  }

  write(buf: Uint8Array, offset: number): void {
    this.#checkWritable("pwrite", offset, buf.length);
    native.pwrite(this.#fd, this.path, buf, offset);
  }

  /** buf at offset, durable on return: this range's pages and the device cache, not the file's
   * other dirty pages (a map update among buffered data). Fails as fdatasync (NativeError op). */
  writeDurable(buf: Uint8Array, offset: number): void {
    this.#checkWritable("pwrite", offset, buf.length);
    native.pwriteDurable(this.#fd, this.path, buf, offset);
  }

  /** fdatasync. Remembers EOPNOTSUPP like hastd's g_flush and does not ask again. */
  flush(): void {
    if (this.#flush_unsupported !== undefined) throw this.#flush_unsupported;
    try {
      native.fdatasync(this.#fd, this.path);
    } catch (err) {
      throw this.#flushFailed(err);
    }
  }

  /**
   * fdatasync on a helper thread: a real disk takes milliseconds to write its cache out, and the
   * event loop serves other requests meanwhile. It covers what was written before it was called.
   * One runs at a time: Linux reports a write-back error to whichever fsync of the file checks
   * first, so with two at once a flush covering the dropped pages could succeed while a later one
   * took its error. A call made while one runs shares the next, which starts when that one ends.
   * The owner lets every such flush settle before it closes the disk (close() asserts it).
   */
  async flushAsync(): Promise<void> {
    if (this.#flush_unsupported !== undefined) throw this.#flush_unsupported;
    this.#checkOpen("fdatasync");
    this.#async_in_flight++;
    try {
      await (this.#flush_waiting ??= this.#nextFlush());
    } catch (err) {
      throw this.#flushFailed(err);
    } finally {
      this.#async_in_flight--;
    }
  }

  /** An fdatasync that starts once the one asked for before it has ended. */
  #nextFlush(): Promise<void> {
    const next = this.#flush_last.then(() => {
      this.#flush_waiting = null;
      return native.fdatasyncAsync(this.#fd, this.path);
    });
    this.#flush_last = next.catch(() => undefined);
    return next;
  }

  #flushFailed(err: unknown): unknown {
    if (err instanceof NativeError && err.errno === native.errno.EOPNOTSUPP) this.#flush_unsupported = err;
    return err;
  }

  /** TRIM: punch hole on files (reads back zero), BLKDISCARD / DIOCGDELETE on disks. */
  discard(offset: number, length: number): void {
    this.#checkWritable("discard", offset, length);
    native.discard(this.#fd, this.path, offset, length);
  }

  /** Zeroes written like data (see native pwriteZeroes): a hole from the peer. */
  writeZeroes(offset: number, length: number): void {
    this.#checkWritable("pwrite", offset, length);
    native.pwriteZeroes(this.#fd, this.path, offset, length);
  }

  /** The range reads back as zeroes afterwards. */
  zero(offset: number, length: number): void {
    this.#checkWritable("zero-range", offset, length);
    native.zeroRange(this.#fd, this.path, offset, length);
  }

  /** Idempotent: a closed disk stays closed, and later I/O on it fails with EBADF. Never while a
   * flushAsync or readAsync is in flight: its helper thread would use whatever file reuses the
   * descriptor. */
  close(): void {
    const fd = this.#release();
    if (fd >= 0) native.close(fd, this.path);
  }

  /** close(), on a helper thread: the last close of a disk writes its dirty pages back first. */
  async closeAsync(): Promise<void> {
    const fd = this.#release();
    if (fd >= 0) await native.closeAsync(fd, this.path);
  }

  /**
   * A second open file of this component (opened once, no lock, closed with this one). Linux
   * reports a write-back error once per open file, to the first fsync on it that looks: I/O that
   * must learn of its own pages' errors whatever the other fsyncs take (the metadata and the map,
   * MetadataStore) goes through its own open file, which is told of every error too.
   */
  twin(): LocalDisk {
    this.#checkOpen("open");
    return (this.#twin ??= LocalDisk.open(this.path, { write: this.writable }));
  }

  /** The descriptor, no longer this object's (-1: closed already); refused while a helper-thread
   * call uses it. Its twin is closed now. */
  #release(): number {
    if (this.#fd < 0) return -1;
    if (this.#async_in_flight > 0) {
      throw new Error(`close ${this.path}: ${this.#async_in_flight} asynchronous operation(s) still in flight`);
    }
    this.#twin?.close();
    this.#twin = null;
    const fd = this.#fd;
    this.#fd = -1;
    return fd;
  }

  /** The helper-thread calls check here what the synchronous ones learn from the EBADF of their call. */
  #checkOpen(op: string): void {
    if (this.#fd < 0) throw new NativeError({ op, path: this.path, errno: native.errno.EBADF, reason: "component closed" });
  }

  #checkRange(op: string, offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 ||
      offset + length > this.size_bytes) {
      throw new RangeError(`${op} ${this.path} at offset ${offset} (${length} bytes): ` +
        `outside the component (size ${this.size_bytes} bytes)`);
    }
  }

  #checkWritable(op: string, offset: number, length: number): void {
    this.#checkRange(op, offset, length);
    if (!this.writable) {
      throw new NativeError({ op, path: this.path, errno: native.errno.EBADF, code: "EBADF",
        where: ` at offset ${offset} (${length} bytes)`, reason: "component opened read-only" });
    }
  }
}
