// The secondary's side of replication (spec 6.3, 9) as pure logic: validate each request from
// the primary, answer memsync writes early ("received") before the disk write, run the local
// I/O, reply with the result. Its own activemap is cleared once, at the first request after a
// handshake (by then the primary has merged and persisted it).
//
// Unlike HAST, the secondary keeps its own map honest for synchronization writes: an extent is
// marked dirty before such a write reaches its disk and stays marked until a FLUSH made it durable.
// The primary counts a synchronized extent as copied once the secondary answered, so without this a
// power loss of the secondary would drop copied data still in its disk cache with no map covering
// it; with it, the next handshake hands those extents back. Regular writes need no such marking:
// the primary holds their extents dirty itself until a flush reached the secondary. A
// synchronization READ answered with a digest (resync_digest) is marked the same way: when the
// digests match, the primary counts the chunk as copied although nothing was written here, and
// what this node holds there may be in its page cache only (a regular write not flushed yet).
//
// A memsync write that fails here after its "received" answer keeps its extents marked until an
// IN_SYNC or the next handshake, as the primary may not get the error answer (markFailed).
//
// A flush releases its marks in one map write. Marks are made only for extents a synchronization
// writes: a mark handed back at the next handshake tells the primary that this node's copy of the
// extent may be incomplete, so it does not copy that extent back from here (an extent stale on the
// primary): a mark made ahead of the pass, on an extent this node holds whole, would cost the
// primary that copy.
//
// It also keeps whether this node's copy is whole (FLAG_COPY_INCOMPLETE, which promotion checks):
// a write, trim or flush that fails here makes it incomplete before the failure is answered; the
// primary's IN_SYNC makes it whole again once the requests in flight when it came are done, but
// only if the primary had received every error reply sent (else it has yet to copy what they lost).
import type { ActiveMap, MapWrite } from "./activemap.ts";
import { mergeMapWrites } from "./map-batch.ts";
import type { RequestKind } from "./primary-engine.ts";

export type SecondaryError = "EINVAL" | "EIO" | "ENOSPC" | "ENOTSUP";

export interface SecondaryRequest {
  seq: number;
  kind: RequestKind;
  offset: number;
  length: number;
  memsync: boolean;
  /** Synchronization traffic (the frame's SYNC flag). */
  sync: boolean;
  /** A READ answered with the range's digest (the DIGEST flag). */
  digest?: boolean;
}

export type SecondaryAction =
  | { type: "map"; write: MapWrite }
  | { type: "local"; seq: number; kind: RequestKind; offset: number; length: number }
  | { type: "reply"; seq: number; error: SecondaryError | null; received: boolean }
  /** Persist whether this node's copy is whole (FLAG_COPY_INCOMPLETE), before any later action. */
  | { type: "copy"; complete: boolean }
  | { type: "log"; level: "warn" | "error"; message: string };

export interface SecondaryLimits {
  datasize: number;
  sector_bytes: number;
  max_request_bytes: number;
}

export class SecondaryEngine {
  private map_cleared = false;
  private readonly inflight = new Map<number, SecondaryRequest>();
  /** Writes done on the disk but not yet covered by a flush, per extent (count of writeStarts). */
  private unflushed = new Map<number, number>();
  /** Marking requests under way when a flush failed: never released (keepMarked). */
  private readonly kept_in_flight = new Set<number>();
  /** What each FLUSH in flight will make durable when it succeeds. */
  private readonly flushing = new Map<number, Map<number, number>>();
  /** Error replies sent on this connection, of every kind (the primary counts what it received). */
  private replies_failed = 0;
  /** Extents of memsync writes that failed here, held dirty in the map (markFailed). */
  private failed_marks = new Map<number, number>();
  /** An IN_SYNC waiting for the changes and flushes in flight when it came. */
  private in_sync_wait: Set<number> | null = null;

  constructor(
    private readonly map: ActiveMap,
    private readonly limits: SecondaryLimits,
    /** The copy's state on disk at the start of this connection. */
    private copy_complete: boolean,
  ) {}

  get complete(): boolean {
    return this.copy_complete;
  }

