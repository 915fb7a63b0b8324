// A secondary worker (spec 3.5, 6.2, 7): started by the main process when a primary has passed
// the address and secret checks and sent its HANDSHAKE. It decides the connection (decision
// table), answers with its counters and map, then serves the primary's requests until the link
// ends; then it exits and the main process waits for the next connection.
//
// Requests are carried out in arrival order, but only once every frame at hand is decoded (the
// link's onIdle): first the memsync "received" answers of that batch leave (one write), then the
// local I/O runs and the final answers are corked (one more write). The primary thus has its early
// answers before this node's disk writes, as HAST sends them; answering each request in turn
// would hold them behind the disk writes of the requests decoded before them. The link follows a
// stream of large frames on the socket only after each batch (pull_streams), answers out. A FLUSH
// and the part of a READ the page cache does not hold are not carried out in place: they wait for
// the disk on a helper thread and are answered when done, while the requests behind them go on. A
// WRITE of 64 KiB or more of plain data (no checksum, no zstd) is carried out as it arrives
// instead: the requests before it first, then its payload is moved from the socket onto the disk
// by the kernel (landingFor), one copy instead of two, and it is answered once there.
import type { ResourceConfig } from "../config/index.ts";
import { ActiveMap, type MapWrite } from "../core/activemap.ts";
import { assert } from "../core/assert.ts";
import { decideConnect } from "../core/connect-decision.ts";
import { copyIncomplete, FLAG_COPY_INCOMPLETE, type Metadata } from "../core/metadata.ts";
import { SecondaryEngine, type SecondaryAction, type SecondaryError, type SecondaryRequest } from "../core/secondary-engine.ts";
import { EX_CONFIG, EX_NOINPUT, EX_OK, EX_TEMPFAIL, ExitError } from "../core/sysexits.ts";
import { BufferPool } from "../gate/buffer-pool.ts";
import { adoptFd } from "../io/byte-stream.ts";
import { chunkDigest } from "../io/digest.ts";
import { LocalDisk } from "../io/disk.ts";
import { InFlight } from "../io/in-flight.ts";
import type { Landing } from "../io/landing.ts";
import { failedInFlush, MetadataStore } from "../io/metadata-store.ts";
import { CORK_REPLIES_BYTES, PeerLink } from "../io/peer-link.ts";
import { bunPeerPrimitives } from "../io/peer-primitives.ts";
import {
  bitmapFrames, MAX_DATA_BYTES, replyErrorFromSystemCode, VERSION_DIGEST, VERSION_IN_SYNC,
  type Frame, type PeerErrorName, type ReplyErrorName, type WriteHead,
} from "../wire/peer/index.ts";
import type { HookEvent, SecondaryPeer, WorkerStatus } from "./ipc.ts";
import type { Logger } from "./log.ts";
import { reconnectIntervalMs } from "./primary-connector.ts";
import { readMetadata, openComponent } from "./component.ts";
import { answerHandshake } from "./secondary-handshake.ts";
import { newStatistics } from "./statistics.ts";

/** The fd the main process passes the accepted connection on. */
export const PEER_FD = 3;
/** Flushed extents the secondary's map keeps dirty (ActiveMap needs at least one). */
const SECONDARY_KEEPDIRTY = 1;

/** What the worker tells the main process. */
export interface SecondaryMain {
  emit(event: HookEvent): void;
  /** Whether this node's copy is complete, at the start and at each change. */
  report(complete: boolean): void;
}

type Request = Extract<Frame, { kind: "read" | "write" | "delete" | "flush" }>;

/** Requests at least this large are answered as soon as they are carried out (carryOut). */
const ANSWER_AT_ONCE_BYTES = 64 * 1024;
/** Payloads are copied out of the socket's reads into buffers reused once written (fresh memory
 * faults; the reads are then freed at once: FrameDecoder copy_payloads). */
const PAYLOAD_POOL_MIN_BYTES = 4 * 1024;
const PAYLOAD_POOL_BYTES_MAX = 16 * 1024 * 1024;

