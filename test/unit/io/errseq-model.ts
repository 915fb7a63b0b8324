// Linux's write-back error reporting (errseq), modelled under the real LocalDisk by replacing the
// native calls it makes for the files of a Model: pages are cached over stable storage; a
// write-back can drop pages (failNext) and raise the file's error, which each open file (each
// descriptor here) is told of once, by the first sync on it that looks. A sync made on the event
// loop while a pool fdatasync runs on another descriptor or the same one lets the pool one look
// first (the race that matters). Built on a review's scratch model (session 32).
import { rmSync, truncateSync, writeFileSync } from "node:fs";
import { LocalDisk } from "../../../src/io/disk.ts";
import { computeLayout } from "../../../src/core/layout.ts";
import type { Metadata } from "../../../src/core/metadata.ts";
import { MetadataStore } from "../../../src/io/metadata-store.ts";
import { native, NativeError } from "../../../src/native.ts";
import { PAGE, readPages, writePages } from "../daemon/writeback-disk.ts";

export { PAGE };

const original = { ...native };

interface PoolSync {
  fd: number;
  result?: NativeError | null;
}

export class ErrseqModel {
  readonly stable = new Map<number, Uint8Array>();
  private readonly cache = new Map<number, Uint8Array>();
  private wb_err = 0;
  private readonly seen = new Map<number, number>();
  private readonly in_pool: PoolSync[] = [];
  private drop: ((page: number) => boolean) | null = null;
  readonly fds = new Set<number>();
  pool_delay_ms = 20;

  /** The next write-back drops the cached pages `which` picks and raises the error. */
  failNext(which: (page: number) => boolean): void {
    this.drop = which;
  }

  read(buf: Uint8Array, offset: number, stable = false): void {
    readPages(this.stable, this.cache, buf, offset, stable);
  }

  write(buf: Uint8Array, offset: number): void {
    writePages(this.stable, this.cache, buf, offset);
  }

  /** Writes back the cached pages `pages` picks (all by default); true when it dropped some. */
  private writeback(pages: (page: number) => boolean = () => true): boolean {
    let dropped = false;
    for (const [p, page] of [...this.cache]) {
      if (!pages(p)) continue;
      this.cache.delete(p);
      if (this.drop?.(p)) dropped = true;
      else this.stable.set(p, page);
    }
    if (dropped) {
      this.wb_err++;
      this.drop = null;
    }
    return dropped;
  }

  private check(fd: number): NativeError | null {
    if ((this.seen.get(fd) ?? 0) === this.wb_err) return null;
    this.seen.set(fd, this.wb_err);
    return new NativeError({ op: "fdatasync", path: "/errseq-model", errno: native.errno.EIO });
  }

  /** A sync on the event loop: a pool fdatasync in flight looks first at an error it raised. */
  private syncNow(fd: number, pages?: (page: number) => boolean): void {
    if (this.writeback(pages)) for (const s of this.in_pool) s.result ??= this.check(s.fd);
    const err = this.check(fd);
    if (err) throw err;
  }

  fdatasync(fd: number): void {
    this.syncNow(fd);
  }

  /** RWF_DSYNC: the range's pages only, and the file's error. */
  pwriteDurable(fd: number, buf: Uint8Array, offset: number): void {
    this.write(buf, offset);
    const first = Math.floor(offset / PAGE), last = Math.floor((offset + buf.length - 1) / PAGE);
    this.syncNow(fd, (p) => p >= first && p <= last);
  }

  fdatasyncAsync(fd: number): Promise<void> {
    const s: PoolSync = { fd };
    this.in_pool.push(s);
    return new Promise((resolve, reject) => setTimeout(() => {
      if (s.result === undefined) {
        this.writeback();
        s.result = this.check(fd);
      }
      this.in_pool.splice(this.in_pool.indexOf(s), 1);
      if (s.result) reject(s.result);
      else resolve();
    }, this.pool_delay_ms));
  }
}

/** Routes the native calls of the model's descriptors to it (uninstall() puts them back). */
export function install(m: ErrseqModel): void {
  const mine = (fd: number) => m.fds.has(fd);
  const n = native as unknown as Record<string, unknown>;
  n.open = (path: string, opts: { write: boolean }) => {
    const fd = original.open(path, opts);
    m.fds.add(fd);
    return fd;
  };
  n.pwrite = (fd: number, p: string, buf: Uint8Array, off: number) => (mine(fd) ? (m.write(buf, off), buf.length) : original.pwrite(fd, p, buf, off));
  n.pwriteDurable = (fd: number, p: string, buf: Uint8Array, off: number) =>
    mine(fd) ? (m.pwriteDurable(fd, buf, off), buf.length) : original.pwriteDurable(fd, p, buf, off);
  n.pread = (fd: number, p: string, buf: Uint8Array, off: number) => (mine(fd) ? (m.read(buf, off), buf.length) : original.pread(fd, p, buf, off));
  n.preadCached = (fd: number, p: string, buf: Uint8Array, off: number) => (mine(fd) ? (m.read(buf, off), buf.length) : original.preadCached(fd, p, buf, off));
  n.rangeCached = (fd: number, p: string, o: number, l: number) => (mine(fd) ? true : original.rangeCached(fd, p, o, l));
  n.fdatasync = (fd: number, p: string) => (mine(fd) ? m.fdatasync(fd) : original.fdatasync(fd, p));
  n.fdatasyncAsync = (fd: number, p: string) => (mine(fd) ? m.fdatasyncAsync(fd) : original.fdatasyncAsync(fd, p));
}

export function uninstall(): void {
  Object.assign(native as unknown as Record<string, unknown>, original);
}

/** A real LocalDisk over a sparse 1 GiB scratch file whose I/O goes to the model. */
export function openModelDisk(file: string): LocalDisk {
  writeFileSync(file, "");
  truncateSync(file, 1024 * 1024 * 1024);
  return LocalDisk.open(file, { write: true });
}

/** A daemon's component over the model: its metadata written, read back, the store on the twin. */
export function modelComponent(disk: LocalDisk, prevrole: Metadata["prevrole"]): { meta: Metadata; store: MetadataStore } {
  const layout = computeLayout({ mediasize: 1024 * 1024 * 1024, sectorsize: 512, extentsize: 0, keepdirty: 0 });
  const meta: Metadata = {
    resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
    mapsize: layout.mapsize, sectorsize: 512, resuid: 1n, localcnt: 1n, remotecnt: 1n, prevrole, flags: 0,
  };
  const store = new MetadataStore(disk, true);
  store.initialize(meta);
  store.read();
  return { meta, store };
}

export function removeModelFile(file: string): void {
  rmSync(file, { force: true });
}
