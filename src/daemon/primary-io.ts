// The primary's I/O path (spec 6.4): frontend requests go into the PrimaryEngine (src/core), and
// its actions are carried out here against the local component (src/io/disk.ts) and the peer
// link. Trace of a write: submit → "map" (dirty bit written and flushed first) → "local" pwrite
// and "remote" WRITE frame → replies from both legs → "reply" answers the frontend at the moment
// the replication mode allows → the extent is released (or kept dirty when the peer missed it).
//
// Local I/O is synchronous, so actions run one at a time in the order the engine returned them,
// which is exactly its ordering contract (map and metadata writes are durable before the next).
// The exceptions wait for the disk on a helper thread and are answered later (the engine takes
// completions in any order): a FLUSH's fdatasync, and the part of a READ the page cache does not
// hold. On a real disk they take milliseconds, or tens of microseconds each, which the event loop
// would otherwise spend blocked while the replies and requests behind them wait.
import type { MapWrite } from "../core/activemap.ts";
import type { Metadata } from "../core/metadata.ts";
import { REQUESTS_MAX, type PrimaryAction, type PrimaryEngine, type PrimaryGeneration, type RequestKind } from "../core/primary-engine.ts";
import type { SyncChunk } from "../core/activemap.ts";
import type { VerifyChunk, VerifyResult } from "../core/verify-pass.ts";
import { batchMapWrites, CLEARS_HELD_MS, HeldMapWrites } from "../core/map-batch.ts";
import { BackendError, type BlockBackend } from "../gate/block-backend.ts";
import { BufferPool } from "../gate/buffer-pool.ts";
import { chunkDigest } from "../io/digest.ts";
import type { LocalDisk } from "../io/disk.ts";
import { native } from "../native.ts";
import { InFlight } from "../io/in-flight.ts";
import { failedInFlush, type MetadataStore } from "../io/metadata-store.ts";
import type { PeerLink } from "../io/peer-link.ts";
import { MAX_DATA_BYTES, VERSION_DIGEST, VERSION_IN_SYNC, type Frame, type ReplyErrorName } from "../wire/peer/index.ts";
import { QUEUED_READ_MIN_BYTES } from "../wire/receive-buffer.ts";
import type { ResourceStatistics, VerifyCompare } from "../wire/control.ts";
import type { HookEvent } from "./ipc.ts";
import type { Logger } from "./log.ts";
import { Pacer } from "./pacer.ts";

/**
 * Bytes of frames waiting for the socket before new writes wait for room: what async mode may run
 * ahead of the peer (hastd's bound is its 160 requests of up to 128 KiB, 20 MiB). Each queued byte
 * is a copy the worker holds. Against 16 MiB, 8 MiB measured as fast (async 1 MiB writes on disk,
 * ten alternating runs: 1082 vs 1063 MiB/s) with a lower peak (mean 81.8 vs 86.9 MiB, highest
 * 91.5 vs 101.2); 64 MiB no faster and 12 MiB more resident.
 */
const SEND_QUEUE_MAX_BYTES = 8 * 1024 * 1024;
/**
 * Requests the engine tracks at once. An async write is answered once it is on the local disk but
 * stays tracked until the secondary has it, so a slow peer could pile up more of them than the
 * frontends' own bounds suggest; new requests wait here instead (the application slows down).
 */
const ENGINE_REQUESTS_MAX = REQUESTS_MAX / 2;
/** Sync chunks read from the local disk reuse buffers (fresh memory costs a page fault per page). */
const SYNC_POOL_MIN_BYTES = 64 * 1024;
const SYNC_POOL_BYTES_MAX = 16 * 1024 * 1024;
/** The first bytes of a sync chunk read to tell a chunk of zeroes (sent as a hole) from data. */
const SYNC_PROBE_BYTES = 4096;
/** Chunks smaller than this are sent from memory: a sendfile costs more than the copy it saves. */
const FILE_SEND_MIN_BYTES = QUEUED_READ_MIN_BYTES;
/** Zero writes are sent as WRITE frames of at most this many zero bytes (hole-compressed on the wire). */
const ZERO_CHUNK_BYTES = 1024 * 1024;

interface AppRequest {
  kind: RequestKind;
  offset: number;
  length: number;
  /** Read target, or write source. */
  buf: Uint8Array | null;
  /** A flush of the daemon's own (submit). */
  internal: boolean;
  local_error: Error | null;
  remote_error: ReplyErrorName | null;
  /** The answer, when it came while the request was being submitted (no promise made yet). */
  outcome: "ok" | BackendError | null;
  /** The promise's, once submit() made one. */
  resolve: (() => void) | null;
  reject: ((err: Error) => void) | null;
}

type RemoteWaiter =
  | { app: number; sent_ms: number }
  | { sync: (reply: Extract<Frame, { kind: "reply" }>) => void; sent_ms: number };

