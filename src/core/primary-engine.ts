// The primary's replication state machine (spec 5, 6.4, 7, 8, 9) as pure logic: events in
// (a request arrived, a leg finished, the peer connected or went away, a sync chunk was copied),
// actions out (write the map, write metadata, do local I/O, send to the peer, answer the
// application, copy a sync chunk, emit a hook event). The daemon runs it against a real disk
// and socket (src/daemon/primary*.ts); the simulator (test/sim) runs it against simulated ones.
//
// Action ordering contract: the caller executes the actions of one call in order, and a "map"
// or "metadata" action is durable before any later action of the same call is started (the
// dirty bit is write-ahead of the data; the merged map is on disk before the first request is
// sent to the peer).
import type { ActiveMap, MapWrite, SyncChunk } from "./activemap.ts";
import { assert } from "./assert.ts";
import { allBits } from "./bitmap.ts";
import type { Generation, SyncSource } from "./connect-decision.ts";
import { FLAG_COPY_INCOMPLETE, FLAG_RESUID_UNCONFIRMED, FLAG_SYNC_FULL_ON_CONNECT, STALE_EXTENTS_MAX, type StaleExtents } from "./metadata.ts";
import { RangeLock } from "./rangelock.ts";
import { RequestLegs, type LegOutcome, type ReplicationMode } from "./request-legs.ts";
import { describeVerify, VerifyPass, type VerifyChunk, type VerifyCounts, type VerifyOutcome, type VerifyResult } from "./verify-pass.ts";

export type RequestKind = "read" | "write" | "delete" | "flush";
export type HookEvent = "syncstart" | "syncdone" | "syncintr";

/** Requests tracked at once; the frontends bound their in-flight requests well below this. */
export const REQUESTS_MAX = 4096;
/** Sync chunks copied in parallel by default (HAST: 1). Four keep the link busy while the secondary
 * writes; eight measured slower on loopback (docs/performance.md). */
export const SYNC_CHUNKS_MAX = 4;
/** Verification chunks compared at once: one read here while the peer reads the next. */
export const VERIFY_CHUNKS_MAX = 2;
/** An application flush waits for the copy back of extents stale here only while the pass has at
 * most this much left to copy (well under a second on a gigabit link); beyond, it fails at once
 * rather than hang for a long resync. */
export const HELD_FLUSH_SYNC_BYTES_MAX = 64 * 1024 * 1024;
/**
 * Extents the change lists (`changed`, `unflushed`) may name before the engine asks for a flush
 * of its own, which lets go of what it made durable. Without it a primary nobody flushes (no peer,
 * an application that never flushes) lists every extent it writes: ~13 bytes an extent, 100 MiB
 * at 16 TiB. 65536 is about 1 MiB, and a flush every 128 GiB of 2 MiB extents written.
 */
export const CHANGES_LISTED_MAX = 65_536;
/** Failed passes run again at once this many times, then wait for resumeSync (or a reconnect). */
export const PASS_RETRIES_MAX = 3;
/** How often the worker calls resumeSync: a pass given up after errors starts again this late. */
export const SYNC_RESUME_S = 30;

export interface PrimaryGeneration extends Generation {
  flags: number;
  /** The extents stale here, when there are some and they fit a slot (Metadata.stale). */
  stale?: StaleExtents;
}

export type PrimaryAction =
  | { type: "map"; write: MapWrite }
  | { type: "metadata"; generation: PrimaryGeneration }
  | { type: "local"; id: number; kind: RequestKind; offset: number; length: number }
  /** `answer_waits`: the application's answer waits for the peer's reply to this leg (memsync,
   * fullsync), so the data stays as it is until then. */
  | { type: "remote"; id: number; kind: RequestKind; offset: number; length: number; memsync: boolean; answer_waits?: boolean }
  /** Answer the application. For a read, `source` says which leg filled the buffer. */
  | { type: "reply"; id: number; ok: boolean; source?: "local" | "remote" }
  | { type: "sync-copy"; chunk: SyncChunk; from: SyncSource }
  /** End of a pass: flush both components (the secondary releases what a flush made durable), then
   * report syncFlushDone(pass, ok); the pass only counts as complete once that succeeded. */
  | { type: "sync-flush"; pass: number }
  /** Start a flush of the daemon's own (submit with `internal`): the change lists are full. */
  | { type: "flush" }
  /** A pass completed while connected: the peer's copy holds every change this node had copied or
   * sent it, flushed; tell it (IN_SYNC), so that it may be promoted again. */
  | { type: "in-sync" }
  | { type: "event"; event: HookEvent }
  | { type: "log"; level: "info" | "warn" | "error"; message: string }
  /** Compare the chunk's two copies and report verifyChunkDone (online verification). */
  | { type: "verify"; chunk: VerifyChunk }
  /** A verification ended (completed, or interrupted by the link's loss). */
  | { type: "verified"; result: VerifyResult };

export interface Connection {
  syncsrc: SyncSource;
  peer_localcnt: bigint;
  peer_remotecnt: bigint;
  /** The secondary's map to merge (all ones for a full sync, empty for none). */
  peer_map: Uint8Array;
  /** The secondary adopted our resuid just now (decision row 1). */
  virgin: boolean;
  /**
   * The secondary's disk cache epoch, or null when it cannot tell. Equal at two connections: its
   * cache lasted between them (no reboot) and it flushed it before answering, so every change it
   * answered on the earlier connection is on its disk.
   */
  peer_cache_epoch: string | null;
}

interface Modify {
  id: number;
  kind: "write" | "delete";
  offset: number;
  length: number;
  legs: RequestLegs;
  /** The link went down after the peer had it in memory (memsync "received"): the peer carries it
   * out all the same, so its copy of the range is as good as its cache (see peer_unconfirmed). */
  received_at_loss?: boolean;
  /** The application was told it succeeded. */
  answered_ok?: boolean;
  /** change_seq taken when it was answered ok: a flush that started before does not cover it. */
  answered_seq?: number;
  /** The peer's flush failed while it was in flight, in an extent only the peer's copy is current
   * in (remoteFlushFailed): answered ok, it is reported lost like a change finished before. */
  peer_flush_lost?: boolean;
  /** The peer had answered it ok when the link went (this node's leg still ran): it is held
   * no longer but copied again at the next connect, as held changes are (disconnect). */
  peer_ok_at_loss?: boolean;
}

interface Read {
  id: number;
  offset: number;
  length: number;
  /** Which leg is reading now. */
  at: "local" | "remote";
  /** While the read ran, its copy turned out to lack a change: a failed local flush made part of
   * the range stale here, or a change's remote leg failed there. What it read may be older than
   * what was answered, so it is read again (startRead picks the copy anew). */
  suspect?: boolean;
}

interface Flush {
  id: number;
  legs: RequestLegs;
  /** Started by the daemon itself (background flush, orderly stop): nobody sees its answer. */
  internal: boolean;
  /** The activemap's token for it (ActiveMap.flushStarting): once it succeeded here, the clears
   * waiting since before it started are written. */
  map_token: number;
}

export interface SyncProgress {
  /** Bytes copied in the current pass. */
  done_bytes: number;
  /** Bytes still to copy (extents in the sync set). */
  pending_bytes: number;
  active: boolean;
}

export class PrimaryEngine {
  private gen: PrimaryGeneration;
  private mode: ReplicationMode;
  private connected = false;
  private syncsrc: SyncSource | null = null;
  private peer_localcnt = 0n;
  private peer_remotecnt = 0n;

  private readonly modifies = new Map<number, Modify>();
  private readonly reads = new Map<number, Read>();
  private readonly flushes = new Map<number, Flush>();
  /** Writes and deletes waiting for an overlapping sync chunk, in arrival order. */
  private readonly blocked: { id: number; kind: "write" | "delete"; offset: number; length: number; mode: ReplicationMode }[] = [];