export class SecondaryWorker {
  private readonly stats = newStatistics();
  private readonly pending = new Map<number, Request>();
  /** The WRITE whose payload is going straight onto the disk (landingFor); `unmarked` when its
   * map mark failed. */
  private landing: { r: SecondaryRequest; sink: Landing; unmarked: boolean } | null = null;
  /** Requests decoded since the link was last idle, not yet carried out (see the top). */
  private batch: SecondaryRequest[] = [];
  /** FLUSHes and reads on their helper thread, until answered (onHelper). */
  private readonly local_async = new InFlight();
  /** The link is gone: lost() waits for the helper threads' work in flight, then flushes and closes. */
  private ending = false;
  /** A map write failed: the whole map is written before the next request relying on marks (run). */
  private map_unsure = false;
  /** A metadata write failed: the flags on disk are unknown (setCopyComplete). */
  private meta_unsure = false;
  /** An fdatasync outside a FLUSH (a map or metadata write's) failed. Linux reports a write-back
   * error to one fsync only, and the writes it dropped are ones the next FLUSH covers: that FLUSH
   * fails in its place (the engine then keeps what it covered marked), or the flush at disconnect. */
  private writeback_failed = false;
  /** A FLUSH on a helper thread failed after the link was lost (its answer is not sent). */
  private failed_after_loss = false;
  private ended!: (code: number) => void;
  readonly done = new Promise<number>((resolve) => (this.ended = resolve));

  private constructor(
    private disk: LocalDisk,
    private store: MetadataStore,
    private meta: Metadata,
    private engine: SecondaryEngine,
    private link: PeerLink,
    private pool: BufferPool,
    private log: Logger,
    private main: SecondaryMain,
    /** The peer protocol version negotiated with this primary. */
    private readonly version: number,
  ) {}

  static async start(resource: ResourceConfig, peer: SecondaryPeer, log: Logger, main: SecondaryMain): Promise<SecondaryWorker> {
    const { handshake: hello, protocol_version: version } = peer;
    const pool = new BufferPool(PAYLOAD_POOL_MIN_BYTES, PAYLOAD_POOL_BYTES_MAX);
    let worker: SecondaryWorker | null = null;
    const link = await PeerLink.over((h) => adoptFd(PEER_FD, h), bunPeerPrimitives,
      { checksum: resource.checksum, compression: resource.compression }, {
        payload_alloc: (n) => pool.take(n), copy_payloads: true, cork_bytes: CORK_REPLIES_BYTES, pull_streams: true,
        sink_for: (write) => worker?.landingFor(write) ?? null,
      });
    const refuse = (code: PeerErrorName, message: string, exit_code: number): never => {
      link.send({ kind: "error", code, busy: false, message });
      link.close(message);
      throw new ExitError(message, exit_code);
    };
    let disk: LocalDisk;
    try {
      disk = openComponent(resource);
    } catch (err) {
      return refuse("INTERNAL", (err as Error).message, EX_NOINPUT);
    }
    try {
      const store = new MetadataStore(disk, true);
      const meta = readMetadata(store, resource);
      if (hello.datasize_bytes !== meta.datasize || hello.extentsize_bytes !== meta.extentsize) {
        refuse("SIZE_MISMATCH", `Data or extent size differs between nodes (primary ${hello.datasize_bytes}/${hello.extentsize_bytes}, ` +
          `secondary ${meta.datasize}/${meta.extentsize}): run hastctl create with the same -m and -e on both.`, EX_CONFIG);
      }
      const decision = decideConnect(meta, { ...hello, initial_full_sync: false }, copyIncomplete(meta));
      if (decision.kind === "split-brain") {
        log.error(`Split-brain detected with the primary at ${link.remote}: both nodes changed data while apart. Recovery: docs/operations.md.`);
        main.emit("split-brain");
        refuse("SPLIT_BRAIN", decision.message, EX_CONFIG);
      }
      if (decision.kind === "resuid-mismatch") refuse("RESUID_MISMATCH", decision.message, EX_CONFIG);
      if (decision.kind !== "accept") throw new Error("unreachable");
      if (decision.warning) log.warn(decision.warning);
      // The secondary's map only covers writes not yet flushed (SecondaryEngine), and every extent
      // it leaves set is copied again at the next connect: so it keeps no extents dirty for speed.
      const map = new ActiveMap({
        datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: SECONDARY_KEEPDIRTY,
        sectorsize: disk.sector_bytes, mapsize: meta.mapsize, metaflush: resource.metaflush,
      });
      const { bitmap, cache_epoch } = answerHandshake(store, meta, map, decision, hello.resuid, version, peer.cache);
      link.send({
        kind: "handshake-reply", datasize_bytes: meta.datasize, extentsize_bytes: meta.extentsize,
        localcnt: meta.localcnt, remotecnt: meta.remotecnt, syncsrc: decision.syncsrc, virgin: decision.virgin,
        bitmap_bytes: bitmap.length, cache_epoch,
      });
      for (const frame of bitmapFrames(bitmap)) link.send(frame);
      log.info(`Connected to the primary at ${link.remote} (decision row ${decision.row}, sync source ${decision.syncsrc}${decision.map === "full" ? ", full synchronization" : ""}).`);
      const engine = new SecondaryEngine(map, { datasize: meta.datasize, sector_bytes: disk.sector_bytes, max_request_bytes: MAX_DATA_BYTES },
        (meta.flags & FLAG_COPY_INCOMPLETE) === 0);
      worker = new SecondaryWorker(disk, store, meta, engine, link, pool, log, main, version);
      main.report(engine.complete);
      main.emit("connect");
      const started = worker;
      link.start((frame) => started.onFrame(frame), (reason) => started.lost(reason), () => started.carryOut());
      const keepalive_ms = reconnectIntervalMs(resource.timeout_s);
      link.startTimers({ keepalive_ms: 0, idle_receive_ms: 2 * keepalive_ms });
      return started;
    } catch (err) {
      disk.close();
      throw err;
    }
  }