export interface PrimaryIoOptions {
  disk: LocalDisk;
  store: MetadataStore;
  meta: Metadata;
  engine: PrimaryEngine;
  stats: ResourceStatistics;
  log: Logger;
  emit: (event: HookEvent) => void;
  /** An online verification ended. */
  verified: (result: VerifyResult) => void;
  /** verify_rate: bytes per second a verification reads at most; null = no limit. */
  verify_rate: number | null;
  /** sync_rate: bytes per second a synchronization copies to the peer at most; null = no limit. */
  sync_rate: number | null;
  /** resync_digest: a sync chunk to the peer is sent only when the peer's SHA-256 of it differs. */
  resync_digest: boolean;
}

export class PrimaryIo implements BlockBackend {
  readonly size_bytes: number;
  readonly block_bytes: number;
  private readonly o: PrimaryIoOptions;
  private readonly localoff: number;
  private next_id = 1;
  private readonly apps = new Map<number, AppRequest>();
  private readonly remotes = new Map<number, RemoteWaiter>();
  private readonly queue: PrimaryAction[] = [];
  private running = false;
  private readonly verify_pacer: Pacer;
  /** Runs while connected: passes start and end within the engine. */
  private readonly sync_pacer: Pacer;
  /** Requests waiting for the engine to have room (ENGINE_REQUESTS_MAX), in arrival order. */
  private readonly waiting: AppRequest[] = [];
  private admitting = false;
  private readonly held_maps = new HeldMapWrites();
  /** Writes held_maps CLEARS_HELD_MS after the first update was held. */
  private held_maps_timer: Timer | null = null;
  /** A map write failed: the map on disk may lack bits the engine counts as set, which the next
   * local write or trim relies on. The whole map is written before it, which fails if that write
   * does (as the secondary does). */
  private map_unsure = false;
  /** The newest metadata the engine counts as on disk, whose write failed: the counters, stale list
   * or incomplete mark it carries are what a restart relies on. Written again before the next local
   * write, trim or flush, which fails if that write does too. */
  private meta_unsure: PrimaryGeneration | null = null;
  /** Actions of requests submitted in this tick, held until its end (runSubmitted). */
  private batch: PrimaryAction[] | null = null;
  private link: PeerLink | null = null;
  /** The link's peer protocol version. */
  private link_version = 0;
  /** Error replies received on this link, of every kind (IN_SYNC carries the count). */
  private replies_failed = 0;
  private zero: Uint8Array | null = null;
  private readonly sync_pool = new BufferPool(SYNC_POOL_MIN_BYTES, SYNC_POOL_BYTES_MAX);
  private readonly sync_probe = new Uint8Array(SYNC_PROBE_BYTES);
  /** Local flushes and reads on their helper thread, until answered (settleLocal, readRest). */
  private readonly local_async = new InFlight();

  constructor(o: PrimaryIoOptions) {
    this.o = o;
    this.size_bytes = o.meta.datasize;
    this.block_bytes = o.disk.sector_bytes;
    this.localoff = o.meta.localoff;
    this.verify_pacer = new Pacer(o.verify_rate, (bytes, cap) => this.run(o.engine.allowVerify(bytes, cap)));
    this.sync_pacer = new Pacer(o.sync_rate, (bytes, cap) => this.run(o.engine.allowSync(bytes, cap)));
  }

  // ---- BlockBackend (the frontend's view) ----

  read(offset: number, into: Uint8Array): Promise<void> {
    this.o.stats.reads++;
    return promised(this.submit("read", offset, into.length, into));
  }

  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> | null {
    this.o.stats.writes++;
    // The common case in one submit: a write that fits one frame, room to send it, no FUA.
    if (!fua && data.length <= MAX_DATA_BYTES && !this.sendQueueFull()) return this.submit("write", offset, data.length, data);
    return this.writeInParts(offset, data, fua);
  }