  private readonly sync_chunks_max: number;
  private readonly held_flush_sync_bytes_max: number;
  private readonly sync_locks: RangeLock;
  /** Sync chunks in flight: their range lock and the side they are read from. */
  private readonly sync_inflight = new Map<SyncChunk, { token: number; from: SyncSource }>();
  private sync_waiting: SyncChunk | null = null;
  /** sync_rate's pacing, as verify_allowance (allowSync); copies back to this node are not paced. */
  private sync_allowance = Infinity;
  private sync_running = false;
  /** Numbers passes, so a late syncFlushDone of an earlier pass is ignored. */
  private sync_pass = 0;
  /**
   * Extents whose local copy lacks changes the peer holds: read from the peer, copied back from it
   * by the sync, and changed only together with it (a change the peer missed there would be
   * overwritten by the copy). "missed": a local write failed that the peer made (the peer's copy
   * holds an answered write this node never had). "dropped": a local flush failed, so pages may be
   * gone; should the peer's copy miss a later change, this node's copy is kept instead (what was
   * dropped is lost, and the failed flush said so).
   */
  private readonly local_stale = new Map<number, "missed" | "dropped">();
  /**
   * While this node is synchronized from the peer (syncsrc "secondary"), the extents whose copy
   * here is the one kept, copied to the peer rather than from it: the peer's may lack changes made
   * here (its flush failed, or it lost power holding them unflushed), or neither copy is whole and
   * this node's is kept (keepOwnCopy). Forgotten when that pass completes or a connection copies
   * from here anyway. Only this process knows them: meanwhile the metadata marks this node's copy
   * incomplete (copyIncomplete), so a restart is refused.
   */
  private readonly own_kept = new Set<number>();
  /**
   * Extents copied from the peer while it held changes there that no flush of its had confirmed
   * (changed.remote): this node's copy is then only as good as the peer's cache, and a failed
   * flush there (a write-back error may have struck before the copy read it) leaves neither copy
   * whole. By the change's number; forgotten once a flush there covers it.
   */
  private readonly copied_unconfirmed = new Map<number, number>();
  /** staleKey() as the metadata last written says it (persistStale). */
  private stale_on_disk = "";
  private readonly stale_listed_max: number;
  /**
   * Per extent, the number of the last change finished on this node's disk (`local`) or the peer's
   * (`remote`): a flush there that started after it and succeeded made it durable. Linux may drop
   * whatever a failed flush covered and report that once, so a later flush succeeds regardless:
   * a failure marks every extent still listed for copying (localFlushFailed, remoteFlushFailed).
   */
  private readonly changed = { local: new Map<number, number>(), remote: new Map<number, number>() };
  private change_seq = 0;
  /** The activemap's token of each end-of-pass flush in flight (ActiveMap.flushStarting), by pass. */
  private readonly pass_flush_tokens = new Map<number, number>();
  /** change_seq when each flush in flight started (by request id, or -pass). */
  private readonly flush_started = new Map<number, number>();
  private readonly changes_listed_max: number;
  /** A "flush" action went out and no flush has started since. */
  private flush_asked = false;
  /** A flush whose answer nobody sees failed here since the last answer to one somebody does. */
  private local_failure_unreported = false;
  /**
   * A failed flush may have dropped changes only this node had that finished after it started:
   * its error does not cover those for the application, so flushes fail until one that covers
   * them (started at this change_seq or later, see flush_started) reports them.
   */
  private late_loss_upto: number | null = null;
  /**
   * Application flushes that succeeded on both nodes while extents of this node's copy were still
   * to be copied back from the peer: answered once a pass has copied them back and flushed them
   * here (syncFlushDone), failed should the link or the pass end first (answerHeldFlushes).
   */
  private held_flushes: number[] = [];
  /**
   * Extents of replicated changes the secondary answered but may still hold in its disk cache:
   * their dirty hold (one writeStart each) is kept until a flush sent to the peer after they
   * finished succeeds, so a power loss of the secondary cannot lose them unnoticed. Per extent:
   * how many holds. `flushing` is what each flush in flight covers (by request id, or -pass).
   */
  private unflushed = new Map<number, number>();
  private readonly flushing = new Map<number, Map<number, number>>();
  /** Extents the peer held unflushed changes of when the link last went down (see `unflushed`). */
  private readonly peer_unconfirmed = new Set<number>();
  /** Flushes whose failure the peer answered while this node's leg still ran (remoteDone). */
  private readonly peer_flush_failed = new Set<number>();
  /** Connections made so far, and the one each flush's peer leg went out on (by request id, or
   * -pass): a flush of an earlier connection that ends on this one marks nothing of this one's. */
  private connections = 0;
  private readonly flush_connection = new Map<number, number>();
  /** The cache epoch the peer reported at the last connect. */
  private peer_epoch: string | null = null;
  /** Consecutive passes that failed on this connection. */
  private pass_retries = 0;
  /** The last pass failed PASS_RETRIES_MAX times over; its extents wait for resumeSync. */
  private sync_gave_up = false;
  private sync_done_bytes = 0;
  /** A syncstart went out and neither syncdone nor syncintr since: the events pair up (hooks and
   * event streams read them as a state), across a pass's retries and its end-of-pass flush. */
  private sync_announced = false;
  /** The online verification running, its chunks in flight (with their range lock) and the one
   * waiting for overlapping changes to finish. */
  private verify: VerifyPass | null = null;
  private readonly verify_inflight = new Map<VerifyChunk, number>();
  private verify_waiting: VerifyChunk | null = null;
  /** verify_rate's pacing: bytes of chunks that may still start (each takes its length off;
   * allowVerify adds). Infinity: not paced. */
  private verify_allowance = Infinity;
  /** Chunks found different in an extent whose newest changes here no flush has confirmed yet: the
   * change_seq a flush must have started at, and the range lock kept meanwhile (verifyChunkDone). */
  private verify_unconfirmed: { chunk: VerifyChunk; seq: number; token: number }[] = [];
  /** change_seq at the start of the newest flush that succeeded here. */
  private local_flushed_upto = 0;

  constructor(
    private readonly map: ActiveMap,
    generation: PrimaryGeneration,
    mode: ReplicationMode,
    opts: {
      sync_chunks_max?: number; held_flush_sync_bytes_max?: number; changes_listed_max?: number;
      /** The stale extents the metadata lists (a restart): they must be in the map's sync set. */
      stale?: StaleExtents;
      /** At most this many are listed (tests use fewer); past it the copy is marked incomplete. */
      stale_listed_max?: number;
    } = {},
  ) {
    this.sync_chunks_max = opts.sync_chunks_max ?? SYNC_CHUNKS_MAX;
    this.changes_listed_max = opts.changes_listed_max ?? CHANGES_LISTED_MAX;
    assert(Number.isSafeInteger(this.changes_listed_max) && this.changes_listed_max >= 1, () => `changes_listed_max ${this.changes_listed_max}`);
    this.held_flush_sync_bytes_max = opts.held_flush_sync_bytes_max ?? HELD_FLUSH_SYNC_BYTES_MAX;
    assert(Number.isSafeInteger(this.sync_chunks_max) && this.sync_chunks_max >= 1, () => `sync_chunks_max ${this.sync_chunks_max}`);
    this.sync_locks = new RangeLock(this.sync_chunks_max + VERIFY_CHUNKS_MAX + 1);
    this.gen = { ...generation };
    this.mode = mode;
    // Until a handshake says otherwise, assume the last sync mirrored the counters, so the first
    // change made without the peer always bumps localcnt (else a restarted primary whose
    // localcnt is not 0 never bumps, and a later split-brain reads as "in sync").
    this.peer_remotecnt = generation.localcnt;
    this.stale_listed_max = opts.stale_listed_max ?? STALE_EXTENTS_MAX;
    assert(Number.isSafeInteger(this.stale_listed_max) && this.stale_listed_max >= 1 && this.stale_listed_max <= STALE_EXTENTS_MAX,
      () => `stale_listed_max ${this.stale_listed_max}`);
    assert((generation.flags & FLAG_COPY_INCOMPLETE) === 0, "a primary starts on a copy marked incomplete");
    if (opts.stale) {
      // What the process that listed them knew of the peer's copies is gone with it: each is taken
      // as unconfirmed there, copied back only if the peer's cache lasted since (connect()).
      for (const e of opts.stale.extents) {
        assert(this.map.extentState(e).in_sync_set, () => `stale extent ${e} is not in the sync set`);
        this.local_stale.set(e, "dropped");
        this.peer_unconfirmed.add(e);
      }
      this.peer_epoch = opts.stale.peer_epoch;
      this.stale_on_disk = this.staleKey();
    }
  }

  get generation(): PrimaryGeneration {
    return { ...this.gen };
  }

  /** The metadata to write now: the counters and flags, and what local_stale says for a restart. */
  private metadataAction(listed = this.listedStale()): PrimaryAction {
    const generation: PrimaryGeneration = { ...this.gen };
    if (this.copyIncomplete()) generation.flags |= FLAG_COPY_INCOMPLETE;
    else if (listed.length > 0) generation.stale = { extents: listed, peer_epoch: this.peer_epoch };
    this.stale_on_disk = this.staleKey(listed);
    return { type: "metadata", generation };
  }

  /**
   * The stale extents a restart may copy back: those the peer answered every change to. One with a
   * change still on its way there is left out until the peer answers it; should this process end
   * first, its own copy is kept, as this process keeps it when such a change fails there.
   */
  private listedStale(): number[] {
    if (this.local_stale.size === 0) return [];
    const unanswered = new Set<number>();
    for (const m of this.modifies.values()) {
      const remote = m.legs.remote_state;
      if (remote !== "pending" && remote !== "received") continue;
      const last = this.map.extentOf(m.offset + m.length - 1);
      for (let e = this.map.extentOf(m.offset); e <= last; e++) unanswered.add(e);
    }
    return [...this.local_stale.keys()].filter((e) => !unanswered.has(e)).sort((a, b) => a - b);
  }

  /**
   * The metadata marks this node's copy incomplete, so that a restart is refused (an operator fails
   * over to the peer instead): more extents are stale here than a slot lists, or this node is being
   * synchronized from the peer (decision row 3: the peer changed data this node lacks). Serving
   * that copy alone after a restart would return old data, and a change made then would split the
   * pair's data.
   */
  private copyIncomplete(): boolean {
    return this.local_stale.size > this.stale_listed_max || this.syncsrc === "secondary";
  }

  /** What the metadata says of local_stale, as a comparable string ("" for nothing stale). */
  private staleKey(listed = this.listedStale()): string {
    if (this.copyIncomplete()) return "incomplete";
    return listed.length === 0 ? "" : `${listed.join(",")}@${this.peer_epoch}`;
  }

  /**
   * Extents of this node's copy are stale (local_stale) and only this process would know which: a
   * restarted primary would take its copy as whole and copy it over the peer's good one. So the
   * metadata lists them (Metadata.stale) from the moment one goes stale, before an answer relies
   * on the peer's copy of it, until none is; a restart copies them back. Past what a slot holds it
   * marks the copy incomplete instead, and a restart is refused (PrimaryWorker.start).
   */
  private persistStale(actions: PrimaryAction[]): void {
    if (this.local_stale.size === 0 && this.stale_on_disk === "") return;
    const listed = this.listedStale();
    if (this.staleKey(listed) !== this.stale_on_disk) actions.push(this.metadataAction(listed));
  }

  /** Extents of this node's copy to be copied back from the peer (local_stale). */
  get stale_extents(): number {
    return this.local_stale.size;
  }

  get is_connected(): boolean {
    return this.connected;
  }

  get sync_source(): SyncSource | null {
    return this.syncsrc;
  }

  /** The resource got its identity at the first handshake (spec 4.4); persisted before use. */
  setResuid(resuid: bigint): PrimaryAction[] {
    assert(this.gen.resuid === 0n && resuid !== 0n, "resuid is set once, to a non-zero value");
    this.gen.resuid = resuid;
    this.gen.flags |= FLAG_RESUID_UNCONFIRMED;
    return [this.metadataAction()];
  }

  /** A fresh primary's resuid is unconfirmed until a secondary accepted it in a handshake. */
  get resuid_unconfirmed(): boolean {
    return this.gen.resuid === 0n || (this.gen.flags & FLAG_RESUID_UNCONFIRMED) !== 0;
  }