  /**
   * memsync's early answer (spec 9): due as soon as a valid WRITE flagged memsync is off the
   * network, before anything of it is carried out; request() for it follows.
   */
  receive(r: SecondaryRequest): SecondaryAction[] {
    if (!(r.memsync && r.kind === "write") || this.validate(r) !== null) return [];
    return [{ type: "reply", seq: r.seq, error: null, received: true }];
  }

  request(r: SecondaryRequest): SecondaryAction[] {
    const invalid = this.validate(r);
    if (invalid) {
      return [
        { type: "log", level: "warn", message: `Rejected ${r.kind} request ${r.seq}: ${invalid}.` },
        ...this.failed(r.kind),
        { type: "reply", seq: r.seq, error: "EINVAL", received: false },
      ];
    }
    const actions: SecondaryAction[] = [];
    if (!this.map_cleared) {
      this.map_cleared = true;
      actions.push({ type: "map", write: this.map.clear() });
    }
    this.inflight.set(r.seq, r);
    if (marks(r)) {
      const write = this.map.writeStart(r.offset, r.length);
      if (write) actions.push({ type: "map", write });
    } else if (r.kind === "flush") {
      this.flushing.set(r.seq, this.unflushed);
      this.unflushed = new Map();
    }
    actions.push({ type: "local", seq: r.seq, kind: r.kind, offset: r.offset, length: r.length });
    return actions;
  }

  localDone(seq: number, error: SecondaryError | null): SecondaryAction[] {
    const r = this.inflight.get(seq);
    this.inflight.delete(seq);
    const actions: SecondaryAction[] = [];
    if (error && r?.memsync === true) actions.push(...this.markFailed(r));
    if (r && marks(r) && !this.kept_in_flight.delete(seq)) {
      const first = this.map.extentOf(r.offset);
      const last = this.map.extentOf(r.offset + r.length - 1);
      for (let e = first; e <= last; e++) this.unflushed.set(e, (this.unflushed.get(e) ?? 0) + 1);
    } else if (r && r.kind === "flush") {
      const covered = this.flushing.get(seq)!;
      this.flushing.delete(seq);
      if (!error) actions.push(...this.release(covered));
      else this.keepMarked();
    }
    if (error) actions.push(...this.failed(r?.kind ?? "write"));
    actions.push({ type: "reply", seq, error, received: false });
    if (!error && this.in_sync_wait?.delete(seq) === true) actions.push(...this.inSyncReached());
    return actions;
  }

  /**
   * The primary's IN_SYNC: a pass completed with every extent copied here and flushed, after it had
   * received `replies_failed` error replies. When that is all this node sent, its copy is whole once
   * the changes and flushes already in flight succeed (a failure among them makes it incomplete again).
   */
  inSync(replies_failed: number): SecondaryAction[] {
    if (this.copy_complete || replies_failed !== this.replies_failed) return [];
    this.in_sync_wait = new Set();
    for (const [seq, r] of this.inflight) if (r.kind !== "read") this.in_sync_wait.add(seq);
    return this.inSyncReached();
  }

  private inSyncReached(): SecondaryAction[] {
    if (this.in_sync_wait === null || this.in_sync_wait.size > 0) return [];
    this.in_sync_wait = null;
    this.copy_complete = true;
    // The primary had every error answer and has copied everything since: the marks are done with.
    const marked = this.failed_marks;
    this.failed_marks = new Map();
    return [{ type: "copy", complete: true }, ...(marked.size > 0 ? this.release(marked) : [])];
  }

  /**
   * A memsync write failed here after its "received" answer: this node's copy of the range is now
   * wrong, and the primary may never hear so (the link can go before this answer), taking the change
   * as in this node's cache. Its extents stay marked, through flushes and the end of the link, until
   * an IN_SYNC says the primary had this answer and copied them again; else the next handshake hands
   * them back, so the primary copies them here rather than back from here. (Any other failed change
   * is known to the primary: by its answer, or as a request the lost link left unanswered.)
   */
  private markFailed(r: SecondaryRequest): SecondaryAction[] {
    const actions: SecondaryAction[] = [];
    const last = this.map.extentOf(r.offset + r.length - 1);
    for (let e = this.map.extentOf(r.offset); e <= last; e++) {
      if (this.failed_marks.has(e)) continue;
      this.failed_marks.set(e, 1);
      const write = this.map.writeStart(e * this.map.extentsize, this.map.extentLength(e));
      if (write) actions.push({ type: "map", write });
    }
    return actions;
  }

