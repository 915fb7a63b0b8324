// A simulated component: the metadata area and activemap region as bytes, the data region as one
// content version per sector (every write carries a fresh version, so comparing data is comparing
// numbers). Writes land in a volatile cache that a flush makes durable; a power loss keeps some of
// the unflushed writes, in issue order up to a random point or (a reordering cache) any subset,
// torn sector by sector (so a metadata slot or a map block can be torn). A failed data write
// changes nothing. A failed flush leaves the cache volatile or, with `drops_on_eio` (the
// simulation's `linux_flush` option), may do what Linux does on a write-back error: write back
// some cached sectors and drop the others (a later read returns what is on stable storage, a later
// flush succeeds).
import { ACTIVEMAP_OFFSET, METADATA_AREA_BYTES } from "../../src/core/layout.ts";
import type { Rng } from "./random.ts";
import type { Scheduler } from "./scheduler.ts";

export const TEAR_BYTES = 512;

export interface DiskFaults {
  latency_ms_max: number;
  /** Probabilities per data operation. */
  eio_read: number;
  eio_write: number;
  eio_flush: number;
}

/** `issued`: the write's place in issue order (a flush covers those issued before it). */
type CacheEntry =
  | { kind: "bytes"; offset: number; bytes: Uint8Array; issued: number }
  | { kind: "data"; first: number; versions: Uint32Array; issued: number };

interface PendingOp {
  first: number;
  count: number;
  write: boolean;
  done_ms: number;
}

/** Unflushed writes kept before a run counts as leaking them (bounds memory per disk). */
const CACHE_ENTRIES_MAX = 100_000;

export class SimDisk {
  readonly control_bytes: number;
  control: Uint8Array;
  control_durable: Uint8Array;
  data: Uint32Array;
  data_durable: Uint32Array;
  faults: DiskFaults = { latency_ms_max: 3, eio_read: 0, eio_write: 0, eio_flush: 0 };
  private cache: CacheEntry[] = [];
  /** Writes issued so far. */
  private issued = 0;
  private pending: PendingOp[] = [];
  /** Bumped by a power loss: operations still queued then never happen. */
  private power_epoch = 0;

  constructor(
    readonly sectors: number,
    mapsize: number,
    private readonly clock: Scheduler,
    private readonly rng: Rng,
  ) {
    this.control_bytes = METADATA_AREA_BYTES + mapsize;
    this.control = new Uint8Array(this.control_bytes);
    this.control_durable = new Uint8Array(this.control_bytes);
    this.data = new Uint32Array(sectors);
    this.data_durable = new Uint32Array(sectors);
  }

  // ---- metadata area and activemap: synchronous, like MetadataStore over LocalDisk ----

  readControl(offset: number, length: number): Uint8Array {
    return this.control.slice(offset, offset + length);
  }

  writeControl(offset: number, bytes: Uint8Array): void {
    if (offset < 0 || offset + bytes.length > this.control_bytes) throw new Error(`control write ${offset}+${bytes.length} out of range`);
    this.control.set(bytes, offset);
    this.remember({ kind: "bytes", offset, bytes: bytes.slice(), issued: this.issued++ });
  }

  flushNow(): void {
    this.control_durable.set(this.control);
    this.data_durable.set(this.data);
    this.cache = [];
  }

  /**
   * RWF_DSYNC of a control range (MetadataStore.writeMap's pieces): the cached writes to that range
   * reach stable storage, in issue order; nothing else does (what they overlap outside the range
   * stays cached, as the rest of the file's dirty pages do).
   */
  syncControlRange(offset: number, length: number): void {
    const end = offset + length;
    const kept: CacheEntry[] = [];
    for (const e of this.cache) {
      if (e.kind !== "bytes" || e.offset >= end || e.offset + e.bytes.length <= offset) {
        kept.push(e);
        continue;
      }
      const from = Math.max(offset, e.offset);
      const to = Math.min(end, e.offset + e.bytes.length);
      this.control_durable.set(e.bytes.subarray(from - e.offset, to - e.offset), from);
      if (e.offset < from) kept.push({ kind: "bytes", offset: e.offset, bytes: e.bytes.subarray(0, from - e.offset), issued: e.issued });
      if (to < e.offset + e.bytes.length) kept.push({ kind: "bytes", offset: to, bytes: e.bytes.subarray(to - e.offset), issued: e.issued });
    }
    this.cache = kept;
  }