  confirmResuid(): PrimaryAction[] {
    if ((this.gen.flags & FLAG_RESUID_UNCONFIRMED) === 0) return [];
    this.gen.flags &= ~FLAG_RESUID_UNCONFIRMED;
    return [this.metadataAction()];
  }

  /** Clean extents whose map bit waits for a flush of this node (ActiveMap defer_clears). */
  get clears_waiting(): boolean {
    return this.map.clearsWaiting > 0;
  }

  /** Those clears as one map write with a flush before it: the worker stops in order. Left set, a
   * failback would copy their extents from the peer, and depend on its cache for them. */
  clearsNow(): MapWrite | null {
    return this.map.clearWaiting();
  }

  /**
   * Orderly stop of a connected, idle primary whose changes the peer has all flushed: the keepdirty
   * LRU protects nothing any more, so its extents are marked clean and a planned role switch does
   * not recopy them (HAST recopies up to keepdirty extents). Returns [] when that is not known.
   */
  forgetKeepdirty(): PrimaryAction[] {
    if (!this.connected || this.inflight() > 0 || this.sync_running || this.unflushed.size > 0 || this.flushing.size > 0 ||
      this.map.syncExtentCount() > 0) return [];
    const write = this.map.forgetKeepdirty();
    return write ? [{ type: "map", write }] : [];
  }

  setMode(mode: ReplicationMode): void {
    this.mode = mode;
  }

  syncProgress(): SyncProgress {
    // A pass counts as running until its final flush ended (syncFlushDone): before, the counters
    // and the copy's state it writes are not on disk, and "complete" would be said too early.
    const active = this.sync_running || this.pass_flush_tokens.has(this.sync_pass);
    return { done_bytes: this.sync_done_bytes, pending_bytes: this.map.syncPendingBytes(), active };
  }

  inflight(): number {
    return this.modifies.size + this.reads.size + this.flushes.size + this.blocked.length;
  }

  // ---- application requests ----

  /** `internal`: a flush the daemon started itself, whose answer no application sees. */
  submit(id: number, kind: RequestKind, offset: number, length: number, internal = false): PrimaryAction[] {
    assert(this.inflight() < REQUESTS_MAX, () => `more than ${REQUESTS_MAX} requests in flight`);
    assert(!this.modifies.has(id) && !this.reads.has(id) && !this.flushes.has(id) && !this.blocked.some((b) => b.id === id),
      () => `request id ${id} reused while in flight`);
    switch (kind) {
      case "read":
        return this.startRead(id, offset, length);
      case "flush":
        return this.startFlush(id, internal);
      default: {
        if (this.overlapsSync(offset, length) || this.blocked.length > 0 || this.overlapsWaitingChunk(offset, length)) {
          this.blocked.push({ id, kind, offset, length, mode: this.mode });
          return [];
        }
        return this.startModify(id, kind, offset, length, this.mode);
      }
    }
  }

  localDone(id: number, ok: boolean): PrimaryAction[] {
    const read = this.reads.get(id);
    if (read) return this.readLocalDone(read, ok);
    // A failed flush may have dropped pages already: marked now, before a read or another flush.
    const flush = this.flushes.get(id);
    const flush_failed = !ok && flush ? this.localFlushFailed(id) : null;
    const actions = this.legOutcome(id, this.legsOf(id).localDone(ok));
    if (ok && flush) {
      // Local flushes end in the order they started (LocalDisk.flushAsync), so a failure of an
      // earlier one has marked what it may have dropped by now: those extents are not clean.
      const covered = this.map.flushCovered(flush.map_token);
      if (covered) actions.push({ type: "map", write: covered });
    }
    return flush_failed === null ? actions : [...flush_failed, ...actions];
  }

  remoteReceived(id: number): PrimaryAction[] {
    return this.legOutcome(id, this.legsOf(id).remoteReceived());
  }

  remoteDone(id: number, ok: boolean): PrimaryAction[] {
    const read = this.reads.get(id);
    if (read) {
      this.reads.delete(id);
      if (read.suspect === true) return this.startRead(id, read.offset, read.length);
      return [{ type: "reply", id, ok, source: "remote" }];
    }
    // As localDone: the peer's failed flush may have dropped pages there already, and a read it
    // serves next would return what they replace. Marked now, not when this node's flush ends.
    const flush_failed = !ok && this.flushes.has(id) ? this.peerFlushFailed(id) : null;
    const actions = this.legOutcome(id, this.legsOf(id).remoteDone(ok));
    return flush_failed === null ? actions : [...flush_failed, ...actions];
  }

  private startRead(id: number, offset: number, length: number): PrimaryAction[] {
    const from_peer = this.someExtent(offset, length, (e) => this.currentOnPeerOnly(e));
    if (from_peer && this.touchesOwnOnly(offset, length)) {
      // Part of the range is current only here, part only on the peer: no one copy can answer.
      return [
        { type: "log", level: "error", message: `Read at ${offset} (${length} bytes) failed: it spans extents stale here and extents the peer has yet to receive.` },
        { type: "reply", id, ok: false, source: "local" },
      ];
    }
    if (from_peer) {
      // Only the peer has current data here; without it the read fails rather than return stale data.
      if (!this.connected) return [{ type: "reply", id, ok: false, source: "remote" }];
      this.reads.set(id, { id, offset, length, at: "remote" });
      return [{ type: "remote", id, kind: "read", offset, length, memsync: false }];
    }
    this.reads.set(id, { id, offset, length, at: "local" });
    return [{ type: "local", id, kind: "read", offset, length }];
  }

  /** The range touches an extent whose local copy missed a write the peer took (local_stale). */
  private touchesLocalStale(offset: number, length: number): boolean {
    return this.local_stale.size > 0 && this.someExtent(offset, length, (e) => this.local_stale.has(e));
  }

  /** Only the peer's copy of extent `e` is current: stale here, or still to be copied from the peer. */
  currentOnPeerOnly(e: number): boolean {
    return this.local_stale.has(e) || this.newerOnPeer(e);
  }

  /** This node is synchronized from the peer (syncsrc "secondary") and extent `e` is still to be
   * copied from it: the peer changed it while this node could not see. */
  private newerOnPeer(e: number): boolean {
    return this.syncsrc === "secondary" && !this.own_kept.has(e) && this.map.extentState(e).in_sync_set;
  }

  /** Extent `e` joins the sync set because the peer's copy may lack a change made here: while this
   * node is synchronized from the peer, it is copied from here all the same where this node's copy
   * is current (own_kept), not from the peer as the rest. */
  private copyFromHereIfCurrent(e: number): void {
    if (this.syncsrc === "secondary" && !this.currentOnPeerOnly(e)) this.own_kept.add(e);
  }

  /** The range touches an extent whose changes the peer still lacks. */
  private touchesOwnOnly(offset: number, length: number): boolean {
    return this.someExtent(offset, length, (e) => !this.peerHasAll(e));
  }

  private someExtent(offset: number, length: number, test: (e: number) => boolean): boolean {
    const last = this.map.extentOf(offset + length - 1);
    for (let e = this.map.extentOf(offset); e <= last; e++) if (test(e)) return true;
    return false;
  }

  /** The peer's copy of the range is not known to equal ours: some extent is dirty here for a
   * reason other than a hold (a held change is on the peer too, only not yet flushed there). */
  private peerMayDiffer(offset: number, length: number): boolean {
    return this.someExtent(offset, length, (e) => {
      const state = this.map.extentState(e);
      return state.dirty && (state.in_sync_set || state.pending > this.holdsOf(e));
    });
  }

  /** Replicated changes wait for a flush to reach the peer before their extents are let go. */
  get awaits_flush(): boolean {
    return this.unflushed.size > 0;
  }

  private holdsOf(e: number): number {
    let n = this.unflushed.get(e) ?? 0;
    for (const covered of this.flushing.values()) n += covered.get(e) ?? 0;
    return n;
  }

  private readLocalDone(read: Read, ok: boolean): PrimaryAction[] {
    if (read.suspect === true) {
      this.reads.delete(read.id);
      return this.startRead(read.id, read.offset, read.length);
    }
    if (ok) {
      this.reads.delete(read.id);
      return [{ type: "reply", id: read.id, ok: true, source: "local" }];
    }
    if (this.connected && !this.peerMayDiffer(read.offset, read.length)) {
      read.at = "remote";
      return [
        { type: "log", level: "warn", message: `Local read at ${read.offset} (${read.length} bytes) failed, trying remote node.` },
        { type: "remote", id: read.id, kind: "read", offset: read.offset, length: read.length, memsync: false },
      ];
    }
    this.reads.delete(read.id);
    return [{ type: "reply", id: read.id, ok: false, source: "local" }];
  }

  private startFlush(id: number, internal: boolean): PrimaryAction[] {
    const legs = new RequestLegs("fullsync", this.connected);
    this.flushes.set(id, { id, legs, internal, map_token: this.map.flushStarting() });
    this.flush_started.set(id, this.change_seq);
    this.flush_asked = false; // this one covers every change listed
    const actions: PrimaryAction[] = [{ type: "local", id, kind: "flush", offset: 0, length: 0 }];
    if (this.connected) {
      this.flush_connection.set(id, this.connections);
      this.coverUnflushed(id);
      actions.push({ type: "remote", id, kind: "flush", offset: 0, length: 0, memsync: false });
    }
    return actions;
  }