  private async writeInParts(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    await this.submitWrite(offset, data);
    if (fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, _may_trim: boolean): Promise<void> {
    this.o.stats.writes++;
    this.zero ??= new Uint8Array(ZERO_CHUNK_BYTES);
    for (let done = 0; done < length; done += ZERO_CHUNK_BYTES) {
      await this.submitWrite(offset + done, this.zero.subarray(0, Math.min(ZERO_CHUNK_BYTES, length - done)));
    }
  }

  trim(offset: number, length: number): Promise<void> {
    this.o.stats.deletes++;
    return promised(this.submit("delete", offset, length, null));
  }

  flush(): Promise<void> {
    this.o.stats.flushes++;
    return promised(this.submit("flush", 0, 0, null));
  }

  private async submitWrite(offset: number, data: Uint8Array): Promise<void> {
    for (let done = 0; done < data.length; done += MAX_DATA_BYTES) {
      // async (and memsync) answer before the peer has the data: bound what waits to be sent.
      if (this.sendQueueFull()) await this.link!.room(SEND_QUEUE_MAX_BYTES);
      const part = data.subarray(done, Math.min(data.length, done + MAX_DATA_BYTES));
      await this.submit("write", offset + done, part.length, part);
    }
  }

  private sendQueueFull(): boolean {
    return this.link !== null && this.link.queued_bytes > SEND_QUEUE_MAX_BYTES;
  }

  /**
   * null when the request succeeded before this returns (an unreplicated write: the local write is
   * all it waits for), else a promise of its answer. `internal`: a flush of the daemon's own, whose
   * failure the next application flush reports.
   */
  private submit(kind: RequestKind, offset: number, length: number, buf: Uint8Array | null, internal = false): Promise<void> | null {
    const app: AppRequest = {
      kind, offset, length, buf, internal, local_error: null, remote_error: null, outcome: null, resolve: null, reject: null,
    };
    if (this.waiting.length === 0 && this.o.engine.inflight() < ENGINE_REQUESTS_MAX) this.start(app);
    else this.waiting.push(app);
    if (app.outcome === "ok") return null;
    if (app.outcome !== null) return Promise.reject(app.outcome);
    return new Promise<void>((resolve, reject) => {
      app.resolve = resolve;
      app.reject = reject;
    });
  }

  private start(app: AppRequest): void {
    const id = this.next_id++;
    this.apps.set(id, app);
    this.runSubmitted(this.o.engine.submit(id, app.kind, app.offset, app.length, app.internal));
  }

  /**
   * A new request's actions. One that needs an activemap update waits for the end of the tick with
   * every request submitted after it, and their updates are then written as one (one flush, not
   * one per request: src/core/map-batch.ts). Anything else to run meanwhile runs after the batch.
   */
  private runSubmitted(actions: PrimaryAction[]): void {
    if (this.batch === null) {
      if (this.running || !hasMapWrite(actions)) return this.run(actions);
      this.batch = [];
      queueMicrotask(() => this.run([]));
    }
    for (const a of actions) this.batch.push(a);
  }

  /** After requests finished: start waiting ones while the engine has room. */
  private admitWaiting(): void {
    if (this.admitting) return; // a start() below runs run(), which calls back here
    this.admitting = true;
    try {
      while (this.waiting.length > 0 && this.o.engine.inflight() < ENGINE_REQUESTS_MAX) this.start(this.waiting.shift()!);
    } finally {
      this.admitting = false;
    }
  }

  // ---- the peer ----

  /** A handshake succeeded: requests now go to the peer too. */
  attach(link: PeerLink, version: number, actions: PrimaryAction[]): void {
    this.link = link;
    this.link_version = version;
    this.replies_failed = 0;
    if (this.o.resync_digest && version < VERSION_DIGEST) {
      this.o.log.warn(`resync_digest is on, but the peer speaks protocol version ${version} (digests need ${VERSION_DIGEST}): synchronization sends every chunk.`);
    }
    link.start((frame) => this.onFrame(frame), (reason) => this.detach(reason));
    this.run(actions);
    // After the connect's actions (its map write goes before any request to the peer); the pass
    // they started is paced from here on, unless the link already went down under them.
    if (this.link === link) this.sync_pacer.start();
  }

  get connected(): boolean {
    return this.link !== null;
  }

  /** The oldest request the peer has not answered, for the `timeout` check. */
  oldestRemoteMs(): number | null {
    let oldest: number | null = null;
    for (const w of this.remotes.values()) if (oldest === null || w.sent_ms < oldest) oldest = w.sent_ms;
    return oldest;
  }

  closeLink(reason: string): void {
    this.link?.close(reason);
  }

  private detach(reason: string): void {
    if (!this.link) return;
    this.link = null;
    this.sync_pacer.stop();
    this.o.log.warn(`Disconnected from the peer: ${reason}`);
    const waiting = [...this.remotes.values()];
    this.remotes.clear();
    for (const w of waiting) if ("sync" in w) w.sync({ kind: "reply", seq: 0, error: "ENOTCONN", received: false, data: new Uint8Array(0) });
    this.o.emit("disconnect");
    this.run(this.o.engine.disconnect());
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === "keepalive") return;
    if (frame.kind !== "reply") {
      this.closeLink(`unexpected ${frame.kind} frame from the secondary`);
      return;
    }
    const waiter = this.remotes.get(frame.seq);
    if (!waiter) {
      this.closeLink(`reply for unknown request ${frame.seq}`);
      return;
    }
    if (frame.error !== "OK") this.replies_failed++;
    if ("sync" in waiter) {
      this.remotes.delete(frame.seq);
      waiter.sync(frame);
      return;
    }
    const app = this.apps.get(waiter.app);
    if (frame.received) {
      this.run(this.o.engine.remoteReceived(waiter.app));
      return;
    }
    this.remotes.delete(frame.seq);
    const ok = frame.error === "OK";
    if (app) {
      if (!ok) app.remote_error = frame.error;
      if (ok && app.kind === "read") {
        if (frame.data.length !== app.buf!.length) {
          this.closeLink(`read reply of ${frame.data.length} bytes for a ${app.buf!.length}-byte read`);
          return;
        }
        app.buf!.set(frame.data);
      }
    }
    this.run(this.o.engine.remoteDone(waiter.app, ok));
  }

  /** stable: the frame's data stays unchanged until the peer replied or the link closed. */
  private send(frame: Frame, waiter: RemoteWaiter, seq: number, stable = false): boolean {
    if (!this.link || !this.mapReadyForPeer()) return false;
    this.remotes.set(seq, waiter);
    this.link.send(frame, stable);
    return true;
  }

  // ---- executing engine actions ----

  /** Carries out engine actions that arise outside a request (e.g. the connector's resuid). */
  apply(actions: PrimaryAction[]): void {
    this.run(actions);
  }

