// The activemap: which extents may differ between the two nodes (spec 5, 8). Port of the
// semantics of FreeBSD's activemap.c, with three changes: map updates name only the
// changed 4 KiB blocks instead of the whole map; a write whose remote leg failed after it
// was sent can be marked for resync (remoteFailed, sharp edge 17); a sync chunk that
// failed keeps its extent dirty for the next pass instead of marking it clean (sharp edge
// 18). Pure bookkeeping: it returns the map bytes to write, the caller writes them.
//
// Per extent:
//   memtab  = in-flight writes + SYNC_HOLD while the extent is in the sync set
//   memmap  = memtab > 0                          ("dirty" in hastctl)
//   syncmap = must be copied to the peer by a sync pass (⊆ memmap)
//   LRU     = the keepdirty most recently written extents
//   waiting = clean extents whose clear waits for a flush (defer_clears, below)
//   disk    = memmap ∪ LRU ∪ waiting: the map image as of the newest MapWrite handed out
//
// Ordering contract for the caller (docs/format.md, "Write ordering"):
//   - apply MapWrites in seq order, each piece at ACTIVEMAP_OFFSET + piece.offset, then
//     flush the component when `flush` is set;
//   - after writeStart, read `mapSeq`: the data write may be issued only once every
//     MapWrite up to that seq is durable (an earlier writeStart may have produced the map
//     write that covers this extent and still be in flight);
//   - call remoteFailed/needSync before writeComplete for the same write;
//   - the MapWrite from mergeRemote must be durable before the first request is sent to
//     the peer (the peer zeroes its own map on that request).

import { assert } from "./assert.ts";
import { Bitmap } from "./bitmap.ts";
import { ExtentLru } from "./extent-lru.ts";
import { extentCount, isPowerOfTwo, MAP_BLOCK_BYTES, mapBytesFor, MAX_SECTOR_BYTES } from "./layout.ts";

/** memtab reservation held by an extent while it is in the sync set (HAST used its chunk count). */
const SYNC_HOLD = 1;
const MEMTAB_MAX = 0xffffffff;
export const DEFAULT_SYNC_CHUNK_BYTES = 1024 * 1024;

export interface ActiveMapOptions {
  datasize: number;
  extentsize: number;
  keepdirty: number;
  sectorsize: number;
  /** Sync request size (HAST's MAXPHYS); default 1 MiB. */
  chunk_bytes?: number;
  /** Activemap region bytes from the metadata; default: the smallest region for datasize. */
  mapsize?: number;
  /** Whether map writes must be followed by a cache flush; default true. */
  metaflush?: boolean;
  /**
   * With metaflush: an extent that gets clean keeps its bit on disk until a flush of the component
   * that started afterwards succeeds (flushStarting, flushCovered), and its clear then needs no
   * flush before it. Map writes that set bits then carry no clear, so they need only their own
   * pieces durable; otherwise nearly every one also clears a keepdirty eviction, and flushes the
   * whole component before it. For a node that flushes every few seconds (a primary with a peer:
   * its background flush). Default false: each clear is written after a flush of its own.
   */
  defer_clears?: boolean;
}

/** Bytes to write at ACTIVEMAP_OFFSET + offset; offset and length are multiples of 4096. */
export interface MapPiece {
  offset: number;
  bytes: Uint8Array;
}

export interface MapWrite {
  /** Increases by one per MapWrite; apply in this order. */
  seq: number;
  pieces: MapPiece[];
  /** Flush the component's cache after writing (metaflush). */
  flush: boolean;
  /**
   * Flush the component's cache BEFORE writing (metaflush, and some bit goes from dirty to clean):
   * a clean bit must never reach stable storage ahead of the data it vouches for, which a disk
   * cache that reorders writes could otherwise do.
   */
  flush_before: boolean;
  /**
   * Some bit goes from clean to dirty: this write guards data writes and must be durable before
   * them. A write that only clears may be written late (merged into a later one, map-batch.ts).
   */
  sets: boolean;
}

/** A range to copy between the nodes; hand it back to syncChunkDone. */
export interface SyncChunk {
  offset: number;
  length: number;
  extent: number;
  /** Sync pass the chunk belongs to; chunks of an older pass are ignored when done. */
  pass: number;
}

