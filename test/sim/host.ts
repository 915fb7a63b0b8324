// One machine of the simulated pair: its component (SimDisk), its role, and the worker process
// that runs for that role. A process is single-threaded like hastd's workers: while it waits for a
// synchronous metadata or activemap write (`block`), events addressed to it queue up and run
// afterwards in order. A crash or role change bumps `epoch`, which silences every callback the old
// process left behind.
import { decodeMetadataArea, encodeMetadataSlot, type Metadata } from "../../src/core/metadata.ts";
import { ACTIVEMAP_OFFSET, METADATA_AREA_BYTES } from "../../src/core/layout.ts";
import type { MapWrite } from "../../src/core/activemap.ts";
import type { SimDisk } from "./disk.ts";
import type { PrimaryProc } from "./primary-proc.ts";
import type { SecondaryProc } from "./secondary-proc.ts";
import type { Scheduler } from "./scheduler.ts";

export type Role = "init" | "primary" | "secondary";

/** What a process is blocked in: a metadata slot, a map update, or one that clears bits. */
export type ControlWrite = "metadata" | "map" | "map-clear";

export class Host {
  role: Role = "init";
  up = true;
  epoch = 0;
  /** Power losses so far (part of the cache epoch). */
  boots = 0;
  busy = false;
  primary: PrimaryProc | null = null;
  secondary: SecondaryProc | null = null;
  /**
   * Told when a process enters a synchronous control write lasting `ms` (an armed power loss);
   * returns whether it took that moment, which disarms it.
   */
  on_block: ((ms: number, what: ControlWrite) => boolean) | null = null;
  private deferred: (() => void)[] = [];
  /** The main process's descriptor of the component and its cache epoch id; null while it has none. */
  private held: { id: number | null; failures_seen: number } | null = null;
  /** A flush of the held descriptor failed that no primary start has acted on (HeldComponent.unacted). */
  private unacted = false;
  /** Cache epoch ids drawn so far (each new one differs from every earlier one). */
  private held_ids = 0;
  /** Generation of the newest metadata slot, as MetadataStore tracks it. */
  private meta_generation = 0n;

  constructor(
    readonly name: string,
    readonly disk: SimDisk,
    private readonly clock: Scheduler,
  ) {}

  /**
   * The main process's flush through the descriptor it holds (src/io/held-component.ts), after the
   * disk's own (`flush_ok`): false when that failed or any flush failed on this disk since the
   * held descriptor's last flush (it sees every write-back error; Linux reports one to each open
   * file). Then the cache epoch is drawn anew. The descriptor is opened at the first flush since
   * hastd started (dropHeld).
   */
  private heldFlush(flush_ok: boolean): { id: number | null } | null {
    const failures = this.disk.failed_flushes;
    const held = (this.held ??= { id: null, failures_seen: failures });
    const missed = failures !== held.failures_seen;
    held.failures_seen = failures;
    if (flush_ok && !missed) return held;
    held.id = null;
    this.unacted = true;
    return null;
  }

  /** The cache epoch a secondary's reply names (null when the main process's flush failed). */
  takeCacheEpoch(flush_ok: boolean): Uint8Array | null {
    const held = this.heldFlush(flush_ok);
    if (held === null) return null;
    held.id ??= ++this.held_ids;
    const epoch = new Uint8Array(16);
    epoch[0] = this.name.charCodeAt(0);
    new DataView(epoch.buffer).setUint32(4, this.boots, true);
    new DataView(epoch.buffer).setUint32(8, held.id, true);
    return epoch;
  }

  /** main.ts startPrimary, then primary.ts flushAtStart: whether both flushes succeeded. The
   * worker's succeeds without a fault when nothing is cached (the faults modelled are write-back's). */
  primaryStartFlush(): boolean {
    const flushed = this.heldFlush(this.disk.flushInPlace(true)) !== null && !this.unacted;
    this.unacted = false; // the start acts on it at once (marks the copy incomplete)
    return flushed;
  }

  /** main.ts: a secondary's copy the primary completed acts on a failure its held descriptor took. */
  copyCompleted(): void {
    this.unacted = false;
  }

  /** A worker ended in order (HeldComponent.absorb): the failures until now were acted on. */
  absorbHeld(): void {
    if (this.held) this.held.failures_seen = this.disk.failed_flushes;
  }

  /** hastd's main process ends (a crash): its descriptor goes, and what it knew. */
  dropHeld(): void {
    this.held = null;
    this.unacted = false;
  }