  private run(actions: PrimaryAction[]): void {
    // A batch of submits was made first: it runs first (map writes keep their seq order).
    if (this.batch !== null) {
      for (const a of batchMapWrites(this.batch)) this.queue.push(a);
      this.batch = null;
    }
    for (const a of actions) this.queue.push(a);
    if (this.running) return;
    this.running = true;
    try {
      // Index walk, not shift(): actions executed here may append more.
      for (let i = 0; i < this.queue.length; i++) this.execute(this.queue[i]!);
    } finally {
      this.queue.length = 0;
      this.running = false;
    }
    if (this.waiting.length > 0) this.admitWaiting();
  }

  private execute(a: PrimaryAction): void {
    switch (a.type) {
      case "map":
        return this.mapUpdate(a.write);
      case "metadata":
        return void this.writeMetadata(a.generation);
      case "local":
        return this.local(a.id, a.kind, a.offset);
      case "remote":
        return this.remote(a.id, a.kind, a.offset, a.length, a.memsync, a.answer_waits === true);
      case "reply":
        return this.reply(a.id, a.ok, a.source);
      case "sync-copy":
        void this.syncCopy(a.chunk, a.from).then((ok) => this.run(this.o.engine.syncCopyDone(a.chunk, ok)));
        return;
      case "sync-flush":
        void this.flushBoth(a.pass).then((r) => this.run(this.o.engine.syncFlushDone(a.pass, r.local_ok, r.remote_ok)));
        return;
      case "flush":
        return this.ownFlush("A flush to empty the change lists");
      case "in-sync":
        if (this.link === null || this.link_version < VERSION_IN_SYNC) return;
        // The counters the pass ended with go first: a secondary told it is whole may be promoted,
        // and this node must then come back with counters that say it is the older copy.
        if (!this.metadataWritten()) {
          this.o.log.error("The pass's counters could not be written: the secondary is not told its copy is whole.");
          return;
        }
        this.link.send({ kind: "in-sync", replies_failed: this.replies_failed });
        return;
      case "verify":
        void this.verifyChunk(a.chunk).then((outcome) => this.run(this.o.engine.verifyChunkDone(a.chunk, outcome)));
        return;
      case "verified":
        this.verify_pacer.stop();
        return this.o.verified(a.result);
      case "event":
        return this.o.emit(a.event);
      case "log":
        return this.o.log[a.level](a.message);
    }
  }

  /** Memory follows the disk: the new counters are adopted only once they are durable. A failure is
   * counted as a local write error (a failed fdatasync as a failed local flush: controlWrite). */
  private writeMetadata(g: PrimaryGeneration): boolean {
    const { stale: _, ...meta } = this.o.meta;
    const next: Metadata = {
      ...meta, resuid: g.resuid, localcnt: g.localcnt, remotecnt: g.remotecnt, flags: g.flags, prevrole: "primary", ...(g.stale ? { stale: g.stale } : {}),
    };
    const what = `metadata (localcnt=${g.localcnt} remotecnt=${g.remotecnt})`;
    if (!this.controlWrite(what, () => this.o.store.write(next))) {
      this.meta_unsure = g;
      return false;
    }
    this.meta_unsure = null;
    if (!next.stale) delete this.o.meta.stale;
    Object.assign(this.o.meta, next);
    this.o.log.debug(`Metadata written: localcnt=${g.localcnt} remotecnt=${g.remotecnt}.`);
    return true;
  }

  /** The engine's counters are on disk: written again now if an earlier write of them failed. */
  metadataWritten(): boolean {
    return this.meta_unsure === null || this.writeMetadata(this.meta_unsure);
  }

  /** What a local write, trim or flush needs on disk first (meta_unsure, map_unsure): null once
   * there, else why it is not. */
  private controlUnsure(kind: RequestKind): string | null {
    if (kind === "read") return null;
    if (!this.metadataWritten()) return "the metadata could not be written before it";
    if (kind !== "flush" && this.map_unsure && !this.writeWholeMap()) return "the activemap could not be written before it";
    return null;
  }

  /**
   * Nothing goes to the peer while a map write failed (docs/format.md, rule 6): the secondary
   * clears the map it handed over at the handshake on the first request it gets, and this node's
   * map on disk may lack those marks. The whole map is written now, or the link ends (a reconnect
   * hands them over again).
   */
  private mapReadyForPeer(): boolean {
    if (!this.map_unsure || this.writeWholeMap()) return true;
    this.closeLink("the activemap could not be written, and nothing may reach the secondary before it is");
    return false;
  }

  /** An update that only clears bits waits for the next one, or CLEARS_HELD_MS (HeldMapWrites). */
  private mapUpdate(write: MapWrite): void {
    const now = this.held_maps.take(write);
    if (now === null) {
      this.held_maps_timer ??= setTimeout(() => this.writeHeldMaps(), CLEARS_HELD_MS);
      return;
    }
    this.stopHeldMapsTimer();
    this.writeMap(now);
  }