export interface ExtentState {
  /** memtab: in-flight writes plus the sync reservation. */
  pending: number;
  dirty: boolean;
  on_disk: boolean;
  in_sync_set: boolean;
  in_keepdirty: boolean;
}

interface ExtentSync {
  outstanding: number;
  all_issued: boolean;
  failed: boolean;
  /** A write was marked for resync after some chunks of this extent were copied. */
  redo: boolean;
}

export class ActiveMap {
  readonly datasize: number;
  readonly extentsize: number;
  readonly keepdirty: number;
  readonly chunk_bytes: number;
  readonly nextents: number;
  readonly mapsize: number;

  private readonly memtab: Uint32Array;
  private readonly memmap: Bitmap;
  private readonly syncmap: Bitmap;
  private readonly disk: Bitmap;
  private readonly lru: ExtentLru;
  /** persist's list of extents whose disk bit changed (reused: persist runs on every write). */
  private readonly changed_scratch: number[] = [];
  private metaflush: boolean;
  private readonly defer_clears: boolean;
  /** Clean extents whose disk bit stays set (defer_clears), by the count of flushes started when
   * they got clean: a flush started later covers the data their clear vouches for. */
  private readonly waiting = new Map<number, number>();
  private flushes_started = 0;
  private seq = 0;

  // Sync pass state.
  private pass = 0;
  /** Extents of the sync set not yet started in this pass (⊆ syncmap). */
  private readonly todo: Bitmap;
  /** No bit of `todo` below this index is set. */
  private todo_hint = 0;
  private readonly active = new Map<number, ExtentSync>();
  private cursor: { extent: number; next: number; end: number } | null = null;

  constructor(options: ActiveMapOptions) {
    const { datasize, extentsize, keepdirty, sectorsize } = options;
    const chunk_bytes = options.chunk_bytes ?? DEFAULT_SYNC_CHUNK_BYTES;
    assert(isPowerOfTwo(sectorsize) && sectorsize <= MAX_SECTOR_BYTES, () => `sector size ${sectorsize}`);
    assert(isPowerOfTwo(extentsize) && extentsize >= sectorsize, () => `extent size ${extentsize}`);
    assert(Number.isSafeInteger(datasize) && datasize > 0 && datasize % sectorsize === 0, () => `datasize ${datasize}`);
    assert(Number.isSafeInteger(keepdirty) && keepdirty > 0, () => `keepdirty ${keepdirty}`);
    assert(Number.isSafeInteger(chunk_bytes) && chunk_bytes > 0 && chunk_bytes % sectorsize === 0, () => `chunk ${chunk_bytes}`);
    this.datasize = datasize;
    this.extentsize = extentsize;
    this.keepdirty = keepdirty;
    this.chunk_bytes = chunk_bytes;
    this.nextents = extentCount(datasize, extentsize);
    const minimum = mapBytesFor(this.nextents);
    this.mapsize = options.mapsize ?? minimum;
    assert(
      this.mapsize >= minimum && this.mapsize % MAP_BLOCK_BYTES === 0,
      () => `mapsize ${this.mapsize} cannot hold ${this.nextents} extents`,
    );
    this.metaflush = options.metaflush ?? true;
    this.defer_clears = options.defer_clears ?? false;
    this.memtab = new Uint32Array(this.nextents);
    this.memmap = new Bitmap(this.nextents);
    this.syncmap = new Bitmap(this.nextents);
    this.todo = new Bitmap(this.nextents);
    this.disk = new Bitmap(this.mapsize * 8);
    this.lru = new ExtentLru(this.nextents, keepdirty);
  }

  /** seq of the newest MapWrite handed out (0 before the first). */
  get mapSeq(): number {
    return this.seq;
  }

  /** A flush of the component starts: hand its token to flushCovered once it succeeded. */
  flushStarting(): number {
    return ++this.flushes_started;
  }

  /**
   * The flush `token` succeeded: the clears waiting since before it started are written now,
   * without a flush before them (that flush made their data durable). Null when there are none.
   */
  flushCovered(token: number): MapWrite | null {
    const changed = this.changed_scratch;
    changed.length = 0;
    for (const [e, started] of this.waiting) if (started < token && this.persistExtent(e, true)) changed.push(e);
    return this.mapWriteOf(changed, true);
  }