  status(): WorkerStatus {
    return { status: "complete", extentsize: this.meta.extentsize, keepdirty: 0, dirty: 0, statistics: this.stats, device: null };
  }

  async stop(): Promise<void> {
    this.link.close("shutting down");
    await this.done;
  }

  private lost(reason: string): void {
    this.log.warn(`Disconnected from the primary: ${reason}`);
    this.main.emit("disconnect");
    // Requests that arrived whole are carried out (their answers are lost with the link).
    this.carryOut();
    this.ending = true;
    // Unbounded: a flush stuck in a dead disk holds the process in the kernel anyway.
    void this.local_async.settled().then(() => {
      // EX_OK only once everything reached the disk: the main process then takes the write-back
      // errors this worker saw as acted on (HeldComponent.absorb).
      let code = EX_TEMPFAIL;
      try {
        // Marks whose map write failed (a failed memsync write's, kept past the link) reach the disk.
        const map_lost = this.map_unsure && !this.writeMap(this.engine.wholeMap(), true);
        if (this.failed_after_loss || this.writeback_failed || map_lost || this.meta_unsure) {
          // What that flush covered may be gone, and a flush now would succeed regardless (the
          // kernel reports a write-back error once), or marks or the copy's state are missing on
          // disk: nothing is taken as durable, and the copy is incomplete.
          const what = this.failed_after_loss ? "A flush" : this.writeback_failed ? "A map or metadata write's flush"
            : map_lost ? "The map write" : "A metadata write";
          this.log.error(`${what} failed before the end; unflushed changes stay marked.`);
          this.setCopyComplete(false);
          return;
        }
        // Nothing is in flight now: once this flush succeeds every change is durable, and the map
        // says so (FLUSHes still unanswered included), so the next connect copies nothing needlessly.
        this.disk.flush();
        this.run(this.engine.allDurable());
        if (!this.map_unsure && !this.writeback_failed && !this.meta_unsure) code = EX_OK;
      } catch (err) {
        this.log.error(`Flush at disconnect failed; unflushed changes stay marked: ${(err as Error).message}`);
        this.setCopyComplete(false);
      } finally {
        this.disk.close();
        this.ended(code);
      }
    });
  }