  /** The worker stops: metadata whose write failed, then the map updates held back. False if
   * some of it could not be written. */
  writeBeforeStop(): boolean {
    this.metadataWritten();
    this.writeHeldMaps();
    const clears = this.map_unsure ? null : this.o.engine.clearsNow();
    if (clears) this.writeMap(clears);
    // Either may have failed; a map write's failed flush may also have made a metadata write.
    return this.meta_unsure === null && !this.map_unsure;
  }

  /** Writes the updates held back now: their time is up, or the worker is stopping. */
  private writeHeldMaps(): void {
    if (this.map_unsure) return void this.writeWholeMap();
    this.stopHeldMapsTimer();
    const held = this.held_maps.drain();
    if (held) this.writeMap(held);
  }

  /** After a failed map write: the whole map as the engine has it (held updates included). */
  private writeWholeMap(): boolean {
    this.stopHeldMapsTimer();
    this.held_maps.drain();
    if (!this.writeMap(this.o.engine.wholeMap())) return false;
    this.map_unsure = false;
    return true;
  }

  private stopHeldMapsTimer(): void {
    if (this.held_maps_timer !== null) clearTimeout(this.held_maps_timer);
    this.held_maps_timer = null;
  }

  private writeMap(write: MapWrite): boolean {
    this.o.stats.activemap_updates++;
    if (this.controlWrite("the activemap", () => this.o.store.writeMap(write))) return true;
    this.map_unsure = true;
    return false;
  }

  /**
   * A metadata or map write: false if it failed. Linux reports a write-back error to one fsync
   * only, so one this write's fdatasync took may have dropped any change since the last good flush,
   * which the next FLUSH would then vouch for: it is a failed local flush (the engine copies those
   * extents back from the peer, or reports their loss).
   */
  private controlWrite(what: string, write: () => void): boolean {
    try {
      write();
      return true;
    } catch (err) {
      this.o.log.error(`Unable to write ${what}: ${(err as Error).message}`);
      if (!failedInFlush(err)) {
        this.o.stats.local_errors.write++;
        return false;
      }
      this.o.stats.local_errors.flush++;
      this.run(this.o.engine.localFlushFailed());
      return false;
    }
  }

  private local(id: number, kind: RequestKind, offset: number): void {
    const app = this.apps.get(id)!;
    const disk = this.o.disk;
    const unsure = this.controlUnsure(kind);
    if (unsure !== null) {
      // Its extent may be clean on disk, or the counters or stale list a restart relies on missing:
      // a crash would leave the change where no resync looks, or take this copy as whole.
      this.localFailed(app, kind, new Error(unsure));
      return this.run(this.o.engine.localDone(id, false));
    }
    if (kind === "flush") return this.localOnHelper(id, app, disk.flushAsync());
    try {
      switch (kind) {
        case "read": {
          // What the page cache holds is copied at once; the rest waits for the disk on a helper
          // thread, so reads of a cold disk overlap (nbdkit's threads do the same) and the event
          // loop serves other requests meanwhile.
          const rest = disk.readSoon(app.buf!, this.localoff + offset);
          if (rest !== null) return this.localOnHelper(id, app, rest);
          break;
        }
        case "write":
          disk.write(app.buf!, this.localoff + offset);
          break;
        case "delete":
          disk.discard(this.localoff + offset, app.length);
          break;
      }
    } catch (err) {
      this.localFailed(app, kind, err as Error);
    }
    this.run(this.o.engine.localDone(id, app.local_error === null));
  }

  private localFailed(app: AppRequest, kind: RequestKind, err: Error): void {
    app.local_error = err;
    this.o.stats.local_errors[kind]++;
    this.o.log.error(`Local ${kind} failed: ${err.message}`);
  }

  /** A request's local leg carried out on a helper thread (`io`): the engine takes its completion
   * whenever it comes, in any order with the others. */
  private localOnHelper(id: number, app: AppRequest, io: Promise<void>): void {
    this.settleLocal(io, (err) => {
      if (err) this.localFailed(app, app.kind, err);
      this.run(this.o.engine.localDone(id, app.local_error === null));
    });
  }

  /** Tracks helper-thread I/O until it settles, then `then` with its error, or null. */
  private settleLocal(io: Promise<void>, then: (err: Error | null) => void): void {
    this.local_async.track(io.then(() => null, (err: Error) => err).then(then));
  }

  /** Resolves once every local flush and read started on a helper thread has been answered (an
   * orderly stop closes the disk next). */
  localIoSettled(): Promise<void> {
    return this.local_async.settled();
  }

  /** answer_waits: the payload (the frontend's buffer) is not reused before the peer replied, so a
   * part the socket does not take at once is queued as it is, not copied. */
  private remote(id: number, kind: RequestKind, offset: number, length: number, memsync: boolean, answer_waits: boolean): void {
    const app = this.apps.get(id)!;
    const frame: Frame =
      kind === "read" ? { kind: "read", seq: id, offset, length, sync: false }
      : kind === "write" ? { kind: "write", seq: id, offset, length, memsync, sync: false, data: app.buf! }
      : kind === "delete" ? { kind: "delete", seq: id, offset, length }
      : { kind: "flush", seq: id };
    // No link: it went away after this action was made, and the engine's disconnect() has already
    // failed this leg (a request made while disconnected gets no remote action).
    this.send(frame, { app: id, sent_ms: Date.now() }, id, answer_waits);
  }