  /** Extents whose clear waits for a flush (defer_clears). */
  get clearsWaiting(): number {
    return this.waiting.size;
  }

  /** metaflush off: later MapWrites say flush=false (e.g. the component does not support it). */
  setMetaflush(on: boolean): void {
    this.metaflush = on;
  }

  /**
   * Before a data write: holds every touched extent dirty and moves it to the front of
   * the keepdirty LRU. Returns the map write that must be durable before the data write
   * (null when every touched extent is already dirty on disk).
   */
  writeStart(offset: number, length: number): MapWrite | null {
    const first = this.firstExtent(offset, length);
    const last = this.lastExtent(offset, length);
    let evicted: number[] | null = null;
    let fresh = false;
    for (let e = first; e <= last; e++) {
      assert(this.memtab[e]! < MEMTAB_MAX, () => `extent ${e}: too many writes in flight`);
      if (this.memtab[e]!++ === 0) {
        this.memmap.set(e);
        fresh ||= !this.lru.has(e);
      }
      const out = this.lru.touch(e);
      if (out !== null) (evicted ??= []).push(out);
    }
    // An extent already held, or kept dirty by the LRU, is dirty on disk already: only a fresh
    // one, or one the LRU let go, can change the disk image.
    return fresh || evicted !== null ? this.persist(first, last, evicted) : null;
  }

  /**
   * After the write finished on both legs (or a leg failed and was reported through
   * remoteFailed/needSync first). Extents no longer held and not in the LRU become clean;
   * the returned map write need not be awaited, only applied in order.
   */
  writeComplete(offset: number, length: number): MapWrite | null {
    const first = this.firstExtent(offset, length);
    const last = this.lastExtent(offset, length);
    let released = false;
    for (let e = first; e <= last; e++) {
      assert(this.memtab[e]! > 0, () => `extent ${e}: write complete without write start`);
      if (--this.memtab[e]! === 0) {
        this.memmap.clear(e);
        released = true;
      }
    }
    // An extent still held stays dirty: only a released one can change the disk image.
    return released ? this.persist(first, last, null) : null;
  }

  /**
   * The remote leg of a write could not be sent: the touched extents join the sync set
   * and stay dirty until a sync pass copies them.
   */
  needSync(offset: number, length: number): MapWrite | null {
    const first = this.firstExtent(offset, length);
    const last = this.lastExtent(offset, length);
    let added = false;
    for (let e = first; e <= last; e++) {
      if (this.syncmap.test(e)) {
        // Chunks of an extent being synced may already have been copied before this
        // write: copy the extent again in this pass.
        const sync = this.active.get(e);
        if (sync !== undefined) sync.redo = true;
        continue;
      }
      this.addToSyncSet(e);
      added = true;
    }
    // Extents already in the sync set are held dirty: only an added one can change the disk image.
    return added ? this.persist(first, last, null) : null;
  }

  /** The remote leg failed after the write was sent (error reply or lost connection). */
  remoteFailed(offset: number, length: number): MapWrite | null {
    return this.needSync(offset, length);
  }

  /**
   * Worker start: loads the on-disk map. Every extent dirty on disk, including those
   * kept dirty by the LRU, joins the sync set. Bits past the last extent are ignored.
   */
  copyIn(ondisk: Uint8Array, stale: readonly number[] = []): void {
    assert(this.memmap.count === 0 && this.lru.size === 0, "copyIn on an activemap already in use");
    assert(ondisk.length >= this.memmap.bytes.length, () => `on-disk map has ${ondisk.length} bytes`);
    this.memmap.load(ondisk);
    // A primary's stale extents (Metadata.stale) are dirty whatever the map says: the map write
    // that set them precedes the metadata that lists them, but may have failed.
    for (const e of stale) this.memmap.set(e);
    this.syncmap.load(this.memmap.bytes);
    this.disk.clearAll();
    for (let e = this.memmap.findNextSet(0); e >= 0; e = this.memmap.findNextSet(e + 1)) {
      this.memtab[e] = SYNC_HOLD;
      this.disk.set(e);
    }
    this.syncRewind();
  }