  /**
   * A flush ended (both legs count: it is answered now). It succeeds when this node's own flush did.
   * Spec 6.4 also counts the peer's alone, but this node's copy of what the flush covers may then
   * never reach its disk, and a later sync could copy that copy over the peer's good one (simulator
   * seed 139401: a power loss here, then the dirty extents synced from here). A failed peer flush
   * needs no error: what it covered is copied to the peer again. A failure of a flush nobody saw is
   * reported by the next one somebody sees, as Linux reports a write-back error once.
   */
  private flushOutcome(flush: Flush, out: LegOutcome): PrimaryAction[] {
    assert((out.ack === undefined) === (out.final === undefined), "flush answered apart from its end");
    if (!out.final) return [];
    const { local_ok, remote_ok } = out.final;
    this.flushes.delete(flush.id);
    const started = this.flush_started.get(flush.id); // flushDone forgets it
    assert(started !== undefined, () => `flush ${flush.id} ended without a start`);
    const actions = this.flushDone(flush.id, local_ok, remote_ok);
    if (!local_ok && remote_ok && !flush.internal) {
      actions.push({ type: "log", level: "error", message: `Flush ${flush.id} failed here; answered with an error although the peer's flush succeeded (what it covers may not be on this node's disk).` });
    }
    const unconfirmed = !remote_ok && this.peerOnlyUnconfirmed(this.flushing.get(flush.id));
    actions.push(...this.flushEnded(flush.id, remote_ok));
    let ok = local_ok;
    if (!flush.internal) {
      const unreported = this.local_failure_unreported || this.late_loss_upto !== null;
      this.local_failure_unreported = false; // reported now, whatever this answer is
      if (this.late_loss_upto !== null && started >= this.late_loss_upto) this.late_loss_upto = null;
      if (ok && unreported) {
        ok = false;
        actions.push({ type: "log", level: "error", message: `Flush ${flush.id} failed: an earlier flush failed, on this node or the peer, and changes only the failing disk held may be lost.` });
      } else if (ok && unconfirmed) {
        ok = false;
        actions.push({ type: "log", level: "error", message: `Flush ${flush.id} failed: this node is synchronized from the secondary, whose copy alone is current in extents changed since its last flush, and it did not confirm them durable.` });
      } else if (ok && this.local_stale.size > 0) {
        // Until they are copied back, the good copy of those extents is the peer's alone, and a
        // crash here would lose which copy is good: nothing may be called durable yet. Connected,
        // with little left to copy, the copy back is a pass away (milliseconds): the answer waits
        // for it rather than fail an application that may not survive a failed flush.
        if (this.connected && this.map.syncPendingBytes() <= this.held_flush_sync_bytes_max) {
          this.held_flushes.push(flush.id);
          actions.push({ type: "log", level: "warn", message: `Flush ${flush.id} waits until the ${this.local_stale.size} extents of this node's copy still to be copied back from the peer are.` });
          return [...actions, ...this.passIfIdle()];
        }
        ok = false;
        actions.push({ type: "log", level: "error", message: `Flush ${flush.id} failed: ${this.local_stale.size} extents of this node's copy are still to be copied back from the peer.` });
      }
    }
    actions.push({ type: "reply", id: flush.id, ok });
    return actions;
  }

  /** Synchronized from the peer, changes made in extents only its copy is current in that no flush
   * there confirmed: those `covered` (by a flush whose peer leg failed) or the link took unconfirmed.
   * This node's copy of those extents is not whole, so nothing holds them durably. */
  private peerOnlyUnconfirmed(covered: Map<number, number> | undefined): boolean {
    if (this.syncsrc !== "secondary") return false;
    for (const e of covered?.keys() ?? []) if (this.newerOnPeer(e)) return true;
    for (const e of this.peer_unconfirmed) if (this.newerOnPeer(e)) return true;
    return false;
  }

  /** Answers the held flushes: ok once every extent is copied back and flushed here, else failed. */
  private answerHeldFlushes(ok: boolean, why: string): PrimaryAction[] {
    if (this.held_flushes.length === 0) return [];
    const ids = this.held_flushes;
    this.held_flushes = [];
    const actions: PrimaryAction[] = ids.map((id) => ({ type: "reply", id, ok }));
    if (!ok) actions.unshift({ type: "log", level: "error", message: `Flush ${ids.join(", ")} failed: ${why}.` });
    return actions;
  }

  private noteChange(side: "local" | "remote", first: number, last: number): void {
    const seq = ++this.change_seq;
    for (let e = first; e <= last; e++) this.changed[side].set(e, seq);
  }

  /** Asks for a flush once a change list is full and none is running (its end forgets what it
   * covered; a failed one marks and forgets it): the lists stay near changes_listed_max. */
  private boundChangeLists(actions: PrimaryAction[]): void {
    if (this.flush_asked || this.flushes.size > 0) return;
    const listed = Math.max(this.changed.local.size, this.changed.remote.size, this.unflushed.size);
    if (listed <= this.changes_listed_max) return;
    this.flush_asked = true;
    actions.push({ type: "flush" });
  }

  /** Changes made durable by the flush `key` are forgotten; a failure on either side marks what it
   * may have dropped there. */
  private flushDone(key: number, local_ok: boolean, remote_ok: boolean): PrimaryAction[] {
    const started = this.flush_started.get(key);
    this.flush_started.delete(key);
    const connection = this.flush_connection.get(key);
    this.flush_connection.delete(key);
    if (started === undefined) return []; // a repeated end-of-pass report, ignored (syncFlushDone)
    const actions: PrimaryAction[] = [];
    if (local_ok) {
      forgetUpTo(this.changed.local, started);
      this.local_flushed_upto = Math.max(this.local_flushed_upto, started);
    }
    if (remote_ok) {
      forgetUpTo(this.changed.remote, started);
      forgetUpTo(this.copied_unconfirmed, started);
    }
    // A flush the link took with it failed for the link: the disconnect marked what it must (also
    // when it ends on a later connection, whose changes it never covered); one the peer failed was
    // marked when its answer came (remoteDone).
    else if (!this.peer_flush_failed.delete(key) && this.connected && connection === this.connections) actions.push(...this.remoteFlushFailed());
    this.settleUnconfirmed(actions);
    return actions;
  }

  /** Extents a change or a sync chunk in flight is writing, on this node's disk or the peer's. */
  private extentsInFlight(side: "local" | "remote"): Set<number> {
    const extents = new Set<number>();
    for (const m of this.modifies.values()) {
      const last = this.map.extentOf(m.offset + m.length - 1);
      for (let e = this.map.extentOf(m.offset); e <= last; e++) extents.add(e);
    }
    for (const [chunk, sync] of this.sync_inflight) if ((sync.from === "secondary") === (side === "local")) extents.add(chunk.extent);
    return extents;
  }

  /** A map write failed: the map on disk may lack bits this engine counts as set. The caller
   * writes this, the whole map, before the next local write or trim. */
  wholeMap(): MapWrite {
    return this.map.wholeImageWrite();
  }

  /**
   * This node's flush failed: what was written here since its last good flush may be gone from its
   * disk. Where the peer holds all of it, the extent is stale here and copied back from the peer;
   * elsewhere (changes only this node had) it is copied from here, and the loss reported. Called
   * as soon as the flush failed (the caller does, for the end-of-pass flush). `flush_id`: the
   * application's flush that failed, if it was one.
   */
  localFlushFailed(flush_id?: number): PrimaryAction[] {
    for (const m of this.modifies.values()) m.legs.localLost();
    const extents = this.extentsInFlight("local");
    const started = flush_id === undefined ? undefined : this.flush_started.get(flush_id);
    for (const [e, seq] of this.changed.local) {
      extents.add(e);
      // A later FLUSH must fail for what no failed flush covered: of an application's flush, the
      // changes made after it started; of one of the worker's own (a map or metadata write's),
      // every change (a FLUSH that started before one was answered does not cover it).
      if ((started === undefined || seq > started) && !this.peerHasAll(e)) this.late_loss_upto = Math.max(this.late_loss_upto ?? 0, seq);
    }
    this.changed.local.clear();
    this.local_failure_unreported = true;
    const stale: number[] = [];
    const actions: PrimaryAction[] = [];
    for (const e of extents) {
      if (this.peerHasAll(e)) stale.push(e);
      else {
        actions.push(...this.needSyncExtent(e));
      }
    }
    if (extents.size > 0) {
      actions.unshift({ type: "log", level: "error", message: `After a failed local flush, ${stale.length} extents will be copied back from the peer; ` +
        `${extents.size - stale.length} hold changes only this node had.` });
    }
    actions.push(...this.markLocalStale(stale));
    for (const read of this.reads.values()) if (read.at === "local" && this.touchesLocalStale(read.offset, read.length)) read.suspect = true;
    if (extents.size > 0) actions.push(...this.passIfIdle());
    this.settleUnconfirmed(actions);
    return actions;
  }

  /**
   * The peer's flush failed: what it was sent since its last good flush may be gone from its disk,
   * so those extents are copied to it again, this node's copy kept. But for extents whose only
   * current copy is the peer's (still to be copied from it), or whose copy here came from the
   * peer's unconfirmed cache (copied_unconfirmed): neither copy is whole, and flushes fail until
   * one that started after the lost changes, those in flight included, reports them. The peer's
   * copy is kept where it is still to be copied from it; a copied one goes to it again from here.
   */
  private remoteFlushFailed(): PrimaryAction[] {
    const extents = this.extentsInFlight("remote");
    for (const e of this.changed.remote.keys()) extents.add(e);
    const actions: PrimaryAction[] = [];
    let lost = 0;
    for (const e of extents) {
      if (this.newerOnPeer(e) || this.copied_unconfirmed.has(e)) {
        const seq = this.changed.remote.get(e);
        if (seq !== undefined) this.late_loss_upto = Math.max(this.late_loss_upto ?? 0, seq);
        // Changes in flight there may be dropped too (their pages were dirty when it failed).
        let in_flight = false;
        for (const m of this.modifies.values()) {
          if (this.touches(m, e, e)) in_flight = m.peer_flush_lost = true;
        }
        if (seq !== undefined || in_flight) lost++;
        if (this.newerOnPeer(e)) continue;
        // Copied from its cache, this node's copy has had changes since that the failure may have
        // taken from the peer's: copied to it again, as the rest.
      }
      if (!this.keepOwnCopy(e)) this.copyFromHereIfCurrent(e);
      actions.push(...this.needSyncExtent(e));
      this.suspectRemoteReads(e, e);
    }
    this.changed.remote.clear();
    this.copied_unconfirmed.clear();
    if (extents.size > 0) {
      actions.unshift({ type: "log", level: lost > 0 ? "error" : "warn", message: `The peer's flush failed: ${extents.size - lost} extents will be copied to it again` +
        (lost > 0 ? `; changes made in ${lost} extents whose only current copy the peer holds may be lost.` : ".") });
    }
    this.persistStale(actions);
    if (extents.size > 0) actions.push(...this.passIfIdle());
    return actions;
  }