  private reply(id: number, ok: boolean, source: "local" | "remote" | undefined): void {
    const app = this.apps.get(id)!;
    this.apps.delete(id);
    let failure: BackendError | null = null;
    if (!ok) {
      const why = source === "remote"
        ? `remote ${app.kind} failed: ${app.remote_error ?? "peer not connected"}`
        : app.local_error?.message ?? `${app.kind} failed`;
      const code = source === "remote" ? "EIO" : ((app.local_error as { code?: string } | null)?.code ?? "EIO");
      failure = new BackendError(code, why);
    } else if (app.kind !== "read" && !this.metadataWritten()) {
      // The counters a change's answer may rest on are not on disk (a write the peer did not get
      // bumps localcnt just before its answer): after a crash this node would not say it has
      // changes the peer lacks, and a sync from the peer would go over an acknowledged write.
      failure = new BackendError("EIO", `${app.kind} done, but the metadata could not be written before its answer`);
    }
    // Answered within submit(): it returns the outcome itself.
    if (app.resolve === null) app.outcome = failure ?? "ok";
    else if (failure === null) app.resolve();
    else app.reject!(failure);
  }

  // ---- synchronization ----

  /** Local and remote cache flush at the end of sync pass `pass`: each side's failure is acted on
   * as soon as it is known (a read meanwhile must not return what it dropped). */
  private async flushBoth(pass: number): Promise<{ local_ok: boolean; remote_ok: boolean }> {
    const local = new Promise<Error | null>((resolve) => this.settleLocal(this.o.disk.flushAsync(), (err) => {
      if (err) this.run(this.o.engine.localFlushFailed());
      resolve(err);
    }));
    const reply = await this.remoteSync({ kind: "flush", seq: this.next_id++ });
    if (reply.error !== "OK") this.run(this.o.engine.syncPeerFlushFailed(pass));
    const err = await local;
    if (err) {
      this.o.stats.local_errors.flush++;
      this.o.log.error(`Local flush failed: ${err.message}`);
    }
    return { local_ok: err === null, remote_ok: reply.error === "OK" };
  }

  /** Orderly stop: one more flush through the peer, then the keepdirty extents are let go when the
   * engine knows both copies are durable and equal (see PrimaryEngine.forgetKeepdirty). */
  async settleForStop(): Promise<void> {
    if (!this.link) return;
    try {
      await this.submit("flush", 0, 0, null, true);
    } catch {
      return;
    }
    this.run(this.o.engine.forgetKeepdirty());
  }

  /**
   * The engine holds the extents of replicated changes dirty until a flush reached the secondary (a
   * power loss there cannot lose answered writes unnoticed). Applications may never flush, so every
   * few seconds while changes are held, a flush is sent on their behalf: it releases those extents
   * and bounds what a reconnect copies again. Keyed on the holds, not on what was sent: writes
   * still in flight when the last flush went out get their holds after it. Linked or not, it also
   * lets the map clears waiting for a flush of this node be written (ActiveMap defer_clears).
   */
  backgroundFlush(): void {
    if (!(this.link && this.o.engine.awaits_flush) && !this.o.engine.clears_waiting) return;
    this.ownFlush("A background flush");
  }

  /** A flush nobody waits for; its failure is logged here and reported by the next application flush. */
  private ownFlush(what: string): void {
    promised(this.submit("flush", 0, 0, null, true)).catch((err: Error) => this.o.log.debug(`${what} failed: ${err.message}`));
  }

  /** `hastctl verify`, once the engine's verifyRefusal() said nothing against it; `from`: where
   * the last one ended early (`--resume`), or 0. */
  startVerify(from: number): void {
    this.verify_pacer.start();
    this.run(this.o.engine.startVerify(from));
  }

  /** A reload's verify_rate, sync_rate and resync_digest, for what runs too. */
  reconfigure(o: Pick<PrimaryIoOptions, "verify_rate" | "sync_rate" | "resync_digest">): void {
    this.verify_pacer.setRate(o.verify_rate);
    this.sync_pacer.setRate(o.sync_rate);
    this.o.resync_digest = o.resync_digest;
  }

  /** `hastctl verify --stop`: false when none runs. */
  stopVerify(): boolean {
    const actions = this.o.engine.stopVerify();
    if (actions === null) return false;
    this.run(actions);
    return true;
  }

  /** A sync pass given up after errors starts again (the connector's timer, every SYNC_RESUME_S). */
  resumeSync(): void {
    this.run(this.o.engine.resumeSync());
  }

  private remoteSync(frame: Extract<Frame, { kind: "read" | "write" | "flush" }>): Promise<Extract<Frame, { kind: "reply" }>> {
    return new Promise((resolve) => {
      // Sync data stays in its buffer until this reply (or the link's end).
      if (!this.send(frame, { sync: resolve, sent_ms: Date.now() }, frame.seq, true)) {
        resolve({ kind: "reply", seq: frame.seq, error: "ENOTCONN", received: false, data: new Uint8Array(0) });
      }
      // Out now, not with the tick's other chunks: the secondary writes this one while the next
      // is read here (a hole's frame is small enough to be corked).
      this.link?.flush();
    });
  }

