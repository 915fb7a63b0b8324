// The primary worker in the simulator: a PrimaryEngine wired to a SimDisk and the simulated link
// the way src/daemon/primary-io.ts and primary-connector.ts wire it to a real disk and socket
// (same action execution, same frame handling, same reconnect and timeout rules), so the
// simulator exercises the production state machine and codec, only the I/O is simulated.
import { countersMoved } from "../../src/core/connect-decision.ts";
import { ActiveMap, type MapWrite, type SyncChunk } from "../../src/core/activemap.ts";
import { allBits } from "../../src/core/bitmap.ts";
import { ACTIVEMAP_OFFSET, extentCount } from "../../src/core/layout.ts";
import { cacheEpochKey, FLAG_COPY_INCOMPLETE, FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../../src/core/metadata.ts";
import { batchMapWrites, CLEARS_HELD_MS, HeldMapWrites, mergeMapWrites } from "../../src/core/map-batch.ts";
import { PrimaryEngine, SYNC_RESUME_S, type PrimaryAction, type PrimaryGeneration, type RequestKind } from "../../src/core/primary-engine.ts";
import type { VerifyChunk } from "../../src/core/verify-pass.ts";
import type { ReplicationMode } from "../../src/core/request-legs.ts";
import { bunPeerPrimitives } from "../../src/io/peer-primitives.ts";
import {
  BitmapAssembler, DIGEST_BYTES, expectedBitmapBytes, FrameDecoder, FrameEncoder, type Frame, type HandshakeReply,
} from "../../src/wire/peer/index.ts";
import type { SimContext } from "./context.ts";
import type { Host } from "./host.ts";
import type { Connection } from "./network.ts";
import { bytesToSectors, sectorsToBytes } from "./sectors.ts";

/** primary-connector.ts flushes a connected pair every 2 s. */
const BACKGROUND_FLUSH_MS = 2_000;
/** How often the worker's timers run (reconnect, request timeout, keepalive). */
export const TICK_MS = 100;

interface App {
  kind: RequestKind;
  offset: number;
  length: number;
  /** Write data, or a read's result. */
  data: Uint32Array | null;
  /** May be called from within submit (a request refused at once). */
  reply: (id: number, ok: boolean, data: Uint32Array | null) => void;
}

type Reply = Extract<Frame, { kind: "reply" }>;
type Waiter = { app: number; kind: RequestKind; sent_ms: number; ghost: boolean } | { sync: (reply: Reply) => void; sent_ms: number };

interface Link {
  conn: Connection;
  encoder: FrameEncoder;
  decoder: FrameDecoder;
  last_send_ms: number;
}

interface Dialing extends Link {
  /** The counters the HANDSHAKE carried (countersMoved). */
  sent: { localcnt: bigint; remotecnt: bigint };
  reply: HandshakeReply | null;
  bitmap: BitmapAssembler | null;
}

export class PrimaryProc {
  readonly engine: PrimaryEngine;
  readonly map: ActiveMap;
  readonly meta: Metadata;
  /** Counters the secondary sent at the last handshake (the engine mirrors them after a pass). */
  peer_counters: { localcnt: bigint; remotecnt: bigint } | null = null;
  private readonly apps = new Map<number, App>();
  private readonly remotes = new Map<number, Waiter>();
  private readonly queue: PrimaryAction[] = [];
  private batch: PrimaryAction[] | null = null;
  private readonly held_maps = new HeldMapWrites();
  private link: Link | null = null;
  /** Error replies received on the link, as primary-io.ts counts them for IN_SYNC. */
  private replies_failed = 0;
  private dialing: Dialing | null = null;
  private next_id = 1;
  private last_dial_ms = -Infinity;
  private skipped_sync = false;
  private link_epoch_ = 0;
  /** primary-io.ts map_unsure: a map write failed, so the map on disk may lack bits the engine
   * counts as set. The whole map is written before the next local write or trim, and before
   * anything goes to the peer. */
  private map_unsure = false;
  /** primary-io.ts meta_unsure: the newest metadata the engine counts as on disk, whose write
   * failed. Written again before the next local write, trim or flush, IN_SYNC and connection attempt. */
  private meta_unsure: PrimaryGeneration | null = null;
  /** Called once, as the next HANDSHAKE leaves (the scenario's write racing it). */
  on_handshake: (() => void) | null = null;

  private constructor(
    private readonly host: Host,
    private readonly ctx: SimContext,
    meta: Metadata,
  ) {
    this.meta = meta;
    const cfg = ctx.cfg;
    this.map = new ActiveMap({
      datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: meta.keepdirty, sectorsize: meta.sectorsize,
      mapsize: meta.mapsize, chunk_bytes: cfg.chunk_bytes, defer_clears: true,
    });
    this.map.copyIn(host.readMap(meta.mapsize), meta.stale?.extents);
    this.engine = new PrimaryEngine(this.map, { resuid: meta.resuid, localcnt: meta.localcnt, remotecnt: meta.remotecnt, flags: meta.flags }, cfg.mode,
      { changes_listed_max: cfg.changes_listed_max, ...(meta.stale ? { stale: meta.stale } : {}), stale_listed_max: cfg.stale_listed_max });
  }

  /** Worker start (src/daemon/primary.ts): metadata, counters reset while resuid is 0, map copy-in.
   * null: refused, as PrimaryWorker.start refuses a copy marked incomplete unless `force`d. */
  static start(host: Host, ctx: SimContext, force = false): PrimaryProc | null {
    // The map and metadata are relied on once durable; a failed flush may have dropped the dead
    // worker's writes and marks: primary.ts lostAtStart marks every extent and the copy incomplete.
    const flushed = host.primaryStartFlush();
    const meta = host.readMetadata();
    if (!flushed) {
      ctx.trace(`${host.name}: the flush at start failed: every extent marked, copy incomplete`);
      host.disk.writeControl(ACTIVEMAP_OFFSET, allBits(expectedBitmapBytes(meta.datasize, meta.extentsize), extentCount(meta.datasize, meta.extentsize)));
      meta.flags |= FLAG_COPY_INCOMPLETE;
      host.writeMetadataSlot(meta);
      host.disk.flushNow();
    }
    if ((meta.flags & FLAG_COPY_INCOMPLETE) !== 0) {
      ctx.trace(`${host.name}: not promoted: its copy is incomplete${force ? "; forced" : ""}`);
      if (!force) return null;
      // acceptIncomplete: this copy becomes the good one, and the next secondary gets all of it.
      meta.flags = (meta.flags & ~FLAG_COPY_INCOMPLETE) | FLAG_SYNC_FULL_ON_CONNECT;
      host.writeMetadataSlot(meta);
      host.disk.flushNow();
    }
    const proc = new PrimaryProc(host, ctx, meta);
    ctx.trace(`${host.name}: primary starts (resuid=${meta.resuid} localcnt=${meta.localcnt} remotecnt=${meta.remotecnt}, ${proc.map.syncExtentCount()} extents dirty` +
      `${meta.stale ? `, ${meta.stale.extents.length} listed stale` : ""})`);
    if (meta.stale) ctx.count("stale_restarts");
    if (meta.resuid === 0n && (meta.localcnt !== 0n || meta.remotecnt !== 0n)) {
      meta.localcnt = 0n;
      meta.remotecnt = 0n;
      proc.queue.push({ type: "metadata", generation: { resuid: 0n, localcnt: 0n, remotecnt: 0n, flags: meta.flags } });
    }
    proc.pump();
    proc.tick();
    return proc;
  }

  get connected(): boolean {
    return this.link !== null;
  }

  /** Bumped at every disconnect: a request that saw the same value at submit and answer stayed on one link. */
  get link_epoch(): number {
    return this.link_epoch_;
  }

  get remote_waiters(): number {
    return this.remotes.size;
  }

  setMode(mode: ReplicationMode): void {
    this.engine.setMode(mode);
  }

  private last_background_flush_ms = 0;
  private last_sync_resume_ms = 0;

  /** `hastctl verify [--from]` (primary-io.ts startVerify). */
  verify(from: number): void {
    this.run(this.engine.startVerify(from));
  }

  /** An application request (the NBD frontend's call into PrimaryIo). */
  submit(kind: RequestKind, offset: number, length: number, data: Uint32Array | null, reply: App["reply"], internal = false): void {
    const id = this.next_id++;
    this.apps.set(id, { kind, offset, length, data, reply });
    if ((kind === "write" || kind === "delete") && !this.engine.is_connected) this.ctx.observer.mayDiverge(this.host);
    this.runSubmitted(this.engine.submit(id, kind, offset, length, internal));
  }

  /** primary-io.ts runSubmitted: a request needing a map update waits, with those submitted after
   * it at the same moment, for the end of that moment; their map updates become one. */
  private runSubmitted(actions: PrimaryAction[]): void {
    if (this.batch === null) {
      if (!actions.some((a) => a.type === "map")) return this.run(actions);
      this.batch = [];
      this.ctx.clock.after(0, this.host.guard(() => this.run([])));
    }
    for (const a of actions) this.batch.push(a);
  }

  /** Role change away from primary: the link closes, the cache is flushed (worker SIGTERM). */
  stop(): void {
    if (this.link) this.ctx.net.close(this.link.conn, 0, "primary shutting down");
    if (this.dialing) this.ctx.net.close(this.dialing.conn, 0, "primary shutting down");
    const written = this.writeBeforeStop();
    this.host.disk.flushNow();
    // primary.ts stop: only an orderly end when all of it was written (main.ts workerExited).
    if (written) this.host.absorbHeld();
  }

  /** primary-io.ts writeBeforeStop: metadata whose write failed, then the map updates held back
   * (the whole map after a failed map write); whether all of it is on disk. The engine's reaction
   * to a failed flush dies with the worker: the main process's descriptor sees that flush fail. */
  private writeBeforeStop(): boolean {
    if (this.meta_unsure !== null) {
      const f = this.controlFault("metadata at stop", true);
      if (this.host.writeMetadataNow(this.nextMetadata(this.meta_unsure), f.fails, f.flush_fails)) this.meta_unsure = null;
    }
    const held = this.held_maps.drain();
    const clears = this.map_unsure ? null : this.engine.clearsNow();
    const map = this.map_unsure ? this.engine.wholeMap() : held && clears ? mergeMapWrites([held, clears]) : held ?? clears;
    if (map) {
      const f = this.controlFault(`activemap write ${map.seq} at stop`, map.flush);
      this.map_unsure = !this.host.writeMapNow(map, f.fails, f.flush_fails);
    }
    return this.meta_unsure === null && !this.map_unsure;
  }

  /** The machine lost power: the connection goes silent, the peer notices by timeout. */
  vanish(): void {
    for (const l of [this.link, this.dialing]) if (l) l.conn.open[0] = false;
  }

  /** The process was killed: the kernel resets its connections. */
  kill(): void {
    for (const l of [this.link, this.dialing]) if (l) this.ctx.net.reset(l.conn, "peer process killed");
  }

  // ---- timers: reconnect, request timeout, keepalive (primary-connector.ts) ----

  private tick(): void {
    const now = this.ctx.clock.now_ms;
    // As primary-io's backgroundFlush: releases the extents held until the peer flushed, and the
    // map clears waiting for a flush here (linked or not).
    if ((this.link || this.engine.clears_waiting) && now - this.last_background_flush_ms >= BACKGROUND_FLUSH_MS) {
      this.last_background_flush_ms = now;
      this.submit("flush", 0, 0, null, () => {}, true);
    }
    if (!this.link && !this.dialing && now - this.last_dial_ms >= this.ctx.cfg.reconnect_ms) this.dial();
    if (this.link) {
      let oldest = Infinity;
      for (const w of this.remotes.values()) oldest = Math.min(oldest, w.sent_ms);
      if (now - oldest > this.ctx.cfg.timeout_ms) this.closeLink(`no reply from the secondary for ${this.ctx.cfg.timeout_ms} ms`);
      else if (now - this.link.last_send_ms >= this.ctx.cfg.keepalive_ms) this.send({ kind: "keepalive" });
      // As primary-io's Pacers (sync_rate, verify_rate): the allowances grow by a tick's worth.
      const { sync_rate, verify_rate } = this.ctx;
      if (sync_rate !== null) this.run(this.engine.allowSync((sync_rate * TICK_MS) / 1000, Math.max(1, sync_rate / 4)));
      if (verify_rate !== null) this.run(this.engine.allowVerify((verify_rate * TICK_MS) / 1000, Math.max(1, verify_rate / 4)));
      // As primary-connector's timer: a pass given up after errors starts again.
      if (now - this.last_sync_resume_ms >= SYNC_RESUME_S * 1000) {
        this.last_sync_resume_ms = now;
        this.run(this.engine.resumeSync());
      }
    }
    if (this.dialing && now - this.dialing.last_send_ms > this.ctx.cfg.timeout_ms) {
      this.ctx.net.close(this.dialing.conn, 0, "handshake timed out");
      this.dialing = null;
    }
    this.ctx.clock.after(TICK_MS, this.host.guard(() => this.tick()));
  }

  /** primary-connector.ts attempt, with primary-handshake.ts: connect, then (beforeHandshake) the
   * HANDSHAKE once what it carries is on disk. */
  private dial(): void {
    this.last_dial_ms = this.ctx.clock.now_ms;
    const dialed = this.ctx.dial(this.host);
    if ("refused" in dialed) {
      this.ctx.trace(`${this.host.name}: connect failed: ${dialed.refused}`);
      return;
    }
    const conn = dialed.conn;
    // Claimed only by a fresh pair that `hastctl create --initial-sync none` made (no copy needed).
    const virgin = this.engine.resuid_unconfirmed && (this.engine.generation.flags & FLAG_SYNC_FULL_ON_CONNECT) === 0;
    const encoding = { checksum: this.ctx.cfg.checksum, compression: this.ctx.cfg.compression };
    const d: Dialing = {
      conn, encoder: new FrameEncoder(bunPeerPrimitives, encoding), decoder: new FrameDecoder(bunPeerPrimitives),
      last_send_ms: this.ctx.clock.now_ms, reply: null, bitmap: null, sent: { ...this.engine.generation },
    };
    this.dialing = d;
    conn.ends[0] = {
      onData: this.host.guard((chunk: Uint8Array) => this.onData(conn, chunk)),
      onClose: this.host.guard((reason: string) => this.onClose(conn, reason)),
    };
    this.beforeHandshake((ok) => {
      if (this.dialing !== d) return;
      if (!ok) {
        this.ctx.trace(`${this.host.name}: unable to connect: the metadata (resuid and counters) could not be written`);
        this.ctx.net.close(conn, 0, "metadata not written");
        this.dialing = null;
        return;
      }
      const g = (d.sent = { ...this.engine.generation });
      this.sendOn(d, {
        kind: "handshake", resuid: this.engine.generation.resuid, localcnt: g.localcnt, remotecnt: g.remotecnt, virgin,
        datasize_bytes: this.meta.datasize, extentsize_bytes: this.meta.extentsize, replication: this.ctx.cfg.mode,
      });
      const hook = this.on_handshake;
      this.on_handshake = null;
      hook?.();
      this.pump();
    });
  }

  /**
   * primary-connector.ts beforeHandshake, once the secondary proved itself (here: once connected): a
   * brand-new pair's resuid is drawn and written, flagged unconfirmed, and metadata whose write
   * failed is written again. The HANDSHAKE carries what is on disk: a secondary may adopt the resuid
   * from an attempt whose answer is lost, or this worker may restart meanwhile and must offer it
   * again. A primary that never reached its peer keeps none.
   */
  private beforeHandshake(then: (ok: boolean) => void): void {
    if (this.engine.generation.resuid !== 0n) return this.metadataWritten(then);
    const [drawn] = this.engine.setResuid(this.ctx.rng.u64());
    if (drawn?.type !== "metadata") throw new Error("setResuid made no metadata write");
    this.writeMetadata(drawn.generation, () => this.metadataWritten(then));
  }

  private onData(conn: Connection, chunk: Uint8Array): void {
    const l = this.link?.conn === conn ? this.link : this.dialing?.conn === conn ? this.dialing : null;
    if (!l) return;
    l.decoder.push(chunk);
    for (;;) {
      const r = l.decoder.next();
      if (r.kind === "need-more") return;
      if (r.kind === "error") throw new Error(`${this.host.name}: the peer codec rejected our own peer's bytes: ${r.reason}`);
      if (l === this.dialing) this.onHandshakeFrame(r.frame);
      else if (l === this.link) this.onFrame(r.frame);
      if (this.link !== l && this.dialing !== l) return;
    }
  }

  private onClose(conn: Connection, reason: string): void {
    if (this.dialing?.conn === conn) {
      this.ctx.trace(`${this.host.name}: handshake ended: ${reason}`);
      this.dialing = null;
    } else if (this.link?.conn === conn) this.detach(reason);
  }

  private onHandshakeFrame(frame: Frame): void {
    const d = this.dialing!;
    if (frame.kind === "error") {
      this.ctx.trace(`${this.host.name}: refused by the peer (${frame.code}): ${frame.message}`);
      if (frame.code === "SPLIT_BRAIN") this.ctx.observer.splitBrain(this.host, this.ctx.other(this.host));
      if (frame.code === "RESUID_MISMATCH") this.ctx.observer.resuidMismatch(this.host, this.ctx.other(this.host));
      this.ctx.net.close(d.conn, 0, "refused");
      this.dialing = null;
      return;
    }
    if (frame.kind === "handshake-reply" && d.reply === null) {
      d.reply = frame;
      if (frame.bitmap_bytes > 0) d.bitmap = new BitmapAssembler(frame.bitmap_bytes);
      else this.attach(new Uint8Array(expectedBitmapBytes(this.meta.datasize, this.meta.extentsize)));
      return;
    }
    if (frame.kind === "bitmap" && d.bitmap) {
      const progress = d.bitmap.add(frame.offset, frame.data);
      if (progress.kind === "error") throw new Error(`${this.host.name}: bitmap from the peer: ${progress.reason}`);
      if (progress.kind === "done") this.attach(progress.bitmap);
      return;
    }
    throw new Error(`${this.host.name}: unexpected ${frame.kind} frame during the handshake`);
  }

  private attach(peer_map: Uint8Array): void {
    const d = this.dialing!;
    const reply = d.reply!;
    this.dialing = null;
    if (reply.syncsrc === "none") throw new Error("secondary sent no sync direction");
    if (countersMoved(d.sent, this.engine.generation)) {
      // As primary-connector.ts: the reply answers counters this node has changed since.
      this.ctx.trace(`${this.host.name}: counters changed during the handshake; dialing again`);
      this.ctx.net.close(d.conn, 0, "counters changed during the handshake");
      this.last_dial_ms = -Infinity;
      return;
    }
    this.link = { conn: d.conn, encoder: d.encoder, decoder: d.decoder, last_send_ms: d.last_send_ms };
    this.replies_failed = 0;
    this.peer_counters = { localcnt: reply.localcnt, remotecnt: reply.remotecnt };
    // As primary-connector.ts: a secondary accepted the resuid (written before the first attempt).
    const actions = this.engine.confirmResuid();
    // The engine's map is extent-sized; the wire bitmap may be shorter than mapsize.
    const merged = new Uint8Array(this.map.mapsize);
    merged.set(peer_map.subarray(0, merged.length));
    actions.push(...this.engine.connect({
      syncsrc: reply.syncsrc, peer_localcnt: reply.localcnt, peer_remotecnt: reply.remotecnt, peer_map: merged, virgin: reply.virgin,
      peer_cache_epoch: cacheEpochKey(reply.cache_epoch),
    }));
    this.ctx.trace(`${this.host.name}: connected, sync source ${reply.syncsrc}, peer localcnt=${reply.localcnt} remotecnt=${reply.remotecnt}`);
    // A first connection (row 1) moves localcnt 0 → 1: until a pass mirrors it, the counters say
    // this node changed data the peer lacks, whatever it wrote (a forced promotion of the peer
    // before that ends in a split-brain).
    if (reply.virgin) this.ctx.observer.mayDiverge(this.host);
    this.ctx.observer.connected(this.host, this.ctx.other(this.host));
    this.run(actions);
  }

  private closeLink(reason: string): void {
    if (!this.link) return;
    this.ctx.net.close(this.link.conn, 0, reason);
    this.detach(reason);
  }

  private detach(reason: string): void {
    if (!this.link) return;
    this.link = null;
    this.link_epoch_++;
    this.ctx.trace(`${this.host.name}: disconnected: ${reason}`);
    const waiting = [...this.remotes.values()];
    this.remotes.clear();
    for (const w of waiting) if ("app" in w && !w.ghost) this.remoteModifyFailed(w.kind);
    // A change whose remote leg was not sent yet (queued behind a map write) fails with the link too.
    for (const app of this.apps.values()) this.remoteModifyFailed(app.kind);
    for (const w of waiting) if ("sync" in w) w.sync({ kind: "reply", seq: 0, error: "ENOTCONN", received: false, data: new Uint8Array(0) });
    this.run(this.engine.disconnect());
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === "keepalive") return;
    if (frame.kind !== "reply") throw new Error(`${this.host.name}: unexpected ${frame.kind} frame from the secondary`);
    const waiter = this.remotes.get(frame.seq);
    if (!waiter) throw new Error(`${this.host.name}: reply for unknown request ${frame.seq}`);
    if (frame.error !== "OK") this.replies_failed++;
    if ("sync" in waiter) {
      this.remotes.delete(frame.seq);
      waiter.sync(frame);
      return;
    }
    if (waiter.ghost) {
      if (!frame.received) this.remotes.delete(frame.seq);
      return;
    }
    if (frame.received) {
      this.run(this.engine.remoteReceived(waiter.app));
      return;
    }
    this.remotes.delete(frame.seq);
    const ok = frame.error === "OK";
    const app = this.apps.get(waiter.app);
    if (!ok) this.remoteModifyFailed(waiter.kind);
    if (ok && app?.kind === "read") {
      if (frame.data.length !== app.length) throw new Error(`read reply of ${frame.data.length} bytes for ${app.length}`);
      app.data = bytesToSectors(frame.data, this.ctx.cfg.sector_bytes);
    }
    this.run(this.engine.remoteDone(waiter.app, ok));
  }

  /** A write or trim the peer was sent but did not make. */
  private remoteModifyFailed(kind: RequestKind): void {
    if (kind === "write" || kind === "delete") this.ctx.observer.mayDiverge(this.host);
  }

  private send(frame: Frame): void {
    if (this.link) this.sendOn(this.link, frame);
  }

  private sendOn(l: Link, frame: Frame): void {
    const parts = l.encoder.encode(frame);
    l.last_send_ms = this.ctx.clock.now_ms;
    this.ctx.net.send(l.conn, 0, parts.head);
    this.ctx.net.send(l.conn, 0, parts.body);
  }

  // ---- executing engine actions (primary-io.ts run/execute) ----

  private run(actions: PrimaryAction[]): void {
    // primary-io.ts run: a batch of submits was made first, so it runs first.
    if (this.batch !== null) {
      const batched = batchMapWrites(this.batch);
      if (batched.length < this.batch.length) this.ctx.count("map_batches");
      this.batch = null;
      actions = [...batched, ...actions];
    }
    if (this.ctx.plant === "ack-before-map") {
      // Planted bug: activemap writes are done after the rest of their batch (the data write is
      // issued before its dirty bit is durable).
      actions = [...actions.filter((a) => a.type !== "map"), ...actions.filter((a) => a.type === "map")];
    }
    this.queue.push(...actions);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.host.busy) this.execute(this.queue.shift()!);
  }

  private execute(a: PrimaryAction): void {
    switch (a.type) {
      case "map": {
        // primary-io.ts mapUpdate: an update that only clears bits waits for the next one, or
        // CLEARS_HELD_MS (writeHeldMaps).
        const first_held = !this.held_maps.holding;
        const now = this.held_maps.take(a.write);
        if (now) return this.writeMap(now, () => this.pump());
        if (first_held) this.ctx.clock.after(CLEARS_HELD_MS, this.host.guard(() => this.writeHeldMaps()));
        return;
      }
      case "metadata":
        return this.writeMetadata(a.generation, () => this.pump());
      case "local":
        return this.local(a.id, a.kind, a.offset, a.length);
      case "remote":
        return this.remote(a.id, a.kind, a.offset, a.length, a.memsync);
      case "reply": {
        const app = this.apps.get(a.id);
        if (!app) throw new Error(`reply to unknown request ${a.id}`);
        this.apps.delete(a.id);
        if (!a.ok || app.kind === "read") return app.reply(a.id, a.ok, a.ok && app.kind === "read" ? app.data : null);
        // primary-io.ts reply: the counters a change's answer may rest on (a write the peer did not
        // get bumps localcnt just before its answer) are on disk first, or it fails.
        return this.metadataWritten((ok) => {
          if (!ok) this.ctx.trace(`${this.host.name}: ${app.kind} ${a.id} done, but the metadata could not be written before its answer`);
          app.reply(a.id, ok, null);
          this.pump();
        });
      }
      case "sync-copy":
        return this.syncCopy(a.chunk, a.from);
      case "sync-flush":
        return this.syncFlush(a.pass);
      case "flush": // primary-io.ts ownFlush
        this.ctx.count("own_flushes");
        return this.submit("flush", 0, 0, null, () => {}, true);
      case "in-sync":
        if (!this.link) return;
        // primary-io.ts: the counters the pass ended with go first (a secondary told it is whole may
        // be promoted, and this node must then come back with counters that say it is the older copy).
        return this.metadataWritten((ok) => {
          if (ok) this.send({ kind: "in-sync", replies_failed: this.replies_failed });
          else this.ctx.trace(`${this.host.name}: the pass's counters could not be written: the secondary is not told its copy is whole`);
          this.pump();
        });
      case "verify":
        return this.verifyChunk(a.chunk);
      case "verified":
        this.ctx.count("verifications");
        for (let n = 0; n < a.result.differ_chunks; n++) this.ctx.count("verify_differ_chunks");
        return this.ctx.trace(`${this.host.name}: verification ${a.result.ended}: ${JSON.stringify(a.result)}`);
      case "event":
        return this.ctx.trace(`${this.host.name}: event ${a.event}`);
      case "log":
        return this.ctx.trace(`${this.host.name}: ${a.level}: ${a.message}`);
    }
  }

  private metaLatency(): number {
    return this.ctx.rng.between(0, this.ctx.cfg.meta_latency_ms_max);
  }

  // ---- activemap and metadata writes (primary-io.ts writeMap, writeMetadata and their failures) ----

  /** Whether the next activemap or metadata write fails (SimConfig.primary_control_fail_rate), or
   * fails in its flush (`flushes`: it has one). */
  private controlFault(what: string, flushes: boolean): { fails: boolean; flush_fails: boolean } {
    const { primary_control_fail_rate: rate, primary_control_flush_fail_rate: flush_rate } = this.ctx.cfg;
    const fails = rate > 0 && this.ctx.rng.chance(rate);
    const flush_fails = !fails && flushes && flush_rate > 0 && this.ctx.rng.chance(flush_rate);
    if (fails || flush_fails) {
      this.ctx.trace(`${this.host.name}: ${what} fails (EIO${flush_fails ? " from its flush" : ""})`);
      this.ctx.count("primary_control_failures");
    }
    return { fails, flush_fails };
  }

  /** primary-io.ts controlWrite: a write whose flush failed is a failed local flush (it may have
   * dropped any change since the last good one, which the next FLUSH would vouch for). */
  private controlFailed(flush_failed: boolean): void {
    if (flush_failed) this.run(this.engine.localFlushFailed());
  }

  private writeMap(write: MapWrite, then: (ok: boolean) => void): void {
    const { fails, flush_fails } = this.controlFault(`activemap write ${write.seq}`, write.flush);
    this.host.writeMap(write, this.metaLatency(), (ok) => {
      if (!ok) {
        this.map_unsure = true;
        this.controlFailed(flush_fails);
      }
      then(ok);
    }, fails, flush_fails);
  }

  /** primary-io.ts writeHeldMaps: their time is up (after a failed map write, the whole map). */
  private writeHeldMaps(): void {
    if (this.map_unsure) return this.writeWholeMap(() => this.pump());
    const held = this.held_maps.drain();
    if (held) this.writeMap(held, () => this.pump());
  }

  /** primary-io.ts writeWholeMap: after a failed map write, the map as the engine has it (the
   * updates held back included). */
  private writeWholeMap(then: (ok: boolean) => void): void {
    this.held_maps.drain();
    this.writeMap(this.engine.wholeMap(), (ok) => {
      if (ok) this.map_unsure = false;
      then(ok);
    });
  }

  /** The metadata slot for generation `g`. */
  private nextMetadata(g: PrimaryGeneration): Metadata {
    const { stale: _, ...meta } = this.meta;
    return { ...meta, resuid: g.resuid, localcnt: g.localcnt, remotecnt: g.remotecnt, flags: g.flags, prevrole: "primary", ...(g.stale ? { stale: g.stale } : {}) };
  }

  /** primary-io.ts writeMetadata: memory follows the disk, the new counters adopted only once durable. */
  private writeMetadata(g: PrimaryGeneration, then: (ok: boolean) => void): void {
    const next = this.nextMetadata(g);
    const { fails, flush_fails } = this.controlFault(`metadata (localcnt=${g.localcnt} remotecnt=${g.remotecnt})`, true);
    this.host.writeMetadata(next, this.metaLatency(), (ok) => {
      if (ok) {
        this.meta_unsure = null;
        if (!next.stale) delete this.meta.stale;
        Object.assign(this.meta, next);
        this.ctx.observer.metadataDurable(this.host);
      } else {
        this.meta_unsure = g;
        this.controlFailed(flush_fails);
      }
      then(ok);
    }, fails, flush_fails);
  }

  /** primary-io.ts metadataWritten: the engine's counters are on disk (written again now if an
   * earlier write of them failed). Synchronous when they are. */
  private metadataWritten(then: (ok: boolean) => void): void {
    if (this.meta_unsure === null) return then(true);
    this.writeMetadata(this.meta_unsure, then);
  }

  /** primary-io.ts controlUnsure: what a local write, trim or flush needs on disk first (the
   * metadata; for a write or trim, the whole map after a failed map write). */
  private controlWritten(kind: RequestKind, then: (ok: boolean) => void): void {
    this.metadataWritten((ok) => {
      if (!ok || kind === "flush" || !this.map_unsure) return then(ok);
      this.writeWholeMap(then);
    });
  }

  /**
   * primary-io.ts mapReadyForPeer: nothing goes to the peer while a map write failed (docs/format.md,
   * rule 6): the secondary clears the map it handed over at the handshake on the first request it
   * gets, and this node's map on disk may lack those marks. The whole map is written first, or the
   * link ends (a reconnect hands them over again). `then(false)`: nothing may be sent.
   */
  private mapReadyForPeer(then: (ok: boolean) => void): void {
    if (!this.map_unsure) return then(true);
    this.writeWholeMap((ok) => {
      if (!ok) this.closeLink("the activemap could not be written, and nothing may reach the secondary before it is");
      then(ok);
    });
  }

  private local(id: number, kind: RequestKind, offset: number, length: number): void {
    const app = this.apps.get(id)!;
    const disk = this.host.disk;
    const sb = this.ctx.cfg.sector_bytes;
    const done = this.host.guard((ok: boolean) => this.run(this.engine.localDone(id, ok)));
    switch (kind) {
      case "read":
        return disk.read(offset / sb, length / sb, this.host.guard((data: Uint32Array | null) => {
          if (data) app.data = data;
          this.run(this.engine.localDone(id, data !== null));
        }));
      case "write":
      case "delete":
      case "flush":
        return this.controlWritten(kind, (ok) => {
          if (!ok) {
            // Its extent may be clean on disk, or the counters a restart relies on missing: a crash
            // would leave the change where no resync looks, or take this copy as whole.
            this.ctx.trace(`${this.host.name}: local ${kind} of request ${id} fails: the metadata or activemap could not be written before it`);
            if (kind !== "flush") this.ctx.observer.primaryLocalFailed(this.host, offset / sb, length / sb, kind === "write" ? app.data![0]! : 0);
            return this.run(this.engine.localDone(id, false));
          }
          if (kind === "flush") disk.flush(done);
          else {
            // Synchronized from the peer, a change needs the peer: one it cannot see fails (no bump).
            if (!this.engine.is_connected && this.engine.sync_source === "secondary") this.ctx.observer.mayDiverge(this.host);
            else this.ctx.observer.localModify(this.host, this.engine.is_connected);
            disk.write(offset / sb, kind === "write" ? app.data! : new Uint32Array(length / sb), false, done);
          }
          this.pump();
        });
    }
  }

  private remote(id: number, kind: RequestKind, offset: number, length: number, memsync: boolean): void {
    if (!this.link) return; // primary-io.ts remote: disconnect() already failed this leg
    // Refused, the link is gone too, and its disconnect() failed this leg.
    this.mapReadyForPeer((ok) => {
      if (ok) this.sendRemote(id, kind, offset, length, memsync);
      this.pump();
    });
  }

  private sendRemote(id: number, kind: RequestKind, offset: number, length: number, memsync: boolean): void {
    const app = this.apps.get(id)!;
    if (this.ctx.plant === "flush-not-sent" && kind === "flush") {
      // Planted bug: a flush counts as done on the peer without reaching it, so the extents held
      // until the peer made them durable are released while they may still sit in its cache.
      return this.ctx.clock.after(0, this.host.guard(() => this.run(this.engine.remoteDone(id, true))));
    }
    const frame: Frame =
      kind === "read" ? { kind: "read", seq: id, offset, length, sync: false }
      : kind === "write" ? { kind: "write", seq: id, offset, length, memsync, sync: false, data: sectorsToBytes(app.data!, this.ctx.cfg.sector_bytes) }
      : kind === "delete" ? { kind: "delete", seq: id, offset, length }
      : { kind: "flush", seq: id };
    const ghost = this.ctx.plant === "ack-fullsync-early" && kind === "write" && !memsync;
    this.remotes.set(id, { app: id, kind, sent_ms: this.ctx.clock.now_ms, ghost });
    this.send(frame);
    // Planted bug: a fullsync write counts as written on the peer as soon as it is sent.
    if (ghost) this.run(this.engine.remoteDone(id, true));
  }

  // ---- synchronization (primary-io.ts syncCopy) ----

  /** End of a pass, as primary-io's flushBoth: both flushes at once, each failure acted on as it
   * comes, then the report once both ended. */
  private syncFlush(pass: number): void {
    let local_ok: boolean | null = null;
    let remote_ok: boolean | null = null;
    const settle = () => {
      if (local_ok === null || remote_ok === null) return;
      const [l, r] = [local_ok, remote_ok];
      this.ctx.clock.after(0, this.host.guard(() => {
        if (l && r) this.ctx.observer.changesOnPeer(this.host);
        this.run(this.engine.syncFlushDone(pass, l, r));
      }));
    };
    this.host.disk.flush(this.host.guard((ok: boolean) => {
      if (!ok) this.run(this.engine.localFlushFailed());
      local_ok = ok;
      settle();
    }));
    this.remoteSync({ kind: "flush", seq: this.next_id++ }, (reply) => {
      remote_ok = reply.error === "OK";
      if (!remote_ok) this.run(this.engine.syncPeerFlushFailed(pass));
      settle();
    });
  }

  /** As primary-io.ts's: gated by mapReadyForPeer like every request to the peer, which covers
   * its sendfile path too (not taken while the map is unsure; the simulator has none). */
  private remoteSync(frame: Extract<Frame, { kind: "read" | "write" | "flush" }>, then: (reply: Reply) => void): void {
    const refused = () => then({ kind: "reply", seq: frame.seq, error: "ENOTCONN", received: false, data: new Uint8Array(0) });
    if (!this.link) return refused();
    this.mapReadyForPeer((ok) => {
      if (!ok) return refused();
      this.remotes.set(frame.seq, { sync: then, sent_ms: this.ctx.clock.now_ms });
      this.send(frame);
      this.pump();
    });
  }

  private syncCopy(chunk: SyncChunk, from: "primary" | "secondary"): void {
    // As in primary-io, the result comes back through a promise: after the current call chain
    // (a disconnect has already ended the pass when a chunk fails with it).
    const done = (ok: boolean) => this.ctx.clock.after(0, this.host.guard(() => this.run(this.engine.syncCopyDone(chunk, ok))));
    const seq = this.next_id++;
    const sb = this.ctx.cfg.sector_bytes;
    const first = chunk.offset / sb, count = chunk.length / sb;
    if (this.ctx.plant === "skip-resync-extent" && !this.skipped_sync && this.chunkDiffers(first, count)) {
      // Planted bug: one chunk that differs between the nodes is reported copied without copying it.
      this.skipped_sync = true;
      this.ctx.trace(`${this.host.name}: PLANTED: sync chunk at ${chunk.offset} skipped`);
      return done(true);
    }
    const send = (data: Uint32Array, write_seq: number) => this.remoteSync(
      { kind: "write", seq: write_seq, offset: chunk.offset, length: chunk.length, memsync: false, sync: true, data: sectorsToBytes(data, sb) },
      (reply) => done(reply.error === "OK"));
    if (from === "primary" && this.ctx.resync_digest) return this.syncCompared(chunk, seq, (data) => send(data, this.next_id++), done);
    if (from === "primary") {
      this.host.disk.read(first, count, this.host.guard((data: Uint32Array | null) => (data ? send(data, seq) : done(false))));
      return;
    }
    this.remoteSync({ kind: "read", seq, offset: chunk.offset, length: chunk.length, sync: true }, (reply) => {
      if (reply.error !== "OK" || reply.data.length !== chunk.length) return done(false);
      if (!this.engine.syncChunkLive(chunk)) return done(false);
      this.host.disk.write(first, bytesToSectors(reply.data, sb), false, this.host.guard(done));
    });
  }

  /** As primary-io.ts's syncCompared (resync_digest): the peer's SHA-256 of the chunk (a SYNC
   * DIGEST READ, which it keeps marked until a flush) and this node's read at once; only a chunk
   * whose digests differ is sent. */
  private syncCompared(chunk: SyncChunk, seq: number, send: (data: Uint32Array) => void, done: (ok: boolean) => void): void {
    const sb = this.ctx.cfg.sector_bytes;
    let mine: Uint32Array | null | undefined;
    let theirs: Uint8Array | null | undefined;
    const both = () => {
      if (mine === undefined || theirs === undefined) return;
      if (mine === null || theirs === null) return done(false);
      if (Buffer.compare(bunPeerPrimitives.sha256(sectorsToBytes(mine, sb)), theirs) === 0) {
        this.ctx.count("sync_unchanged_chunks");
        return done(true);
      }
      if (!this.engine.syncChunkLive(chunk)) return done(false);
      send(mine);
    };
    this.remoteSync({ kind: "read", seq, offset: chunk.offset, length: chunk.length, sync: true, digest: true }, (reply) => {
      theirs = reply.error === "OK" && reply.data.length === DIGEST_BYTES ? reply.data : null;
      both();
    });
    this.host.disk.read(chunk.offset / sb, chunk.length / sb, this.host.guard((data: Uint32Array | null) => {
      mine = data;
      both();
    }));
  }

  /** As primary-io.ts does with a version 4 peer: the secondary answers the chunk's SHA-256. */
  private verifyChunk(chunk: VerifyChunk): void {
    const sb = this.ctx.cfg.sector_bytes;
    let mine: Uint8Array | null | undefined;
    let theirs: Uint8Array | null | undefined;
    const both = () => {
      if (mine === undefined || theirs === undefined) return;
      const outcome = mine === null || theirs === null ? "failed" : Buffer.compare(mine, theirs) === 0 ? "same" : "differ";
      if (outcome === "differ") this.ctx.trace(`${this.host.name}: verify chunk at ${chunk.offset} differs`);
      this.ctx.clock.after(0, this.host.guard(() => this.run(this.engine.verifyChunkDone(chunk, outcome))));
    };
    const read = { kind: "read", seq: this.next_id++, offset: chunk.offset, length: chunk.length, sync: false, digest: true } as const;
    this.remoteSync(read, (reply) => {
      theirs = reply.error === "OK" && reply.data.length === DIGEST_BYTES ? reply.data : null;
      both();
    });
    this.host.disk.read(chunk.offset / sb, chunk.length / sb, this.host.guard((data: Uint32Array | null) => {
      mine = data === null ? null : bunPeerPrimitives.sha256(sectorsToBytes(data, sb));
      both();
    }));
  }

  private chunkDiffers(first: number, count: number): boolean {
    const mine = this.host.disk.data, theirs = this.ctx.other(this.host).disk.data;
    for (let s = first; s < first + count; s++) if (mine[s] !== theirs[s]) return true;
    return false;
  }
}