  /** Extents just joined the sync set: a pass copies them now unless one is running (it picks them
   * up itself). */
  private passIfIdle(): PrimaryAction[] {
    if (!this.connected || this.sync_running) return [];
    const actions: PrimaryAction[] = [];
    this.unblock(actions);
    actions.push(...this.startPass());
    return actions;
  }

  /** Reads served by the peer, in flight, of extents first..last: read again when answered. */
  private suspectRemoteReads(first: number, last: number): void {
    for (const read of this.reads.values()) {
      if (read.at !== "remote") continue;
      if (this.touches(read, first, last)) read.suspect = true;
    }
  }

  /** Whether request `r` touches an extent of first..last. */
  private touches(r: { offset: number; length: number }, first: number, last: number): boolean {
    return this.map.extentOf(r.offset) <= last && this.map.extentOf(r.offset + r.length - 1) >= first;
  }

  /** Extent `e`, stale here, got a change the peer's copy may lack (or the peer's copy may have lost
   * one): neither copy holds everything, and this node's is the one kept, without what it lacks
   * (the change a local write missed, or what a failed flush dropped), which the next flush reports.
   * The peer's copy could lose other changes, silently. (Synchronized from the peer, the extent
   * stays to be copied from it, as the pass's direction says: this node's copy would take it back
   * to before the peer's changes there, which readers have seen.) */
  private keepOwnCopy(e: number): boolean {
    if (!this.local_stale.has(e)) return false;
    this.local_stale.delete(e);
    this.local_failure_unreported = true;
    return true;
  }

  /** The peer's copy of extent `e` holds every change made here: it is not waiting to be copied
   * from this node to the peer. */
  private peerHasAll(e: number): boolean {
    return this.currentOnPeerOnly(e) || !this.map.extentState(e).in_sync_set;
  }

  private needSyncExtent(e: number): PrimaryAction[] {
    const write = this.map.needSync(e * this.map.extentsize, this.map.extentLength(e));
    return write ? [{ type: "map", write }] : [];
  }