  /**
   * The part of a chunk read on a helper thread (`rest`, from readSoon). "stale" when the link
   * went away meanwhile: the chunk's range lock went with it, so what was read may predate a write
   * since, and must not reach a secondary.
   */
  private async readRest(rest: Promise<void>, live: () => boolean): Promise<Error | "stale" | null> {
    const err = await new Promise<Error | null>((resolve) => this.settleLocal(rest, resolve));
    return err ?? (live() ? null : "stale");
  }

  /**
   * A chunk the page cache holds whole leaves by sendfile, never copied into memory here (the
   * range lock keeps it unchanged until answered, as sendWriteFromFile requires); null where it
   * cannot (a chunk on the disk only, a link that must see the data, a busy send queue). A chunk
   * of zeroes goes the usual way too, which sends it as a hole: its first sectors tell, as data
   * seldom starts with SYNC_PROBE_BYTES of zeroes (a chunk that does is copied, as before).
   */
  private sendChunkFromCache(chunk: SyncChunk, seq: number, at: number): Promise<boolean> | null {
    const link = this.link;
    const disk = this.o.disk;
    const probe = this.sync_probe;
    if (link === null || this.map_unsure || chunk.length < FILE_SEND_MIN_BYTES || !disk.cached(at, chunk.length)) return null;
    try {
      disk.read(probe, at); // from the page cache: no wait for the disk
    } catch {
      return null; // the usual path reads the chunk again and reports the error
    }
    if (native.isZero(probe)) return null;
    let rest: Uint8Array | null = null;
    let answered!: (reply: Extract<Frame, { kind: "reply" }>) => void;
    const reply = new Promise<Extract<Frame, { kind: "reply" }>>((resolve) => (answered = resolve));
    this.remotes.set(seq, { sync: answered, sent_ms: Date.now() });
    const head = { kind: "write" as const, seq, offset: chunk.offset, length: chunk.length, memsync: false, sync: true };
    let direct = chunk.length;
    const sent = link.sendWriteFromFile(head, disk, at, (from) => {
      // The socket was full: the rest is read (from the page cache) and queued.
      direct = from;
      rest = this.sync_pool.take(chunk.length - from);
      disk.read(rest, at + from);
      return rest;
    });
    if (!sent) {
      this.remotes.delete(seq);
      return null;
    }
    this.o.stats.direct_bytes += direct;
    return reply.then((r) => {
      if (rest !== null) this.sync_pool.give(rest);
      return r.error === "OK";
    });
  }

  /** One chunk from the sync source to the other side; false on any failure (the extent stays dirty). */
  private async syncCopy(chunk: SyncChunk, from: "primary" | "secondary"): Promise<boolean> {
    const seq = this.next_id++;
    const at = this.localoff + chunk.offset;
    if (from === "primary" && this.o.resync_digest && this.link_version >= VERSION_DIGEST) return await this.syncCompared(chunk, seq);
    if (from === "primary") {
      const direct = this.sendChunkFromCache(chunk, seq, at);
      if (direct !== null) return direct;
      const buf = this.sync_pool.take(chunk.length);
      let err: Error | "stale" | null;
      try {
        // What the page cache holds is copied at once, and the chunk then leaves in this tick (an
        // await here would hold it until the tick's other chunks were read); the rest is read on a
        // helper thread while requests go on.
        const rest = this.o.disk.readSoon(buf, at);
        err = rest === null ? null : await this.readRest(rest, () => this.o.engine.syncChunkLive(chunk));
      } catch (e) {
        err = e as Error;
      }
      if (err !== null) {
        this.sync_pool.give(buf);
        if (err === "stale") return false;
        this.o.stats.local_errors.read++;
        this.o.log.error(`Unable to read synchronization data: ${err.message}`);
        return false;
      }
      // Once answered (or failed, the link then closed) nothing refers to buf any more.
      const reply = await this.remoteSync({ kind: "write", seq, offset: chunk.offset, length: chunk.length, memsync: false, sync: true, data: buf });
      this.sync_pool.give(buf);
      return reply.error === "OK";
    }
    const reply = await this.remoteSync({ kind: "read", seq, offset: chunk.offset, length: chunk.length, sync: true });
    if (reply.error !== "OK" || reply.data.length !== chunk.length) return false;
    // The peer's copy may have stopped counting meanwhile (its flush failed): this node's is kept.
    if (!this.o.engine.syncChunkLive(chunk)) return false;
    try {
      this.o.disk.write(reply.data, at);
      return true;
    } catch (err) {
      this.o.stats.local_errors.write++;
      this.o.log.error(`Unable to write synchronization data: ${(err as Error).message}`);
      return false;
    }
  }