  /**
   * Where a large WRITE's payload goes as it arrives (the decoder's sink_for): straight onto the
   * disk (Landing), once the requests decoded before it are carried out and, for synchronization
   * data, its extent is marked in the map: the order carryOut keeps. memsync's "received" then
   * leaves with the final answer, the data being on the disk by then (it is due once all of it is
   * here; a buffer would hold it only a copy earlier). null, a buffer as usual, for a request the
   * engine would reject.
   */
  landingFor(write: WriteHead): Landing | null {
    if (this.ending || this.landing !== null || this.pending.has(write.seq)) return null;
    const r: SecondaryRequest = { seq: write.seq, kind: "write", offset: write.offset, length: write.length, memsync: write.memsync, sync: write.sync };
    if (!this.engine.accepts(r)) return null;
    const sink = this.link.landingTo(this.disk, this.meta.localoff + write.offset);
    if (sink === null) return null;
    this.carryOut();
    // Its answers' write may have lost the link (and closed the pipe the landing would use).
    if (this.link.closed) return null;
    this.stats.writes++;
    this.pending.set(write.seq, { ...write, kind: "write", data: new Uint8Array(0), landed: true });
    const landing = { r, sink, unmarked: false };
    this.landing = landing;
    this.run(this.engine.request(r)); // its map mark; its local write is the landing (run skips it)
    // A map mark that failed fails the write, as in run(): the payload is then taken and dropped.
    if (landing.unmarked) sink.drop();
    return sink;
  }