  /** Reads of these extents go to the peer and the sync copies them back from it. */
  private markLocalStale(extents: number[]): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    for (const e of extents) {
      if (!this.local_stale.has(e)) this.local_stale.set(e, "dropped");
      actions.push(...this.needSyncExtent(e));
    }
    this.persistStale(actions);
    return actions;
  }

  /** A flush is about to reach the peer: it covers every change finished so far. */
  private coverUnflushed(key: number): void {
    this.flushing.set(key, this.unflushed);
    this.unflushed = new Map();
  }

  /** The flush `key` ended: on success its changes are durable on the peer and their holds go;
   * otherwise they wait for the next flush. */
  private flushEnded(key: number, ok: boolean): PrimaryAction[] {
    const covered = this.flushing.get(key);
    if (!covered) return [];
    this.flushing.delete(key);
    if (!ok) {
      for (const [e, n] of covered) this.unflushed.set(e, (this.unflushed.get(e) ?? 0) + n);
      return [];
    }
    return this.releaseHolds(covered);
  }

  private releaseHolds(holds: Map<number, number>): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    for (const [e, n] of holds) {
      for (let i = 0; i < n; i++) {
        const write = this.map.writeComplete(e * this.map.extentsize, this.map.extentLength(e));
        if (write) actions.push({ type: "map", write });
      }
    }
    return actions;
  }

  private startModify(id: number, kind: "write" | "delete", offset: number, length: number, mode: ReplicationMode): PrimaryAction[] {
    // While the primary is being synchronized from the secondary its own data is not authoritative:
    // a change the peer does not also make would be overwritten by the copy (or, once apart, make a
    // split-brain). So changes then need the peer: refused while it is gone, failed if its leg fails.
    const from_peer = this.syncsrc === "secondary" || this.touchesLocalStale(offset, length);
    if (from_peer && !this.connected) {
      return [
        { type: "log", level: "error", message: `Refused ${kind} at ${offset}: the secondary holds changes this node lacks there, and it is not connected.` },
        { type: "reply", id, ok: false },
      ];
    }
    const actions: PrimaryAction[] = [];
    const write = this.map.writeStart(offset, length);
    if (write) actions.push({ type: "map", write });
    if (!this.connected) {
      // The remote leg cannot be sent: the extent joins the sync set now, so a connect that
      // happens before this write finishes copies it before the counters are mirrored.
      const sync = this.map.needSync(offset, length);
      if (sync) actions.push({ type: "map", write: sync });
      this.noteDisconnectedChange(actions);
    }
    // DELETE behaves like fullsync in every mode (spec 9).
    const legs = new RequestLegs(kind === "delete" || from_peer ? "fullsync" : mode, this.connected, from_peer);
    this.modifies.set(id, { id, kind, offset, length, legs });
    actions.push({ type: "local", id, kind, offset, length });
    if (this.connected) {
      actions.push({ type: "remote", id, kind, offset, length, memsync: kind === "write" && mode === "memsync", answer_waits: legs.mode !== "async" });
    }
    return actions;
  }

  /** Spec 4.4: the first change the peer cannot see bumps localcnt, durably, before the data. */
  private noteDisconnectedChange(actions: PrimaryAction[]): void {
    if (this.gen.localcnt !== this.peer_remotecnt) return;
    this.gen.localcnt += 1n;
    actions.push(this.metadataAction());
  }

  /** The legs of a write, trim or flush in flight. */
  private legsOf(id: number): RequestLegs {
    const legs = this.modifies.get(id)?.legs ?? this.flushes.get(id)?.legs;
    assert(legs !== undefined, () => `no request ${id} in flight`);
    return legs;
  }

  /** What a leg's completion (`out`, from legsOf(id)) does to its request. */
  private legOutcome(id: number, out: LegOutcome): PrimaryAction[] {
    const modify = this.modifies.get(id);
    if (!modify) return this.flushOutcome(this.flushes.get(id)!, out);
    const legs = modify.legs;
    const actions: PrimaryAction[] = [];
    // Local leg failed, the peer's succeeded (spec 6.8): answered from the peer's copy, unless the
    // peer's copy of the extent lacks older changes only this node has (neither copy is whole).
    const masked = out.final !== undefined && !out.final.local_ok && out.final.remote_ok;
    const peer_whole = !masked || !this.touchesOwnOnly(modify.offset, modify.length);
    const first = this.map.extentOf(modify.offset);
    const last = this.map.extentOf(modify.offset + modify.length - 1);
    if (masked && peer_whole) {
      // The local copy is known to be older: reads of it go to the peer and the sync copies it
      // back from there, and a restart knows it (persistStale) before the answer relies on the
      // peer's copy. A local leg a failed flush took may still be on the disk: "dropped".
      const why = legs.local_written_maybe ? "dropped" : "missed";
      for (let e = first; e <= last; e++) if (this.local_stale.get(e) !== "missed") this.local_stale.set(e, why);
      const write = this.map.needSync(modify.offset, modify.length);
      if (write) actions.push({ type: "map", write });
      this.persistStale(actions);
    }
    if (out.ack) {
      const ok = out.ack.ok && peer_whole;
      // Spec 4.4: data acknowledged while the peer cannot see it bumps localcnt before the answer
      // (a write sent while connected whose remote leg failed with the link). Synchronized from the
      // peer, one the peer made before the link went does not: that bump would make the next
      // handshake a split-brain. (Otherwise it does: the peer may yet lose it from its cache.)
      if (ok && !this.connected && !(this.syncsrc === "secondary" && legs.remote_state === "ok")) this.noteDisconnectedChange(actions);
      modify.answered_ok = ok;
      if (ok) modify.answered_seq = ++this.change_seq;
      // Answered after the peer's failed flush may have dropped it there, where it had the only copy.
      if (ok && modify.peer_flush_lost === true) this.late_loss_upto = Math.max(this.late_loss_upto ?? 0, modify.answered_seq!);
      actions.push({ type: "reply", id, ok });
    }
    if (!out.final) return actions;
    this.modifies.delete(id);
    if (masked && peer_whole) {
      actions.push(...this.passIfIdle());
    } else if (masked) {
      // Copied from here as planned; if it was answered already (before a failed flush took its
      // local leg), what that flush dropped is lost, and the next flush says so.
      if (!out.ack) this.local_failure_unreported = true;
      actions.push({ type: "log", level: "error", message: `${modify.kind} at ${modify.offset} failed here; the peer took it but lacks older changes of its extent that only this node has.` });
      // The copies differ there now: copied from here again (a pass may have copied it already).
      const again = this.map.needSync(modify.offset, modify.length);
      if (again) actions.push({ type: "map", write: again });
    }
    // An unsent leg was marked at start; a sent one that failed is marked now (sharp edge 17).
    const resync = !out.final.remote_ok && legs.remote_state !== "unsent";
    if (resync) {
      // The peer answers in order: a read of the range sent after this change may have been
      // served there without it.
      this.suspectRemoteReads(first, last);
      for (let e = first; e <= last; e++) this.copyFromHereIfCurrent(e);
      const write = this.map.needSync(modify.offset, modify.length);
      if (write) actions.push({ type: "map", write });
      // The peer lacks a change already answered (async, or memsync after "received"): the
      // counters must say so, or a later failover could take the peer's older copy as newer.
      // One that needed the peer (this node synchronized from it) fails instead: no bump, which
      // would make the next handshake a split-brain over a change nobody was promised.
      if (!legs.remote_required) this.noteDisconnectedChange(actions);
    }
    if (out.final.local_ok) this.noteChange("local", first, last);
    if (modify.received_at_loss === true) {
      for (let e = first; e <= last; e++) this.peer_unconfirmed.add(e);
    } else if (modify.answered_ok === true && (out.final.local_ok || legs.local_written_maybe) && !out.final.remote_ok) {
      // Answered ok, started before its extent went stale here, and the peer missed it: this copy
      // holds a change the peer lacks, so it is the one kept (what the failed flush dropped is
      // lost). One answered with an error is owed nothing: the peer's copy stands. A flush that
      // started before this change finished does not cover it: flushes fail until one that does
      // has reported the loss (late_loss_upto), not just the next one to end.
      let kept = false;
      for (let e = first; e <= last; e++) kept = this.keepOwnCopy(e) || kept;
      if (kept) this.late_loss_upto = Math.max(this.late_loss_upto ?? 0, modify.answered_seq!);
    }
    if (out.final.remote_ok && modify.peer_ok_at_loss !== true) {
      // Held dirty until a flush makes it durable on the peer (see `unflushed`).
      this.noteChange("remote", first, last);
      for (let e = first; e <= last; e++) this.unflushed.set(e, (this.unflushed.get(e) ?? 0) + 1);
    } else {
      const write = this.map.writeComplete(modify.offset, modify.length);
      if (write) actions.push({ type: "map", write });
    }
    // Its own copy kept, or a change the peer has now answered: what a restart copies back changed.
    this.persistStale(actions);
    this.boundChangeLists(actions);
    this.unblock(actions);
    if (resync && this.connected && !this.sync_running) actions.push(...this.startPass());
    return actions;
  }

  // ---- connection ----

  connect(c: Connection): PrimaryAction[] {
    assert(!this.connected, "connect while connected");
    this.connected = true;
    this.connections++;
    this.pass_retries = 0;
    this.sync_gave_up = false;
    const actions: PrimaryAction[] = [];
    const same_peer = c.peer_localcnt === this.peer_localcnt && c.peer_remotecnt === this.peer_remotecnt && !c.virgin;
    let syncsrc = c.syncsrc;
    const go_on_from_peer = syncsrc === "primary" && this.syncsrc === "secondary" && same_peer;
    if (go_on_from_peer) {
      // The pass from the secondary was interrupted, and the secondary, its copy marked incomplete
      // since (a write or flush failed there), now offers to take this node's copy over the changes
      // only it has (decision row 3, "dropped"). This node knows what the secondary's copy lacks
      // (own_kept: copied to it) and what it still holds alone (copied from it), so the pass goes
      // on as it was. A restart of this node in between is refused (copyIncomplete): it cannot
      // have forgotten.
      syncsrc = "secondary";
      actions.push({ type: "log", level: "warn", message: `The secondary's copy is marked incomplete, but this node was being synchronized from it: ${this.own_kept.size} extents are copied to it, the rest still from it.` });
    }
    if (this.own_kept.size > 0 && (syncsrc === "primary" || !same_peer)) {
      // Copied from here anyway; or the peer changed data since (promoted meanwhile), and its copy,
      // the sync's source, is taken over what only this node held there.
      if (syncsrc === "secondary") {
        this.local_failure_unreported = true;
        actions.push({ type: "log", level: "error", message: `The secondary changed data since the last connection: changes only this node held in ${this.own_kept.size} extents are lost (its copy is taken).` });
      }
      this.own_kept.clear();
    }
    this.syncsrc = syncsrc;
    this.peer_localcnt = c.peer_localcnt;
    this.peer_remotecnt = c.peer_remotecnt;
    if (syncsrc === "secondary" && this.stale_on_disk !== "incomplete") actions.push(this.metadataAction());
    // The first connection after `create --initial-sync full` copies every extent, whatever the
    // secondary answered (its answer asking for the full copy may have been lost with an earlier
    // connection). The map carries that from here on, so a later reconnect resumes the copy.
    const full = (this.gen.flags & FLAG_SYNC_FULL_ON_CONNECT) !== 0;
    // A stale extent the peer hands back cannot be copied back from it: its map marks what a flush
    // there failed to make durable, or a copy it has yet to receive whole (a re-created secondary).
    // One whose changes the peer answered but had not confirmed durable when the link went down is
    // copied back only if the peer's cache lasted since; otherwise they may be gone there too.
    // Either way this node's copy is kept.
    // A copy marked incomplete since (go_on_from_peer) may have lost what it had not confirmed,
    // whatever its cache epoch says (a failed flush there is reported once: its next one succeeds).
    const peer_cache_lasted = !go_on_from_peer && c.peer_cache_epoch !== null && c.peer_cache_epoch === this.peer_epoch;
    for (const e of [...this.local_stale.keys()]) {
      if (mapHas(c.peer_map, e) || (!peer_cache_lasted && this.peer_unconfirmed.has(e))) this.keepOwnCopy(e);
    }
    if (!peer_cache_lasted) {
      // Synchronized from the peer, extents still to be copied from it held changes it had not
      // confirmed durable: they may be gone there, and nothing holds them whole. The same for
      // extents copied from its cache then (copied_unconfirmed): this node's copy is kept (it is
      // whole unless a failed write-back there had already dropped a change when it was read).
      const lost = [...this.peer_unconfirmed].filter((e) => this.newerOnPeer(e) || this.copied_unconfirmed.has(e)).length;
      if (lost > 0) {
        this.local_failure_unreported = true;
        actions.push({ type: "log", level: "error", message: `The secondary's cache did not last since the link went down: changes in ${lost} extents only its copy is current in may be lost.` });
      }
    }
    this.peer_unconfirmed.clear();
    this.copied_unconfirmed.clear();
    this.peer_epoch = c.peer_cache_epoch;
    const merged = this.map.mergeRemote(full ? allBits(c.peer_map.length, this.map.nextents) : c.peer_map);
    if (merged) actions.push({ type: "map", write: merged });
    if (full) {
      this.gen.flags &= ~FLAG_SYNC_FULL_ON_CONNECT;
      actions.push(this.metadataAction());
    }
    if (c.virgin && this.local_stale.size > 0) {
      // A re-created secondary holds none of what this node's stale extents missed: those changes
      // are lost, and this node's copy is the one kept.
      this.local_stale.clear();
      this.local_failure_unreported = true;
      actions.push({ type: "log", level: "error", message: "The secondary was re-created: changes only it held for extents stale here are lost." });
    }
    if (c.virgin && this.gen.localcnt === 0n) {
      this.gen.localcnt = 1n;
      actions.push(this.metadataAction());
    }
    this.sync_inflight.clear();
    this.sync_waiting = null;
    this.persistStale(actions);
    actions.push(...this.startPass());
    return actions;
  }

  /** The link is gone: every pending remote leg failed (its extent stays dirty), sync stops. */
  disconnect(): PrimaryAction[] {
    if (!this.connected) return [];
    this.connected = false;
    const actions: PrimaryAction[] = this.answerHeldFlushes(false, "the peer left before this node's copy was copied back from it");
    // The peer's flushes are over: what it kept is its own business now (its map marks synchronized
    // changes until a flush made them durable; regular ones are held here).
    this.changed.remote.clear();
    // Changes the peer answered but never confirmed durable.
    const held = this.unflushed;
    this.unflushed = new Map();
    for (const covered of this.flushing.values()) for (const [e, n] of covered) held.set(e, (held.get(e) ?? 0) + n);
    this.flushing.clear();
    // And those it answered whose leg here still runs (no hold yet): marked now, as a reconnect may
    // come before they end.
    for (const m of this.modifies.values()) {
      if (m.legs.remote_state !== "ok") continue;
      m.peer_ok_at_loss = true;
      const last = this.map.extentOf(m.offset + m.length - 1);
      for (let e = this.map.extentOf(m.offset); e <= last; e++) held.set(e, held.get(e) ?? 0);
    }
    // Copied again at the next connect: to the peer, or back from it where stale here (connect()).
    for (const e of held.keys()) {
      this.copyFromHereIfCurrent(e); // the peer may lose power before it flushes
      this.peer_unconfirmed.add(e);
      actions.push(...this.needSyncExtent(e));
    }
    actions.push(...this.releaseHolds(held));
    this.sync_running = false;
    if (this.sync_announced) actions.push({ type: "log", level: "info", message: `Synchronization interrupted. ${this.sync_done_bytes} bytes synchronized so far.` });
    actions.push(...this.syncEnded("syncintr"));
    for (const sync of this.sync_inflight.values()) this.sync_locks.unlock(sync.token);
    this.sync_inflight.clear();
    this.sync_waiting = null;
    if (this.verify) actions.push(...this.endVerify("disconnected"));
    for (const read of [...this.reads.values()]) {
      if (read.at === "remote") actions.push(...this.remoteDone(read.id, false));
    }
    for (const id of [...this.modifies.keys(), ...this.flushes.keys()]) {
      const modify = this.modifies.get(id);
      const legs = (modify ?? this.flushes.get(id))!.legs;
      if (modify && legs.remote_state === "received") modify.received_at_loss = true;
      if (legs.remote_state === "pending" || legs.remote_state === "received") actions.push(...this.remoteDone(id, false));
    }
    this.unblock(actions);
    return actions;
  }

  // ---- synchronization ----

  /** False once the chunk's pass has ended (a disconnect: its range is no longer locked against
   * writes, so data read for it meanwhile may be older than the disk's), or once its extent is
   * copied the other way (a failed flush of the side it was read from). */
  syncChunkLive(chunk: SyncChunk): boolean {
    const sync = this.sync_inflight.get(chunk);
    return sync !== undefined && sync.from === this.syncSource(chunk.extent);
  }

  /** Where the sync copies extent `e` from. */
  private syncSource(e: number): SyncSource {
    if (this.local_stale.has(e)) return "secondary";
    return this.own_kept.has(e) ? "primary" : this.syncsrc!;
  }

  syncCopyDone(chunk: SyncChunk, ok: boolean): PrimaryAction[] {
    const sync = this.sync_inflight.get(chunk);
    if (sync === undefined) return []; // chunk of a pass that a disconnect ended
    this.sync_inflight.delete(chunk);
    this.sync_locks.unlock(sync.token);
    const actions: PrimaryAction[] = [];
    if (ok) {
      this.sync_done_bytes += chunk.length;
      const unconfirmed = this.changed.remote.get(chunk.extent);
      if (sync.from === "secondary" && unconfirmed !== undefined) this.copied_unconfirmed.set(chunk.extent, unconfirmed);
      this.noteChange(sync.from === "secondary" ? "local" : "remote", chunk.extent, chunk.extent);
      this.boundChangeLists(actions);
    }
    else {
      actions.push({ type: "log", level: "error", message: `Unable to synchronize ${chunk.length} bytes at offset ${chunk.offset}; the extent stays dirty.` });
    }
    const write = this.map.syncChunkDone(chunk, ok);
    if (write) actions.push({ type: "map", write });
    if (!this.map.extentState(chunk.extent).in_sync_set && this.local_stale.delete(chunk.extent)) this.persistStale(actions);
    this.unblock(actions);
    actions.push(...this.pumpSync());
    return actions;
  }

  /** A pass runs after every connect (even an empty one mirrors the counters at its end), and
   * again when a write's remote leg failed on a live link. */
  private startPass(): PrimaryAction[] {
    this.sync_running = true;
    this.sync_pass++;
    this.sync_done_bytes = 0;
    const pending = this.map.syncPendingBytes();
    const actions: PrimaryAction[] = [{ type: "log", level: "info", message: pending > 0 ? `Synchronization started. ${pending} bytes to go.` : "Nodes are in sync." }];
    if (pending > 0) this.announceSync(actions);
    actions.push(...this.pumpSync());
    return actions;
  }

  /** syncstart, once until the pass ends or gives up (a retry is the same synchronization). */
  private announceSync(actions: PrimaryAction[]): void {
    if (this.sync_announced) return;
    this.sync_announced = true;
    actions.push({ type: "event", event: "syncstart" });
  }

  /** The synchronization announced ends: its one closing event (syncdone, or syncintr when it did
   * not complete); none when nothing was announced. */
  private syncEnded(event: "syncdone" | "syncintr"): PrimaryAction[] {
    if (!this.sync_announced) return [];
    this.sync_announced = false;
    return [{ type: "event", event }];
  }

  /**
   * The daemon paces synchronizations to the peer (sync_rate) by adding `bytes` to what their
   * chunks may copy, the allowance held at most at `cap`, as allowVerify does. Infinity for both:
   * not paced.
   */
  allowSync(bytes: number, cap: number): PrimaryAction[] {
    assert(bytes >= 0 && cap > 0, () => `synchronization allowance of ${bytes} bytes capped at ${cap}`);
    this.sync_allowance = Math.min(cap, this.sync_allowance + bytes);
    return this.pumpSync();
  }

  /**
   * Whether sync_rate applies to the pass now. Not while this node's copy is to be copied back from
   * the peer (stale extents, or a peer with newer data: reads are served by the peer meanwhile),
   * nor while application flushes wait for the pass's end (held_flushes: answered once what was
   * copied back is flushed here). The pass then goes at full speed, and what it copies is not
   * charged to the allowance (which would hold back the rest of the pass afterwards).
   */
  private syncPacing(): boolean {
    return this.local_stale.size === 0 && this.syncsrc !== "secondary" && this.held_flushes.length === 0;
  }

  private pumpSync(): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    while (this.connected && this.sync_running && this.sync_inflight.size < this.sync_chunks_max && !(this.syncPacing() && this.sync_allowance <= 0)) {
      const chunk = this.sync_waiting ?? this.map.nextSyncChunk();
      this.sync_waiting = null;
      if (!chunk) {
        if (this.sync_inflight.size === 0 && this.map.syncPassDone()) actions.push(...this.finishPass());
        break;
      }
      // A verification chunk may hold the range (sync chunks never overlap one another: asserted).
      if (this.overlapsModify(chunk.offset, chunk.length) || this.overlapsVerify(chunk.offset, chunk.length)) {
        this.sync_waiting = chunk;
        break;
      }
      const token = this.sync_locks.tryLock(chunk.offset, chunk.length);
      assert(token !== null, () => `sync chunk at ${chunk.offset} overlaps another sync chunk`);
      const from = this.syncSource(chunk.extent);
      if (this.syncPacing()) this.sync_allowance -= chunk.length;
      this.sync_inflight.set(chunk, { token, from });
      this.announceSync(actions); // extents that joined a pass begun with nothing to copy
      actions.push({ type: "sync-copy", chunk, from });
    }
    return actions;
  }

  /** Spec 8 end of pass: direction forgotten, counters mirrored and persisted. A pass with failed
   * chunks leaves their extents dirty and the counters alone (the nodes are not in sync). */
  private finishPass(): PrimaryAction[] {
    this.sync_running = false;
    const failed = this.map.syncDeferredExtentCount();
    if (failed > 0) return this.retryPass(`Synchronization left ${failed} extents dirty after errors`);
    this.coverUnflushed(-this.sync_pass);
    this.flush_connection.set(-this.sync_pass, this.connections);
    this.flush_started.set(-this.sync_pass, this.change_seq);
    this.pass_flush_tokens.set(this.sync_pass, this.map.flushStarting());
    return [{ type: "sync-flush", pass: this.sync_pass }];
  }

  /** A pass that failed (chunk errors, or the final flush) runs again at once, a bounded number of
   * times; after that the extents wait for resumeSync (the worker's timer) or the next connection. */
  private retryPass(what: string): PrimaryAction[] {
    if (this.pass_retries >= PASS_RETRIES_MAX) {
      this.sync_gave_up = true;
      return [{ type: "log", level: "error", message: `${what}; giving up after ${PASS_RETRIES_MAX} retries, the nodes are not in sync; trying again in ${SYNC_RESUME_S} s.` },
        ...this.syncEnded("syncintr"), ...this.answerHeldFlushes(false, "the copy back from the peer did not complete")];
    }
    this.pass_retries++;
    this.map.syncRewind();
    return [{ type: "log", level: "warn", message: `${what}; retrying (${this.pass_retries}/${PASS_RETRIES_MAX}).` }, ...this.startPass()];
  }

  /**
   * Called every SYNC_RESUME_S by the worker: a pass given up after errors (a disk that failed for
   * a while) starts again, with fresh retries, rather than leaving the nodes apart until the link
   * happens to drop. HAST's sync thread likewise keeps going over what is still dirty.
   */
  resumeSync(): PrimaryAction[] {
    if (!this.sync_gave_up || !this.connected || this.sync_running) return [];
    this.sync_gave_up = false;
    this.pass_retries = 0;
    this.map.syncRewind();
    return [{ type: "log", level: "warn", message: `Synchronization resumed: ${this.map.syncExtentCount()} extents still differ.` }, ...this.startPass()];
  }

  /** The peer answered that the end-of-pass flush failed there, before this node's ended: acted on
   * now, as remoteDone does for an application's flush (syncFlushDone then does not again). */
  syncPeerFlushFailed(pass: number): PrimaryAction[] {
    return this.peerFlushFailed(-pass);
  }

  /** The peer's flush `key` failed: what it covered is marked now, and flushDone leaves it. */
  private peerFlushFailed(key: number): PrimaryAction[] {
    if (!this.connected || !this.flush_started.has(key)) return [];
    this.peer_flush_failed.add(key);
    return this.remoteFlushFailed();
  }

  /** Spec 8 end of pass, once the copied data is durable on both sides: direction forgotten,
   * counters mirrored and persisted. */
  syncFlushDone(pass: number, local_ok: boolean, remote_ok: boolean): PrimaryAction[] {
    // A failure on either side starts a pass over what it may have dropped.
    const released = [...this.flushDone(-pass, local_ok, remote_ok), ...this.flushEnded(-pass, local_ok && remote_ok && this.connected)];
    // Succeeded here, it covers the clears the pass made (its extents got clean before it started).
    const token = this.pass_flush_tokens.get(pass);
    this.pass_flush_tokens.delete(pass);
    const covered = local_ok && token !== undefined ? this.map.flushCovered(token) : null;
    if (covered) released.push({ type: "map", write: covered });
    if (pass !== this.sync_pass || !this.connected || this.sync_running) return released;
    if (!local_ok) released.push(...this.answerHeldFlushes(false, "the flush after the copy back failed here"));
    if (!local_ok || !remote_ok) return [...released, ...this.retryPass("Unable to flush the synchronized data")];
    this.pass_retries = 0;
    const actions: PrimaryAction[] = [...released];
    // Stale extents left now were marked during the pass; their copy back is not flushed yet.
    actions.push(...this.answerHeldFlushes(this.local_stale.size === 0, `${this.local_stale.size} extents of this node's copy are still to be copied back from the peer`));
    if (this.sync_done_bytes > 0) actions.push({ type: "log", level: "info", message: `Synchronization complete. ${this.sync_done_bytes} bytes synchronized.` });
    actions.push(...this.syncEnded("syncdone"));
    this.syncsrc = "primary";
    this.own_kept.clear();
    this.gen.localcnt = this.peer_remotecnt;
    this.gen.remotecnt = this.peer_localcnt;
    this.gen.flags &= ~FLAG_SYNC_FULL_ON_CONNECT;
    actions.push(this.metadataAction(), { type: "in-sync" });
    return actions;
  }

  // ---- online verification ----

  /** Why a verification cannot start now, or null. */
  verifyRefusal(): string | null {
    if (this.verify) return "a verification is already running";
    if (!this.connected) return "the secondary is not connected";
    if (this.syncsrc === "secondary") return "this node's copy is being synchronized from the secondary";
    // As DRBD: the copies are compared once they are meant to be equal.
    if (this.sync_running || this.map.syncExtentCount() > 0) return "a synchronization is running or pending; verify once the nodes are in sync";
    return null;
  }

  /** Compares every chunk of the device with the peer's copy; a chunk that differs is copied to
   * the peer (this node's copy counts, as for any synchronization from the primary). `from`: where
   * an earlier verification ended early (its resume_offset: `hastctl verify --resume`), an offset
   * the operator gave (`--from`; the walk begins at the start of its chunk), or 0. */
  startVerify(from_byte = 0): PrimaryAction[] {
    const refused = this.verifyRefusal();
    assert(refused === null, () => `verification started although ${refused}`);
    this.verify = new VerifyPass(this.map.datasize, this.map.extentsize, this.map.chunk_bytes, from_byte);
    const from = this.verify.tally().from_offset;
    const what = from === 0 ? `${this.map.datasize} bytes` : `${this.map.datasize - from} bytes from offset ${from}`;
    return [{ type: "log", level: "info", message: `Verification started: ${what} to compare with the peer's copy.` }, ...this.pumpVerify()];
  }

  /**
   * The daemon paces verifications (verify_rate) by adding `bytes` to what chunks may start, the
   * allowance held at most at `cap`; a chunk starts while the allowance is positive and takes its
   * length off (so it may go below zero). Infinity for both: not paced.
   */
  allowVerify(bytes: number, cap: number): PrimaryAction[] {
    assert(bytes >= 0 && cap > 0, () => `verification allowance of ${bytes} bytes capped at ${cap}`);
    this.verify_allowance = Math.min(cap, this.verify_allowance + bytes);
    return this.pumpVerify();
  }

  /** The running verification's tally, or null. */
  verifyProgress(): VerifyCounts | null {
    return this.verify?.tally() ?? null;
  }

  /** False once the chunk's verification ended (the link went down, or --stop): the range is no
   * longer kept from writes, so what was read for it proves nothing. */
  verifyChunkLive(chunk: VerifyChunk): boolean {
    return this.verify_inflight.has(chunk);
  }

  verifyChunkDone(chunk: VerifyChunk, outcome: Exclude<VerifyOutcome, "skipped">): PrimaryAction[] {
    const token = this.verify_inflight.get(chunk);
    if (token === undefined) return []; // of a verification that ended (the link's loss, --stop)
    this.verify_inflight.delete(chunk);
    const actions: PrimaryAction[] = [];
    if (outcome === "differ" && this.changed.local.has(chunk.extent)) {
      // This node's copy holds changes no flush has confirmed: a failed flush (Linux reports a
      // write-back error once, at the next flush) may yet say what was read here is not on its
      // disk, and the peer's copy then counts. The range stays locked until a flush that starts
      // now ends: nothing writes it meanwhile, so a success confirms the copy compared, and a
      // failure sends the extent to the sync. (Compared again instead, the chunk could differ
      // again for ever while other writes kept its extent changed.)
      this.verify_unconfirmed.push({ chunk, seq: this.change_seq, token });
      actions.push({ type: "log", level: "info", message: `Verification: ${chunk.length} bytes at offset ${chunk.offset} differ from the peer's copy while this node's changes there are not flushed yet; deciding after a flush.` });
      if (!this.flush_asked) {
        this.flush_asked = true;
        actions.push({ type: "flush" });
      }
    } else {
      this.sync_locks.unlock(token);
      this.verifyEnded(chunk, outcome, actions);
    }
    this.unblock(actions);
    actions.push(...this.pumpVerify());
    return actions;
  }

  /** Differences waiting on a flush (verifyChunkDone) whose flush ended: confirmed, they are copied
   * to the peer; where the extent went to the sync meanwhile (the flush failed), not compared. */
  private settleUnconfirmed(actions: PrimaryAction[]): void {
    const ready = this.verify_unconfirmed.filter((u) => this.local_flushed_upto >= u.seq || this.syncTakes(u.chunk.extent));
    if (ready.length === 0) return;
    this.verify_unconfirmed = this.verify_unconfirmed.filter((u) => !ready.includes(u));
    for (const u of ready) {
      this.sync_locks.unlock(u.token);
      if (this.syncTakes(u.chunk.extent)) this.verify!.skipExtent(u.chunk);
      else this.verifyEnded(u.chunk, "differ", actions);
    }
    this.unblock(actions);
    actions.push(...this.pumpVerify());
  }

  /** The copies of the extent differ by design: a sync copies it (from the peer, where stale here). */
  private syncTakes(extent: number): boolean {
    return this.map.extentState(extent).in_sync_set || this.local_stale.has(extent);
  }

  private verifyEnded(chunk: VerifyChunk, outcome: Exclude<VerifyOutcome, "skipped">, actions: PrimaryAction[]): void {
    this.verify!.ended(chunk, outcome);
    if (outcome !== "differ") return;
    // No change of the range was in flight and its extent was not to be synchronized: the two
    // copies should have been equal. The primary's copy is the one that counts.
    actions.push({ type: "log", level: "warn", message: `Verification: ${chunk.length} bytes at offset ${chunk.offset} differ from the peer's copy; copying this node's copy to the peer.` });
    actions.push(...this.needSyncExtent(chunk.extent));
    actions.push(...this.passIfIdle());
  }

  private pumpVerify(): PrimaryAction[] {
    const actions: PrimaryAction[] = [];
    const pass = this.verify;
    while (pass !== null && this.verify_inflight.size < VERIFY_CHUNKS_MAX && this.verify_allowance > 0) {
      const chunk = this.verify_waiting ?? pass.next();
      this.verify_waiting = null;
      if (chunk === null) {
        if (this.verify_inflight.size === 0 && this.verify_unconfirmed.length === 0) actions.push(...this.endVerify("complete"));
        break;
      }
      // The rest of the extent goes with the chunk: one step per extent, not per chunk.
      if (this.syncTakes(chunk.extent)) {
        pass.skipExtent(chunk);
        continue;
      }
      const token = this.overlapsModify(chunk.offset, chunk.length) ? null : this.sync_locks.tryLock(chunk.offset, chunk.length);
      if (token === null) {
        this.verify_waiting = chunk; // a change or a sync chunk holds the range: unblock() retries
        break;
      }
      this.verify_inflight.set(chunk, token);
      this.verify_allowance -= chunk.length;
      actions.push({ type: "verify", chunk });
    }
    return actions;
  }

  /** Only verification chunks: a sync chunk overlapping another stays an invariant violation. */
  private overlapsVerify(offset: number, length: number): boolean {
    for (const chunk of this.verify_inflight.keys()) if (overlaps(chunk, offset, length)) return true;
    return this.verify_unconfirmed.some((u) => overlaps(u.chunk, offset, length));
  }

  /** The operator ends the running verification (`hastctl verify --stop`); false if none runs. */
  stopVerify(): PrimaryAction[] | null {
    if (!this.verify) return null;
    const actions = this.endVerify("stopped");
    this.unblock(actions);
    return actions;
  }

  /** Chunks still in flight are let go: their late reports are ignored (verifyChunkDone). */
  private endVerify(ended: VerifyResult["ended"]): PrimaryAction[] {
    // The first chunk not compared: one let go in flight, waiting, or to compare again, or the rest.
    let resume_offset = this.verify!.position;
    const unfinished = [...this.verify_inflight.keys(), ...this.verify_unconfirmed.map((u) => u.chunk), ...(this.verify_waiting ? [this.verify_waiting] : [])];
    for (const chunk of unfinished) resume_offset = Math.min(resume_offset, chunk.offset);
    for (const token of [...this.verify_inflight.values(), ...this.verify_unconfirmed.map((u) => u.token)]) this.sync_locks.unlock(token);
    this.verify_inflight.clear();
    this.verify_waiting = null;
    this.verify_unconfirmed = [];
    const result: VerifyResult = { ...this.verify!.tally(), ended, resume_offset };
    this.verify = null;
    // Every byte from the walk's start ended in one outcome or other once it is complete.
    assert(result.from_offset <= resume_offset && resume_offset <= this.map.datasize &&
      (ended !== "complete" || (result.done_bytes === result.total_bytes && resume_offset === this.map.datasize)),
      () => `verification ${ended} at ${resume_offset}: ${JSON.stringify(result)}`);
    const found = describeVerify(result);
    const message = ended === "complete" ? `Verification complete: ${found}.`
      : `Verification ${ended === "stopped" ? "stopped by the operator" : "interrupted by the link's loss"} after ${result.done_bytes} of ${result.total_bytes} bytes: ${found}; ` +
        `it goes on from offset ${resume_offset} with hastctl verify --resume, or --from ${resume_offset} once this worker restarted.`;
    const level = ended !== "complete" || result.differ_chunks > 0 || result.failed_bytes > 0 ? "warn" : "info";
    return [{ type: "log", level, message }, { type: "verified", result }];
  }

  // ---- range interplay between writes and sync chunks ----

  private overlapsSync(offset: number, length: number): boolean {
    return this.sync_locks.isLocked(offset, length);
  }

  /** A chunk waiting for writes to drain is not starved by newer writes to its range. */
  private overlapsWaitingChunk(offset: number, length: number): boolean {
    return overlaps(this.sync_waiting, offset, length) || overlaps(this.verify_waiting, offset, length);
  }

  /** Started writes only: a blocked write may itself wait for this chunk (waiting on it would deadlock). */
  private overlapsModify(offset: number, length: number): boolean {
    const end = offset + length;
    for (const m of this.modifies.values()) if (m.offset < end && offset < m.offset + m.length) return true;
    return false;
  }

  /** Starts blocked writes whose range is free again, in order; a still-blocked one keeps the rest
   * waiting. Their actions are appended to `actions`. */
  private unblock(actions: PrimaryAction[]): void {
    while (this.blocked.length > 0 && !this.overlapsSync(this.blocked[0]!.offset, this.blocked[0]!.length) &&
      !this.overlapsWaitingChunk(this.blocked[0]!.offset, this.blocked[0]!.length)) {
      const b = this.blocked.shift()!;
      actions.push(...this.startModify(b.id, b.kind, b.offset, b.length, b.mode));
    }
    if (this.sync_waiting && !this.overlapsModify(this.sync_waiting.offset, this.sync_waiting.length)) actions.push(...this.pumpSync());
    if (this.verify_waiting && !this.overlapsModify(this.verify_waiting.offset, this.verify_waiting.length)) actions.push(...this.pumpVerify());
  }
}

function overlaps(chunk: { offset: number; length: number } | null, offset: number, length: number): boolean {
  return chunk !== null && chunk.offset < offset + length && offset < chunk.offset + chunk.length;
}

/** Forgets the changes numbered up to `seq` (a flush that started then made them durable). */
function forgetUpTo(changed: Map<number, number>, seq: number): void {
  for (const [e, n] of changed) if (n <= seq) changed.delete(e);
}

function mapHas(map: Uint8Array, e: number): boolean {
  return (e >> 3) < map.length && (map[e >> 3]! & (1 << (e & 7))) !== 0;
}