  /** Wraps a callback of the current process: dropped after a crash, queued while blocked. */
  guard<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
    const epoch = this.epoch;
    return (...args: A) => {
      if (epoch !== this.epoch) return;
      if (this.busy) this.deferred.push(() => fn(...args));
      else fn(...args);
    };
  }

  /** The process sits in a synchronous control write for `ms`, then continues with `then`. */
  block(ms: number, what: ControlWrite, then: () => void): void {
    if (this.busy) throw new Error(`${this.name}: blocked twice`);
    this.busy = true;
    const epoch = this.epoch;
    this.clock.after(ms, () => {
      if (epoch !== this.epoch) return;
      this.busy = false;
      then();
      while (!this.busy && this.deferred.length > 0 && epoch === this.epoch) this.deferred.shift()!();
    });
    if (this.on_block && ms >= 1 && this.on_block(ms, what)) this.on_block = null;
  }

  /** The process ends (crash or role change): nothing it scheduled runs any more. */
  endProcess(): void {
    this.epoch++;
    this.busy = false;
    this.deferred = [];
  }

  // ---- metadata and activemap, as MetadataStore does them ----

  readMetadata(): Metadata {
    const read = decodeMetadataArea(this.disk.readControl(0, METADATA_AREA_BYTES));
    this.meta_generation = read.generation;
    return read.meta;
  }

  /** Writes the next slot; the caller blocks for the write's latency, then calls disk.flushNow(). */
  writeMetadataSlot(meta: Metadata): void {
    const next = encodeMetadataSlot(meta, this.meta_generation + 1n);
    this.disk.writeControl(next.offset, next.bytes);
    this.meta_generation = next.generation;
  }

  /**
   * A metadata write as MetadataStore.write does it: the next slot, then its flush; the generation
   * moves on only once that succeeded (a failed write is retried in the same slot). The process
   * sits in the call for `ms`, then `then` learns whether it succeeded. One that `fails` writes
   * nothing; one whose `flush_fails` leaves the slot cached, its flush failing as a data flush does.
   */
  writeMetadata(meta: Metadata, ms: number, then: (ok: boolean) => void, fails = false, flush_fails = false): void {
    const end = this.startMetadata(meta, fails, flush_fails);
    this.block(ms, "metadata", () => then(end()));
  }

  /** The same write from a process on its way out: not a moment it can lose power in. */
  writeMetadataNow(meta: Metadata, fails = false, flush_fails = false): boolean {
    return this.startMetadata(meta, fails, flush_fails)();
  }

  /** Issues a metadata write; returns its end (the flush), which tells whether it succeeded. */
  private startMetadata(meta: Metadata, fails: boolean, flush_fails: boolean): () => boolean {
    if (fails) return () => false; // its pwrite failed: nothing reaches the disk
    const next = encodeMetadataSlot(meta, this.meta_generation + 1n);
    this.disk.writeControl(next.offset, next.bytes);
    return () => {
      if (flush_fails) {
        this.disk.failFlush();
        return false;
      }
      this.disk.flushNow();
      this.meta_generation = next.generation;
      return true;
    };
  }

  /** hastctl create: both slots invalidated, the map zeroed, generation 1 written, all flushed. */
  create(meta: Metadata): void {
    this.disk.writeControl(0, new Uint8Array(this.disk.control_bytes));
    this.disk.flushNow();
    this.meta_generation = 0n;
    this.writeMetadataSlot(meta);
    this.disk.flushNow();
  }

  /**
   * An activemap update as MetadataStore.writeMap does it: a flush first when the update clears a
   * bit (the data that bit vouched for must be durable before the clean bit can be), then the
   * pieces, with metaflush each written through to stable storage alone (RWF_DSYNC: not the rest of
   * the cache). The process sits in the call for `ms`, then `then` learns whether it
   * succeeded. One that `fails` writes nothing; one whose `flush_fails` writes its pieces, and its
   * flush fails as a data flush does (SimDisk.failFlush).
   */
  writeMap(write: MapWrite, ms: number, then: (ok: boolean) => void, fails = false, flush_fails = false): void {
    const end = this.startMap(write, fails, flush_fails);
    this.block(ms, write.flush_before && !fails ? "map-clear" : "map", () => then(end()));
  }

  /** The same update from a process on its way out: not a moment it can lose power in. */
  writeMapNow(write: MapWrite, fails = false, flush_fails = false): boolean {
    return this.startMap(write, fails, flush_fails)();
  }

  /** Issues a map update; returns its end (the flush), which tells whether it succeeded. */
  private startMap(write: MapWrite, fails: boolean, flush_fails: boolean): () => boolean {
    if (fails) return () => false; // its first pwrite failed: nothing reaches the disk
    if (write.flush_before) this.disk.flushNow();
    for (const piece of write.pieces) this.disk.writeControl(ACTIVEMAP_OFFSET + piece.offset, piece.bytes);
    return () => {
      if (!write.flush) return true;
      if (flush_fails) {
        this.disk.failFlush();
        return false;
      }
      for (const piece of write.pieces) this.disk.syncControlRange(ACTIVEMAP_OFFSET + piece.offset, piece.bytes.length);
      return true;
    };
  }

  readMap(mapsize: number): Uint8Array {
    return this.disk.readControl(ACTIVEMAP_OFFSET, mapsize);
  }
}
