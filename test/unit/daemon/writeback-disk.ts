// A component that fails as Linux does on a write-back error: the failed pages are dropped
// (stable storage keeps the old data) and the next fsync on the file reports EIO, once. pwrites
// below map_end (metadata and map), or below the map (metadata alone), can be made to fail too.
import { ACTIVEMAP_OFFSET } from "../../../src/core/layout.ts";
import { native, NativeError } from "../../../src/native.ts";

export const PAGE = 4096;

/** Pages by number: what a read sees (the cache over stable storage, or stable storage alone). */
export function readPages(stable: Map<number, Uint8Array>, cache: Map<number, Uint8Array>, buf: Uint8Array, offset: number, stable_only = false): void {
  for (let i = 0; i < buf.length;) {
    const p = Math.floor((offset + i) / PAGE), o = (offset + i) % PAGE, n = Math.min(PAGE - o, buf.length - i);
    const page = (stable_only ? undefined : cache.get(p)) ?? stable.get(p) ?? new Uint8Array(PAGE);
    buf.set(page.subarray(o, o + n), i);
    i += n;
  }
}

/** A write into the cache, page by page (each page copied from what a read would see). */
export function writePages(stable: Map<number, Uint8Array>, cache: Map<number, Uint8Array>, buf: Uint8Array, offset: number): void {
  for (let i = 0; i < buf.length;) {
    const p = Math.floor((offset + i) / PAGE), o = (offset + i) % PAGE, n = Math.min(PAGE - o, buf.length - i);
    const page = (cache.get(p) ?? stable.get(p) ?? new Uint8Array(PAGE)).slice();
    page.set(buf.subarray(i, i + n), o);
    cache.set(p, page);
    i += n;
  }
}

/** Pages in a cache over stable storage; flush() moves them, or reports the write-back error. */
export class WritebackDisk {
  readonly path = "/fake/component";
  readonly sector_bytes = 512;
  readonly stable = new Map<number, Uint8Array>();
  private readonly cache = new Map<number, Uint8Array>();
  private writeback_error = false;
  /** pwrites below this offset (metadata and map) fail while map_pwrite_failures > 0. */
  map_end = 0;
  map_pwrite_failures = 0;
  /** pwrites of the metadata slots (below ACTIVEMAP_OFFSET) fail while meta_pwrite_failures > 0. */
  meta_pwrite_failures = 0;

  read(buf: Uint8Array, offset: number, stable = false): void {
    readPages(this.stable, this.cache, buf, offset, stable);
  }

  cached(): boolean {
    return true;
  }

  readSoon(buf: Uint8Array, offset: number): null {
    this.read(buf, offset);
    return null;
  }

  write(buf: Uint8Array, offset: number): void {
    if (this.map_pwrite_failures > 0 && offset < this.map_end) {
      this.map_pwrite_failures--;
      throw new NativeError({ op: "pwrite", path: this.path, errno: native.errno.EIO });
    }
    if (this.meta_pwrite_failures > 0 && offset < ACTIVEMAP_OFFSET) {
      this.meta_pwrite_failures--;
      throw new NativeError({ op: "pwrite", path: this.path, errno: native.errno.EIO });
    }
    writePages(this.stable, this.cache, buf, offset);
  }

  flush(): void {
    if (this.writeback_error) {
      this.writeback_error = false;
      throw new NativeError({ op: "fdatasync", path: this.path, errno: native.errno.EIO });
    }
    for (const [p, page] of this.cache) this.stable.set(p, page);
    this.cache.clear();
  }

  /** RWF_DSYNC: the range's pages reach stable storage; the file's write-back error is reported
   * here too (the kernel's check is per file, not per range). */
  writeDurable(buf: Uint8Array, offset: number): void {
    this.write(buf, offset);
    if (this.writeback_error) {
      this.writeback_error = false;
      throw new NativeError({ op: "fdatasync", path: this.path, errno: native.errno.EIO });
    }
    const last = Math.floor((offset + buf.length - 1) / PAGE);
    for (let p = Math.floor(offset / PAGE); p <= last; p++) {
      const page = this.cache.get(p);
      if (page === undefined) continue;
      this.stable.set(p, page);
      this.cache.delete(p);
    }
  }

  async flushAsync(): Promise<void> {
    await Promise.resolve();
    this.flush();
  }

  /** The kernel failed to write back the cached pages from `offset` on: dropped, reported once. */
  failWriteback(offset: number): void {
    for (const p of [...this.cache.keys()]) if (p * PAGE >= offset) this.cache.delete(p);
    this.writeback_error = true;
  }

  close(): void {}
}