  /** A request failed here (answered with an error): a change or flush that failed leaves the copy
   * without something the primary has. */
  private failed(kind: RequestKind): SecondaryAction[] {
    this.replies_failed++;
    if (kind === "read") return [];
    this.in_sync_wait = null;
    if (!this.copy_complete) return [];
    this.copy_complete = false;
    return [{ type: "copy", complete: false }];
  }

  /**
   * The caller flushed the whole component with nothing in flight (the link ended, or an orderly
   * stop): every change is durable, so the map can say so and the next handshake hands back nothing.
   */
  allDurable(): SecondaryAction[] {
    const all = new Map<number, number>(this.unflushed);
    for (const covered of this.flushing.values()) for (const [e, n] of covered) all.set(e, (all.get(e) ?? 0) + n);
    this.unflushed = new Map();
    this.flushing.clear();
    // An IN_SYNC waiting for requests in flight: they are done, and durable.
    this.in_sync_wait?.clear();
    return [...this.release(all), ...this.inSyncReached()];
  }

  /**
   * A flush failed. Linux's write-back error drops whatever the page cache held unwritten when it
   * struck: the writes that flush covered, and those done since it was issued, which the other
   * flushes in flight or the next one cover, and those still under way (a large write landing from
   * the socket has pages in the cache before it is done). A later flush succeeds regardless. So no
   * flush releases any of them: they stay marked, for the next handshake to hand back.
   */
  private keepMarked(): void {
    this.unflushed = new Map();
    for (const seq of this.flushing.keys()) this.flushing.set(seq, new Map());
    for (const [seq, r] of this.inflight) if (marks(r)) this.kept_in_flight.add(seq);
  }

  /** Releases the extents whose changes a flush made durable, and the keepdirty LRU with them, in
   * one map write. */
  private release(covered: Map<number, number>): SecondaryAction[] {
    const writes: MapWrite[] = [];
    for (const [e, n] of covered) {
      const offset = e * this.map.extentsize;
      for (let i = 0; i < n; i++) {
        const write = this.map.writeComplete(offset, this.map.extentLength(e));
        if (write) writes.push(write);
      }
    }
    const forget = this.map.forgetKeepdirty();
    if (forget) writes.push(forget);
    return writes.length === 0 ? [] : [{ type: "map", write: mergeMapWrites(writes) }];
  }

  /**
   * A map write failed: the map on disk may lack marks this engine counts as made, which later
   * requests then rely on. The caller writes this (the whole map) before the next request it carries
   * out, until it succeeds.
   */
  wholeMap(): MapWrite {
    return this.map.wholeImageWrite();
  }

  /** Whether request `seq`, in flight, relies on its extents' marks being on disk (see marks()). */
  reliesOnMarks(seq: number): boolean {
    const r = this.inflight.get(seq);
    return r !== undefined && marks(r);
  }

  /** Whether request() would carry `r` out rather than reject it. */
  accepts(r: SecondaryRequest): boolean {
    return this.validate(r) === null;
  }

  private validate(r: SecondaryRequest): string | null {
    if (r.seq === 0) return "sequence number 0";
    if (r.kind === "flush") return r.offset === 0 && r.length === 0 ? null : "flush with a range";
    const { datasize, sector_bytes, max_request_bytes } = this.limits;
    if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length <= 0) return "bad range";
    if (r.kind !== "delete" && r.length > max_request_bytes) return `length ${r.length} over ${max_request_bytes}`;
    if (r.offset % sector_bytes !== 0 || r.length % sector_bytes !== 0) return `range not aligned to ${sector_bytes}-byte sectors`;
    if (r.offset + r.length > datasize) return `range ends past the data size ${datasize}`;
    return null;
  }
}

/** Whether a request's extents stay marked in this node's map until a flush made it durable: what
 * a synchronization writes, trims or answers a digest of counts as copied once answered. */
function marks(r: SecondaryRequest): boolean {
  return r.sync && (r.kind === "write" || r.kind === "delete" || (r.kind === "read" && r.digest === true));
}