  /**
   * resync_digest: the peer answers the chunk's SHA-256 (a SYNC DIGEST READ: it keeps the range
   * marked in its map until a flush, as for a sync WRITE, since a match counts as copied) while
   * this node reads and hashes its own copy; only a chunk whose digests differ is sent.
   */
  private async syncCompared(chunk: SyncChunk, seq: number): Promise<boolean> {
    const buf = this.sync_pool.take(chunk.length);
    try {
      const read = { kind: "read", seq, offset: chunk.offset, length: chunk.length, sync: true, digest: true } as const;
      const c = await this.compareChunk(read, buf, () => this.o.engine.syncChunkLive(chunk));
      if (c.kind === "unreadable") {
        this.o.stats.local_errors.read++;
        this.o.log.error(`Unable to read synchronization data: ${c.err.message}`);
      }
      if (c.kind === "same") {
        this.o.stats.sync_unchanged_bytes += chunk.length;
        return true;
      }
      if (c.kind !== "differ" || !this.o.engine.syncChunkLive(chunk)) return false;
      // Once answered (or failed, the link then closed) nothing refers to buf any more.
      const written = await this.remoteSync({ kind: "write", seq: this.next_id++, offset: chunk.offset, length: chunk.length, memsync: false, sync: true, data: buf });
      return written.error === "OK";
    } finally {
      this.sync_pool.give(buf);
    }
  }

  /** How verifications compare the copies on this link: by digest from protocol version 4, else
   * the peer sends the chunks themselves. */
  get verifyCompare(): VerifyCompare {
    return this.link_version >= VERSION_DIGEST ? "sha256" : "data";
  }

  /**
   * One chunk of an online verification: compared by SHA-256 (a DIGEST READ) or, with a peer
   * older than protocol version 4, with the peer's data itself. The engine holds the range from
   * writes until verifyChunkDone, so a difference is not a change on its way.
   */
  private async verifyChunk(chunk: VerifyChunk): Promise<"same" | "differ" | "failed"> {
    // Not SYNC: a verification's match is not counted as a copy, so the peer need not keep the
    // range marked in its map (a synchronization's DIGEST READs, resync_digest, are SYNC).
    const read = { kind: "read", seq: this.next_id++, offset: chunk.offset, length: chunk.length, sync: false } as const;
    const buf = this.sync_pool.take(chunk.length);
    try {
      const c = await this.compareChunk(this.verifyCompare === "sha256" ? { ...read, digest: true } : read, buf, () => this.o.engine.verifyChunkLive(chunk));
      switch (c.kind) {
        case "same":
        case "differ":
          return c.kind;
        case "stale":
          return "failed"; // the verification ended meanwhile: ignored
        case "unreadable":
          this.o.stats.local_errors.read++;
          this.o.log.error(`Verification: unable to read ${chunk.length} bytes at offset ${chunk.offset} here: ${c.err.message}`);
          return "failed";
        case "peer":
          if (this.link !== null) this.o.log.error(`Verification: the peer could not read ${chunk.length} bytes at offset ${chunk.offset}: ${c.error}`);
          return "failed";
      }
    } finally {
      this.sync_pool.give(buf);
    }
  }

  /**
   * A chunk compared with the peer's copy: the peer answers `read` (its SHA-256 with DIGEST, else
   * its data) while this node reads its own into `buf`, and hashes it for a digest. "stale": the
   * chunk stopped counting meanwhile (`live`); a reply of the wrong size closes the link. A
   * verification (not SYNC) reads this node's medium, as the peer does for its DIGEST READ.
   */
  private async compareChunk(read: Extract<Frame, { kind: "read" }>, buf: Uint8Array, live: () => boolean): Promise<Compared> {
    const remote = this.remoteSync(read);
    let err: Error | "stale" | null;
    let mine = buf;
    try {
      const at = this.localoff + read.offset;
      const rest = read.sync ? this.o.disk.readSoon(buf, at) : this.o.disk.readMedium(buf, at);
      err = rest === null ? null : await this.readRest(rest, live);
      if (err === null && read.digest === true) mine = await chunkDigest(buf);
    } catch (e) {
      err = e as Error;
    }
    const reply = await remote;
    if (err === "stale") return { kind: "stale" };
    if (err !== null) return { kind: "unreadable", err };
    if (reply.error !== "OK") return { kind: "peer", error: reply.error };
    if (reply.data.length !== mine.length) {
      const what = read.digest === true ? "DIGEST READ" : "READ";
      this.closeLink(`reply of ${reply.data.length} bytes to a ${what} of ${read.length} bytes at offset ${read.offset}, expected ${mine.length}`);
      return { kind: "peer", error: "EIO" };
    }
    return { kind: sameBytes(mine, reply.data) ? "same" : "differ" };
  }
}

/** How a chunk compared with the peer's copy (compareChunk). */
type Compared =
  | { kind: "same" | "differ" }
  /** This node's read failed. */
  | { kind: "unreadable"; err: Error }
  /** The chunk stopped counting while it was read (the link went down, the pass or verification ended). */
  | { kind: "stale" }
  /** The peer's read failed, or the link did. */
  | { kind: "peer"; error: ReplyErrorName };

/** Whether two buffers hold the same bytes (memcmp, not a loop in JavaScript). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

/** Whether a request's actions include an activemap update (a loop: no closure per request). */
function hasMapWrite(actions: PrimaryAction[]): boolean {
  for (const a of actions) if (a.type === "map") return true;
  return false;
}

/** submit()'s answer as a promise, for callers that take one. */
function promised(answer: Promise<void> | null): Promise<void> {
  return answer ?? Promise.resolve();
}