  /**
   * Handshake: ORs the peer's map into the sync set and rewinds the sync pass. The
   * returned map write must be durable before any request is sent to the peer.
   */
  mergeRemote(remote: Uint8Array): MapWrite | null {
    assert(remote.length >= this.memmap.bytes.length, () => `peer map has ${remote.length} bytes`);
    const peer = new Bitmap(this.nextents);
    peer.load(remote);
    const touched: number[] = [];
    for (let e = peer.findNextSet(0); e >= 0; e = peer.findNextSet(e + 1)) {
      if (this.syncmap.test(e)) continue;
      this.addToSyncSet(e);
      touched.push(e);
    }
    this.syncRewind();
    return this.persistEach(touched);
  }

  /**
   * Forgets every extent and returns a write that zeroes the whole map region (the
   * secondary after a handshake; `hastctl create`). No write may be in flight.
   */
  clear(): MapWrite {
    for (let e = 0; e < this.nextents; e++) {
      const held = this.syncmap.test(e) ? SYNC_HOLD : 0;
      assert(this.memtab[e] === held, () => `clear with writes in flight on extent ${e}`);
    }
    this.memtab.fill(0);
    this.memmap.clearAll();
    this.syncmap.clearAll();
    this.disk.clearAll();
    this.waiting.clear();
    this.lru.drain();
    this.syncRewind();
    return { seq: ++this.seq, pieces: [{ offset: 0, bytes: new Uint8Array(this.mapsize) }], flush: this.metaflush, flush_before: this.metaflush, sets: false };
  }

  /**
   * Empties the keepdirty LRU: extents no longer held become clean on disk, with those whose clear
   * waits for a flush (the write flushes before it). For a node whose recent writes were just made
   * durable and that has nothing in flight it could lose in a crash (the secondary after a flush).
   */
  forgetKeepdirty(): MapWrite | null {
    return this.persistEach([...this.lru.drain(), ...this.waiting.keys()], true);
  }

  /** The clears waiting for a flush, written now after a flush of their own (a worker's orderly
   * stop: the next one starts from a map no dirtier than it must be). */
  clearWaiting(): MapWrite | null {
    return this.persistEach([...this.waiting.keys()], true);
  }

  /** Starts the sync pass over: the next chunk comes from the first extent of the sync set. */
  syncRewind(): void {
    this.pass++;
    this.active.clear();
    this.cursor = null;
    this.todo.load(this.syncmap.bytes);
    this.todo_hint = 0;
  }

  /**
   * The next range to copy, or null when every extent of the pass has been handed out.
   * Each extent is walked from its start in chunk_bytes pieces; after an extent, the
   * search restarts from the lowest extent not yet visited, so extents that join the
   * sync set meanwhile are picked up in the same pass. Several chunks may be in flight;
   * the caller keeps them apart from overlapping writes (RangeLock).
   */
  nextSyncChunk(): SyncChunk | null {
    if (this.cursor === null) {
      const e = this.todo.findNextSet(this.todo_hint);
      this.todo_hint = e < 0 ? this.nextents : e;
      if (e < 0) return null;
      assert(this.syncmap.test(e) && !this.active.has(e), () => `extent ${e} picked for sync twice`);
      this.todo.clear(e);
      this.active.set(e, { outstanding: 0, all_issued: false, failed: false, redo: false });
      const start = e * this.extentsize;
      this.cursor = { extent: e, next: start, end: start + this.extentLength(e) };
    }
    const cursor = this.cursor;
    const sync = this.active.get(cursor.extent)!;
    const chunk: SyncChunk = {
      offset: cursor.next,
      length: Math.min(this.chunk_bytes, cursor.end - cursor.next),
      extent: cursor.extent,
      pass: this.pass,
    };
    cursor.next += chunk.length;
    sync.outstanding++;
    if (cursor.next >= cursor.end) {
      sync.all_issued = true;
      this.cursor = null;
    }
    return chunk;
  }