  /** The landing's payload is all on the disk (or its write failed): answered at once. */
  private landed(seq: number): void {
    const landing = this.landing;
    assert(landing !== null && landing.r.seq === seq, () => `landed WRITE ${seq} was not landing`);
    this.landing = null;
    this.stats.direct_bytes += landing.sink.spliced;
    const error = landing.unmarked ? "EIO" : landing.sink.error === null ? null : this.localFailed("write", landing.sink.error);
    this.run(this.engine.receive(landing.r)); // memsync's "received", due now that it is all here
    this.run(this.engine.localDone(seq, error));
    this.link.flush();
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === "write" && frame.landed === true) return this.landed(frame.seq);
    switch (frame.kind) {
      case "keepalive":
        return;
      case "in-sync":
        if (this.version < VERSION_IN_SYNC) return this.link.close(`IN_SYNC at protocol version ${this.version}`);
        // After the requests sent before it: the engine waits for those in flight.
        this.carryOut();
        return this.run(this.engine.inSync(frame.replies_failed));
      case "read":
      case "write":
      case "delete":
      case "flush": {
        if (frame.kind === "read" && frame.digest === true && this.version < VERSION_DIGEST) {
          return this.link.close(`DIGEST READ at protocol version ${this.version}`);
        }
        this.count(frame);
        const seq = frame.seq;
        if (this.pending.has(seq)) return this.link.close(`request ${seq} reused while in flight`);
        this.pending.set(seq, frame);
        const offset = "offset" in frame ? frame.offset : 0;
        const length = frame.kind === "flush" ? 0 : frame.length;
        const r: SecondaryRequest = {
          seq, kind: frame.kind, offset, length, memsync: frame.kind === "write" && frame.memsync,
          sync: (frame.kind === "write" || frame.kind === "read") && frame.sync, digest: frame.kind === "read" && frame.digest === true,
        };
        this.run(this.engine.receive(r));
        this.batch.push(r); // carried out once the link has no more frames at hand (onIdle)
        return;
      }
      default:
        this.link.close(`unexpected ${frame.kind} frame from the primary`);
    }
  }

  /** The batch's early answers leave first, then its requests run in arrival order. */
  carryOut(): void {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.link.flush();
    for (const r of batch) {
      this.run(this.engine.request(r));
      // A large request's answer leaves at once rather than with the batch's: the primary starts
      // on its next chunk (a sync pass keeps a few in flight) while this node writes the rest.
      if (r.length >= ANSWER_AT_ONCE_BYTES) this.link.flush();
    }
  }

  private count(frame: Request): void {
    const s = this.stats;
    if (frame.kind === "read") s.reads++;
    else if (frame.kind === "write") s.writes++;
    else if (frame.kind === "delete") s.deletes++;
    else s.flushes++;
  }

  /** Carries out one call's actions in order. A failed map write leaves the map on disk unknown:
   * a request relying on its marks then writes the whole map first, and fails (EIO) when it cannot
   * (the primary keeps the extent for resync). */
  private run(actions: SecondaryAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case "map":
          this.writeMap(a.write);
          break;
        case "log":
          this.log[a.level](a.message);
          break;
        case "copy":
          this.setCopyComplete(a.complete);
          break;
        case "reply":
          this.reply(a.seq, a.error, a.received);
          break;
        case "local": {
          const unmarked = this.map_unsure && this.engine.reliesOnMarks(a.seq) && !this.writeMap(this.engine.wholeMap(), true);
          if (a.seq === this.landing?.r.seq) {
            // The write is the landing itself (landingFor); without its map mark it must not happen.
            this.landing.unmarked = unmarked;
            break;
          }
          if (a.kind === "flush") this.onHelper(a.seq, "flush", this.disk.flushAsync());
          else if (a.kind === "read" && !unmarked) this.readLocal(a.seq);
          else this.run(this.engine.localDone(a.seq, unmarked ? "EIO" : this.local(a.seq)));
          break;
        }
      }
    }
  }

  /** False when it failed (counted and logged). The map on disk is then unknown (its later writes
   * name only the blocks they change) until a whole one is written (`whole`). */
  private writeMap(write: MapWrite, whole = false): boolean {
    try {
      this.store.writeMap(write);
    } catch (err) {
      this.map_unsure = true;
      this.stats.local_errors.write++;
      this.log.error(`Unable to update the activemap: ${(err as Error).message}`);
      this.noteFlushFailure(err);
      return false;
    }
    this.stats.activemap_updates++;
    if (whole) this.map_unsure = false;
    return true;
  }

  /** Writes and trims hit the page cache and run here, in order (FLUSHes and reads: onHelper). */
  private local(seq: number): SecondaryError | null {
    const r = this.pending.get(seq)!;
    assert(r.kind === "write" || r.kind === "delete", `a ${r.kind} carried out as a write`);
    const at = this.meta.localoff;
    try {
      switch (r.kind) {
        case "write":
          if (r.hole) this.disk.writeZeroes(at + r.offset, r.length);
          else this.disk.write(r.data, at + r.offset);
          break;
        case "delete":
          this.disk.discard(at + r.offset, r.length);
          break;
      }
      return null;
    } catch (err) {
      return this.localFailed(r.kind, err as Error);
    }
  }

  /** A read copies what the page cache holds at once; the rest waits for the disk on a helper
   * thread (readSoon, onHelper), as the primary's own reads do. */
  private readLocal(seq: number): void {
    const r = this.pending.get(seq)!;
    assert(r.kind === "read", `a ${r.kind} carried out as a read`);
    const digest = r.digest === true;
    // A digest's buffer is only hashed, so it is reused (fresh memory faults page by page).
    const buf = digest ? this.pool.take(r.length) : new Uint8Array(r.length);
    let rest: Promise<void> | null;
    try {
      // A verification's DIGEST READ (not SYNC) compares what the medium holds.
      const at = this.meta.localoff + r.offset;
      rest = digest && r.sync !== true ? this.disk.readMedium(buf, at) : this.disk.readSoon(buf, at);
    } catch (err) {
      if (digest) this.pool.give(buf);
      return this.run(this.engine.localDone(seq, this.localFailed("read", err as Error)));
    }
    if (digest) {
      // Answered with the range's digest (a verification, resync_digest), hashed on a helper thread.
      const hashed = (rest ?? Promise.resolve()).then(async () => void this.read_data.set(seq, await chunkDigest(buf)))
        .finally(() => this.pool.give(buf));
      return this.onHelper(seq, "read", hashed);
    }
    this.read_data.set(seq, buf);
    if (rest === null) return this.run(this.engine.localDone(seq, null));
    this.onHelper(seq, "read", rest);
  }

  /**
   * A request carried out on a helper thread, answered when done while the requests behind it go
   * on: a FLUSH's fdatasync (milliseconds on a real disk; it covers the writes done before it, which
   * is all the engine counts on) or what a read needs from the disk. Once the link is lost, lost()
   * waits for them, flushes everything and answers for it.
   */
  private onHelper(seq: number, kind: "flush" | "read", io: Promise<void>): void {
    this.local_async.track(io.then(() => (kind === "flush" ? this.writebackFailure() : null), (err: Error) => this.localFailed(kind, err))
      .then((error) => {
        if (!this.ending) this.run(this.engine.localDone(seq, error));
        else if (error !== null && kind === "flush") this.failed_after_loss = true;
      }));
  }

  /** FLAG_COPY_INCOMPLETE on disk (and in `meta`); a failure to write it is logged. What the disk
   * then holds is unknown (a write whose fdatasync failed may reach it at the next flush), so the
   * next change is written whatever `meta` says. */
  private setCopyComplete(complete: boolean): void {
    const flags = complete ? this.meta.flags & ~FLAG_COPY_INCOMPLETE : this.meta.flags | FLAG_COPY_INCOMPLETE;
    if (flags === this.meta.flags && !this.meta_unsure) return;
    try {
      this.store.write({ ...this.meta, flags });
      this.meta_unsure = false;
      this.meta.flags = flags;
      this.main.report(complete);
      if (complete) this.log.info("This node's copy is complete: the primary finished synchronizing it.");
      else this.log.warn("This node's copy is incomplete until the primary has copied to it again: it cannot be promoted meanwhile.");
    } catch (err) {
      this.meta_unsure = true;
      this.stats.local_errors.write++;
      this.log.error(`Unable to write metadata (copy ${complete ? "complete" : "incomplete"}): ${(err as Error).message}`);
      this.noteFlushFailure(err);
    }
  }

  /** A map or metadata write failed in its fdatasync: see writeback_failed. */
  private noteFlushFailure(err: unknown): void {
    if (failedInFlush(err)) this.writeback_failed = true;
  }

  /** A FLUSH that succeeded fails all the same after a write-back error another fsync took. */
  private writebackFailure(): SecondaryError | null {
    if (!this.writeback_failed) return null;
    this.writeback_failed = false;
    this.stats.local_errors.flush++;
    this.log.error("Local flush failed: a map or metadata write's fdatasync failed since the last flush, and the writes that error dropped are ones this flush covers.");
    return "EIO";
  }

  private localFailed(kind: Request["kind"], err: Error): SecondaryError {
    this.stats.local_errors[kind]++;
    this.log.error(`Local ${kind} failed: ${err.message}`);
    return toSecondaryError(replyErrorFromSystemCode((err as { code?: string }).code));
  }

  private readonly read_data = new Map<number, Uint8Array>();

  private reply(seq: number, error: SecondaryError | null, received: boolean): void {
    const data = this.read_data.get(seq) ?? new Uint8Array(0);
    if (!received) {
      const r = this.pending.get(seq);
      this.pending.delete(seq);
      this.read_data.delete(seq);
      if (r?.kind === "write" && r.landed !== true) this.pool.give(r.data);
    }
    this.link.send({ kind: "reply", seq, error: (error ?? "OK") as ReplyErrorName, received, data: error ? new Uint8Array(0) : data });
  }
}

function toSecondaryError(e: ReplyErrorName): SecondaryError {
  return e === "ENOSPC" || e === "EINVAL" || e === "ENOTSUP" ? e : "EIO";
}