  /** Data sectors whose cached content is not on stable storage. */
  cachedSectors(): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.data.length; s++) if (this.data[s] !== this.data_durable[s]) out.push(s);
    return out;
  }

  mapBitDurable(extent: number): boolean {
    return (this.control_durable[ACTIVEMAP_OFFSET + (extent >> 3)]! & (1 << (extent & 7))) !== 0;
  }

  // ---- data region: asynchronous, overlapping operations finish in issue order ----

  read(first: number, count: number, done: (versions: Uint32Array | null) => void): void {
    this.schedule(first, count, false, () => {
      done(this.rng.chance(this.faults.eio_read) ? null : this.data.slice(first, first + count));
    });
  }

  /** `may_fail`: whether write errors are injected for this caller (see docs/testing.md). */
  write(first: number, versions: Uint32Array, may_fail: boolean, done: (ok: boolean) => void): void {
    const count = versions.length;
    const issued = this.issued++;
    this.schedule(first, count, true, () => {
      if (may_fail && this.rng.chance(this.faults.eio_write)) return done(false);
      this.data.set(versions, first);
      this.remember({ kind: "data", first, versions: versions.slice(), issued });
      done(true);
    });
  }

  /**
   * Waits for every operation issued before it, then makes those writes durable (unless EIO), as
   * fdatasync promises; of the writes issued since, which may have landed meanwhile, the write-back
   * takes all or (half the time) a random prefix.
   */
  flush(done: (ok: boolean) => void): void {
    const barrier_ms = this.pending.reduce((t, op) => Math.max(t, op.done_ms), 0);
    const covers = this.issued;
    this.schedule(0, 0, false, () => done(this.flushInPlace(false, covers)), barrier_ms);
  }

  /** Makes the cache durable now (the writes issued before `covers`, see flush), or fails as a
   * flush may (EIO); whether it succeeded. With `only_if_cached`, a flush with nothing cached
   * succeeds (the faults modelled are write-back's). */
  flushInPlace(only_if_cached = false, covers = this.issued): boolean {
    if (only_if_cached && this.cache.length === 0) return true;
    if (this.rng.chance(this.faults.eio_flush)) {
      this.failFlush();
      return false;
    }
    const later = this.cache.filter((e) => e.issued >= covers);
    const taken = later.length > 0 && this.rng.chance(0.5) ? this.rng.int(later.length + 1) : later.length;
    const left = new Set(later.slice(taken));
    for (const e of this.cache) {
      if (left.has(e)) continue;
      if (e.kind === "bytes") this.control_durable.set(e.bytes, e.offset);
      else this.data_durable.set(e.versions, e.first);
    }
    this.cache = this.cache.filter((e) => left.has(e));
    return true;
  }

  /** A flush that failed (EIO): the cache stays volatile, or with `drops_on_eio` half the time
   * some cached sectors are dropped. */
  failFlush(): void {
    this.failed_flushes++;
    if (this.drops_on_eio && this.rng.chance(0.5)) this.dropOnFailedFlush();
  }

  /** Whether a failed flush may drop cached sectors (simulation option `linux_flush`). */
  drops_on_eio = false;
  /** Flushes failed so far (the main process's flush for the cache epoch learns of each). */
  failed_flushes = 0;
  /** Told which data sectors a failed flush dropped, and the value each held in the cache. */
  on_drop: ((sectors: number[], values: number[]) => void) | null = null;

  /** Linux's write-back error: each cached sector is written back or dropped (the page is marked
   * clean and evicted: reads return what is on stable storage), and a later flush succeeds. */
  private dropOnFailedFlush(): void {
    const touched = new Set<number>();
    for (const entry of this.cache) {
      if (entry.kind === "bytes") this.control_durable.set(entry.bytes, entry.offset);
      else for (let i = 0; i < entry.versions.length; i++) touched.add(entry.first + i);
    }
    const dropped: number[] = [];
    const values: number[] = [];
    for (const s of touched) {
      if (this.rng.chance(0.5)) this.data_durable[s] = this.data[s]!;
      else if (this.data[s] !== this.data_durable[s]) {
        values.push(this.data[s]!);
        this.data[s] = this.data_durable[s]!;
        dropped.push(s);
      }
    }
    this.cache = [];
    if (dropped.length > 0) this.on_drop?.(dropped, values);
  }

  /**
   * Power loss: queued operations vanish; of the unflushed writes, what reaches stable storage is
   * either a prefix in issue order (a FIFO cache) or, as a real cache may, any subset (a later write
   * persisted before an earlier one). A kept write lands whole or torn sector by sector (so a
   * metadata slot or a map block can be torn); writes to the same sector land in issue order.
   */
  powerLoss(): void {
    this.power_epoch++;
    this.pending = [];
    const kept = this.survivors();
    for (let n = 0; n < this.cache.length; n++) {
      const fate = kept[n]!;
      if (fate === "lost") continue;
      const entry = this.cache[n]!;
      const torn = fate === "torn";
      if (entry.kind === "bytes") {
        for (let at = 0; at < entry.bytes.length; at += TEAR_BYTES) {
          if (!torn || this.rng.chance(0.5)) this.control_durable.set(entry.bytes.subarray(at, at + TEAR_BYTES), entry.offset + at);
        }
      } else {
        for (let i = 0; i < entry.versions.length; i++) {
          if (!torn || this.rng.chance(0.5)) this.data_durable[entry.first + i] = entry.versions[i]!;
        }
      }
    }
    this.cache = [];
    this.control.set(this.control_durable);
    this.data.set(this.data_durable);
  }

  /** What becomes of each unflushed write at a power loss. */
  private survivors(): ("kept" | "torn" | "lost")[] {
    const n = this.cache.length;
    if (this.rng.chance(0.5)) {
      // FIFO: everything before a random write, that one torn, nothing after.
      const cut = this.rng.int(n + 1);
      return Array.from({ length: n }, (_, i) => (i < cut - 1 ? "kept" : i === cut - 1 ? "torn" : "lost"));
    }
    // Reordering: each write independently kept, torn or lost.
    const keep = this.rng.float();
    return Array.from({ length: n }, () => (!this.rng.chance(keep) ? "lost" : this.rng.chance(0.25) ? "torn" : "kept"));
  }

  get unflushed_entries(): number {
    return this.cache.length;
  }

  private remember(entry: CacheEntry): void {
    if (this.cache.length >= CACHE_ENTRIES_MAX) throw new Error(`more than ${CACHE_ENTRIES_MAX} unflushed writes on one disk`);
    this.cache.push(entry);
  }

  private schedule(first: number, count: number, write: boolean, run: () => void, not_before_ms = 0): void {
    let done_ms = Math.max(not_before_ms, this.clock.now_ms + this.rng.between(0, this.faults.latency_ms_max));
    // Overlapping operations complete in issue order (a FIFO per range, like the disk queue).
    for (const op of this.pending) {
      if ((op.write || write) && op.first < first + count && first < op.first + op.count) done_ms = Math.max(done_ms, op.done_ms);
    }
    const op: PendingOp = { first, count, write, done_ms };
    this.pending.push(op);
    const epoch = this.power_epoch;
    this.clock.at(done_ms, () => {
      if (epoch !== this.power_epoch) return;
      this.pending.splice(this.pending.indexOf(op), 1);
      run();
    });
  }
}