  /**
   * A chunk was copied (ok) or could not be (read/write error on a healthy link). When
   * the last chunk of an extent is done the extent leaves the sync set and may become
   * clean; if any chunk failed it stays dirty and is retried after the next syncRewind.
   */
  syncChunkDone(chunk: SyncChunk, ok: boolean): MapWrite | null {
    if (chunk.pass !== this.pass) return null;
    const sync = this.active.get(chunk.extent);
    assert(sync !== undefined && sync.outstanding > 0, () => `sync chunk at ${chunk.offset} was not handed out`);
    sync.outstanding--;
    if (!ok) sync.failed = true;
    if (!sync.all_issued || sync.outstanding > 0) return null;
    const e = chunk.extent;
    this.active.delete(e);
    if (sync.failed) return null;
    if (sync.redo) {
      this.todo.set(e);
      this.todo_hint = Math.min(this.todo_hint, e);
      return null;
    }
    this.syncmap.clear(e);
    this.memtab[e]! -= SYNC_HOLD;
    if (this.memtab[e] === 0) this.memmap.clear(e);
    return this.persist(e, e, null);
  }

  /** True when the pass has nothing left to hand out and nothing in flight. */
  syncPassDone(): boolean {
    return this.cursor === null && this.active.size === 0 && this.todo.count === 0;
  }

  /** Extents left in the sync set after a failed chunk; retried after syncRewind. */
  syncDeferredExtentCount(): number {
    return this.syncmap.count - this.todo.count - this.active.size;
  }

  dirtyExtentCount(): number {
    return this.memmap.count;
  }

  /** Bytes of dirty extents (hastctl's "dirty"); the last extent counts its real length. */
  dirtyBytes(): number {
    return this.bytesOf(this.memmap);
  }

  syncExtentCount(): number {
    return this.syncmap.count;
  }

  /** Bytes of the extents in the sync set. */
  syncPendingBytes(): number {
    return this.bytesOf(this.syncmap);
  }

  /**
   * A write of the whole map region as of the newest MapWrite: what to write after one failed,
   * since the writes after it name only the blocks they change.
   */
  wholeImageWrite(): MapWrite {
    return { seq: ++this.seq, pieces: [{ offset: 0, bytes: this.diskImage() }], flush: this.metaflush, flush_before: this.metaflush, sets: true };
  }

  /** The whole map region as of the newest MapWrite (mapsize bytes, a copy). */
  diskImage(): Uint8Array {
    return this.disk.bytes.slice();
  }

  extentOf(offset: number): number {
    assert(Number.isSafeInteger(offset) && offset >= 0 && offset < this.datasize, () => `offset ${offset} outside data`);
    return Math.floor(offset / this.extentsize);
  }

  extentLength(e: number): number {
    return Math.min(this.extentsize, this.datasize - e * this.extentsize);
  }

  extentState(e: number): ExtentState {
    return {
      pending: this.memtab[e]!,
      dirty: this.memmap.test(e),
      on_disk: this.disk.test(e),
      in_sync_set: this.syncmap.test(e),
      in_keepdirty: this.lru.has(e),
    };
  }

  /** Checks every invariant on every extent (O(nextents); tests and debug builds). */
  checkInvariants(): void {
    assert(this.lru.size <= this.keepdirty, () => `LRU holds ${this.lru.size} > keepdirty ${this.keepdirty}`);
    for (let e = 0; e < this.nextents; e++) this.checkExtent(e);
    const past = this.disk.findNextSet(this.nextents);
    assert(past < 0, () => `map bit ${past} past the last extent is set`);
    for (const e of this.active.keys()) assert(this.syncmap.test(e) && !this.todo.test(e), () => `active extent ${e}`);
    const first_todo = this.todo.findNextSet(0);
    assert(first_todo < 0 || first_todo >= this.todo_hint, "sync search hint skips an extent");
  }

  private addToSyncSet(e: number): void {
    this.syncmap.set(e);
    this.memtab[e]! += SYNC_HOLD;
    this.memmap.set(e);
    this.todo.set(e);
    this.todo_hint = Math.min(this.todo_hint, e);
  }

  /**
   * Brings the disk image of extents first..last and `more` to memmap ∪ LRU (∪ waiting); returns
   * the changed blocks. Allocates only when a bit changes: most writes land in extents already
   * dirty on disk. `clear_now`: clears are not deferred (the write flushes before them).
   */
  private persist(first: number, last: number, more: readonly number[] | null, clear_now = false): MapWrite | null {
    const changed = this.changed_scratch;
    changed.length = 0;
    for (let e = first; e <= last; e++) if (this.persistExtent(e, clear_now)) changed.push(e);
    if (more !== null) for (const e of more) if (this.persistExtent(e, clear_now)) changed.push(e);
    return this.mapWriteOf(changed, false);
  }

  /** persist for extents that are not one range (no range, only `extents`). */
  private persistEach(extents: readonly number[], clear_now = false): MapWrite | null {
    return this.persist(0, -1, extents, clear_now);
  }

  /** Brings e's disk bit to memmap ∪ LRU, a clear waiting for a flush unless `clear_now` (or
   * clears are not deferred); true when it changed. */
  private persistExtent(e: number, clear_now: boolean): boolean {
    const wanted = this.memmap.test(e) || this.lru.has(e);
    let changed = false;
    if (wanted) {
      this.waiting.delete(e);
      if (!this.disk.test(e)) {
        this.disk.set(e);
        changed = true;
      }
    } else if (this.disk.test(e)) {
      if (clear_now || !(this.defer_clears && this.metaflush)) {
        this.waiting.delete(e);
        this.disk.clear(e);
        changed = true;
      } else if (!this.waiting.has(e)) {
        this.waiting.set(e, this.flushes_started);
      }
    }
    this.checkExtent(e);
    return changed;
  }

  /** The map write carrying the blocks of extents whose disk bits just changed; `covered`: a flush
   * since they got clean made their data durable (flushCovered). */
  private mapWriteOf(changed: readonly number[], covered: boolean): MapWrite | null {
    assert(this.lru.size <= this.keepdirty, "LRU over keepdirty");
    if (changed.length === 0) return null;
    const blocks = new Set<number>();
    let sets = false;
    let clears = false;
    for (const e of changed) {
      if (this.disk.test(e)) sets = true;
      else clears = true;
      blocks.add(Math.floor(e / 8 / MAP_BLOCK_BYTES));
    }
    const sorted = [...blocks].sort((a, b) => a - b);
    const pieces: MapPiece[] = [];
    let run_start = sorted[0]!;
    let run_end = run_start + 1;
    const flushRun = () => {
      const offset = run_start * MAP_BLOCK_BYTES;
      pieces.push({ offset, bytes: this.disk.bytes.slice(offset, run_end * MAP_BLOCK_BYTES) });
    };
    for (const block of sorted.slice(1)) {
      if (block === run_end) {
        run_end++;
        continue;
      }
      flushRun();
      run_start = block;
      run_end = block + 1;
    }
    flushRun();
    return { seq: ++this.seq, pieces, flush: this.metaflush, flush_before: this.metaflush && clears && !covered, sets };
  }

  private checkExtent(e: number): void {
    const pending = this.memtab[e]!;
    const dirty = this.memmap.test(e);
    assert(dirty === pending > 0, () => `extent ${e}: dirty=${dirty} but ${pending} pending`);
    assert(!this.syncmap.test(e) || pending >= SYNC_HOLD, () => `extent ${e}: in sync set but not held dirty`);
    const waiting = this.waiting.has(e);
    assert(!waiting || !(dirty || this.lru.has(e)), () => `extent ${e}: dirty, and its clear waiting`);
    assert(this.disk.test(e) === (dirty || this.lru.has(e) || waiting), () => `extent ${e}: disk image differs from memmap ∪ LRU ∪ waiting`);
  }

  /** The first extent of a range, which is checked to lie within the data. */
  private firstExtent(offset: number, length: number): number {
    assert(
      Number.isSafeInteger(length) && length > 0 && Number.isSafeInteger(offset) && offset >= 0 && offset + length <= this.datasize,
      () => `range ${offset}+${length} outside data of ${this.datasize} bytes`,
    );
    return Math.floor(offset / this.extentsize);
  }

  /** The last extent of a range firstExtent checked. */
  private lastExtent(offset: number, length: number): number {
    return Math.floor((offset + length - 1) / this.extentsize);
  }

  private bytesOf(map: Bitmap): number {
    const last = this.nextents - 1;
    const short = map.test(last) ? this.extentsize - this.extentLength(last) : 0;
    return map.count * this.extentsize - short;
  }
}
