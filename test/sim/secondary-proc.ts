// The secondary worker in the simulator, wired like src/daemon/secondary.ts: one process per
// connection; it decides the connection with the real decideConnect, answers with its counters
// and map through the real codec, then serves requests through the real SecondaryEngine. Its
// actions run in order, as secondary.ts runs them: a map action (the clear after a handshake, a
// dirty bit before a write or trim, clean bits once a FLUSH made them durable) is written and
// flushed before anything after it, so a data write never reaches the disk ahead of its bit.
import { ActiveMap, type MapWrite } from "../../src/core/activemap.ts";
import { allBits, setBits } from "../../src/core/bitmap.ts";
import { decideConnect, type ConnectDecision } from "../../src/core/connect-decision.ts";
import { ACTIVEMAP_OFFSET, extentCount } from "../../src/core/layout.ts";
import { copyIncomplete, FLAG_COPY_INCOMPLETE, FLAG_RESUID_UNCONFIRMED, FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../../src/core/metadata.ts";
import { SecondaryEngine, type SecondaryAction, type SecondaryError, type SecondaryRequest } from "../../src/core/secondary-engine.ts";
import { bunPeerPrimitives } from "../../src/io/peer-primitives.ts";
import {
  bitmapFrames, expectedBitmapBytes, FrameDecoder, FrameEncoder, MAX_DATA_BYTES, type Frame, type Handshake,
} from "../../src/wire/peer/index.ts";
import type { SimContext } from "./context.ts";
import type { Host } from "./host.ts";
import type { Connection } from "./network.ts";
import { bytesToSectors, sectorsToBytes } from "./sectors.ts";
import { TICK_MS } from "./primary-proc.ts";

type Request = Extract<Frame, { kind: "read" | "write" | "delete" | "flush" }>;

export class SecondaryProc {
  private readonly encoder: FrameEncoder;
  private readonly decoder = new FrameDecoder(bunPeerPrimitives);
  private engine: SecondaryEngine | null = null;
  private readonly pending = new Map<number, Request>();
  private readonly read_data = new Map<number, Uint8Array>();
  private queue: SecondaryAction[] = [];
  /** A map write failed: as secondary.ts, the whole map is written before a request relying on its
   * marks is carried out, which fails when that write does. */
  private map_unsure = false;
  /** A map write's flush failed (secondary.ts writeback_failed): the next FLUSH fails in its place,
   * and the end of the link takes nothing as durable. */
  private writeback_failed = false;
  private last_receive_ms: number;
  ended = false;

  /** A connection arrived at a node in role secondary; the worker waits for HANDSHAKE. */
  constructor(
    private readonly host: Host,
    private readonly ctx: SimContext,
    private readonly conn: Connection,
  ) {
    this.encoder = new FrameEncoder(bunPeerPrimitives, { checksum: ctx.cfg.checksum, compression: ctx.cfg.compression });
    this.last_receive_ms = ctx.clock.now_ms;
    conn.ends[1] = {
      onData: host.guard((chunk: Uint8Array) => this.onData(chunk)),
      onClose: host.guard((reason: string) => this.lost(reason)),
    };
    this.tick();
  }

  /** Role change or shutdown: the link closes; as secondary.ts's lost(), what the worker has queued
   * is carried out (answers are lost with the link, a map update is not waited for); then the disk
   * is flushed. */
  stop(reason: string): void {
    if (this.ended) return;
    this.ctx.net.close(this.conn, 1, reason);
    for (const a of this.queue.splice(0)) {
      if (a.type === "map") this.host.writeMapNow(a.write);
      else if (a.type === "copy") this.writeCopy(a.complete);
      else if (a.type === "local") {
        if (this.map_unsure && this.engine!.reliesOnMarks(a.seq)) this.host.writeMapNow(this.engine!.wholeMap());
        this.local(a.seq);
      }
    }
    this.end(reason);
  }

  vanish(): void {
    this.conn.open[1] = false;
    this.ended = true;
  }

  kill(): void {
    this.ctx.net.reset(this.conn, "peer process killed");
    this.ended = true;
  }

  private tick(): void {
    if (this.ended) return;
    // The primary sends keepalives; silence for two periods means the link is dead.
    if (this.ctx.clock.now_ms - this.last_receive_ms > 2 * this.ctx.cfg.keepalive_ms + this.ctx.cfg.timeout_ms) {
      return this.stop("no data from the primary");
    }
    this.ctx.clock.after(TICK_MS, this.host.guard(() => this.tick()));
  }

  private lost(reason: string): void {
    if (this.ended) return;
    this.end(reason);
  }

  private end(reason: string): void {
    this.ended = true;
    this.ctx.trace(`${this.host.name}: secondary worker ends: ${reason}`);
    // secondary.ts lost(): marks whose map write failed reach the disk; after a map write's failed
    // flush nothing is taken as durable, and the copy is incomplete.
    if (this.map_unsure) this.host.writeMapNow(this.engine!.wholeMap());
    if (this.writeback_failed) return this.writeCopy(false);
    this.host.disk.flushNow();
    // With everything durable, an IN_SYNC still waiting counts.
    for (const a of this.engine?.allDurable() ?? []) if (a.type === "copy") this.writeCopy(a.complete);
    this.host.absorbHeld(); // an orderly end: exit status 0 (main.ts workerExited)
  }

  private onData(chunk: Uint8Array): void {
    if (this.ended) return;
    this.last_receive_ms = this.ctx.clock.now_ms;
    this.decoder.push(chunk);
    for (;;) {
      const r = this.decoder.next();
      if (r.kind === "need-more") return;
      if (r.kind === "error") throw new Error(`${this.host.name}: the peer codec rejected the primary's bytes: ${r.reason}`);
      this.onFrame(r.frame);
      if (this.ended) return;
    }
  }

  private send(frame: Frame): void {
    const parts = this.encoder.encode(frame);
    this.ctx.net.send(this.conn, 1, parts.head);
    this.ctx.net.send(this.conn, 1, parts.body);
  }

  private refuse(code: "SPLIT_BRAIN" | "RESUID_MISMATCH", message: string): void {
    this.send({ kind: "error", code, busy: false, message });
    this.stop(message);
  }

  /** main.ts: the main process flushes the component for the cache epoch (cache-epoch.ts) before
   * the worker starts. */
  private handshake(hello: Handshake): void {
    this.host.disk.flush(this.host.guard((ok: boolean) => {
      const epoch = this.host.takeCacheEpoch(ok);
      if (epoch === null) this.ctx.observer.secondaryFlushFailed(this.host);
      this.decide(hello, epoch);
    }));
  }

  /** secondary.ts and secondary-handshake.ts: the decision, the map (stale extents, the full copy
   * asked for), one metadata slot (an adopted resuid with "incomplete"), then the reply. */
  private decide(hello: Handshake, cache_epoch: Uint8Array | null): void {
    if (this.ended) return;
    const meta = this.host.readMetadata();
    let decision: ConnectDecision = decideConnect(meta, { ...hello, initial_full_sync: false }, copyIncomplete(meta));
    this.ctx.trace(`${this.host.name}: decision row ${decision.row} ${decision.kind} (secondary localcnt=${meta.localcnt} remotecnt=${meta.remotecnt}; primary localcnt=${hello.localcnt} remotecnt=${hello.remotecnt})`);
    if (decision.kind === "split-brain" && this.ctx.plant === "merge-split-brain") {
      // Planted bug: a split-brain is "resolved" by a full sync from the primary.
      decision = { kind: "accept", row: 7, syncsrc: "primary", map: "full", adopt_resuid: false, virgin: false };
    }
    if (decision.kind === "split-brain") return this.refuse("SPLIT_BRAIN", decision.message);
    if (decision.kind === "resuid-mismatch") return this.refuse("RESUID_MISMATCH", decision.message);
    const accepted = decision;
    if (meta.stale) {
      const ondisk = this.host.readMap(meta.mapsize);
      setBits(ondisk, meta.stale.extents);
      this.host.disk.writeControl(ACTIVEMAP_OFFSET, ondisk);
      this.host.disk.flushNow();
    }
    let changed = false;
    if (accepted.adopt_resuid) {
      if (accepted.map === "full") {
        this.host.disk.writeControl(ACTIVEMAP_OFFSET, allBits(expectedBitmapBytes(meta.datasize, meta.extentsize), extentCount(meta.datasize, meta.extentsize)));
        this.host.disk.flushNow();
      }
      meta.resuid = hello.resuid;
      meta.prevrole = "secondary";
      meta.flags &= ~FLAG_SYNC_FULL_ON_CONNECT;
      changed = true;
    } else if (hello.resuid === meta.resuid && (meta.flags & (FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT)) !== 0) {
      // secondary-handshake.ts: the pair exists; flags left from a time this node was primary
      // (an unconfirmed resuid, a full copy owed) no longer apply.
      meta.flags &= ~(FLAG_RESUID_UNCONFIRMED | FLAG_SYNC_FULL_ON_CONNECT);
      changed = true;
    }
    // The simulation speaks IN_SYNC: a copy from the primary marks this one incomplete.
    if ((accepted.syncsrc === "primary" || meta.stale) && ((meta.flags & FLAG_COPY_INCOMPLETE) === 0 || meta.stale)) {
      delete meta.stale;
      meta.flags |= FLAG_COPY_INCOMPLETE;
      this.ctx.trace(`${this.host.name}: copy incomplete`);
      changed = true;
    }
    const answer = () => this.answerHandshake(meta, accepted, cache_epoch);
    if (!changed) return answer();
    this.host.writeMetadataSlot(meta);
    this.host.block(this.ctx.rng.between(0, this.ctx.cfg.meta_latency_ms_max), "metadata", () => {
      this.host.disk.flushNow();
      answer();
    });
  }

  /** FLAG_COPY_INCOMPLETE from a process on its way out (stop), or after a failure it cannot answer. */
  private writeCopy(complete: boolean): void {
    if (this.writeCopySlot(complete)) this.host.disk.flushNow();
  }

  /** Writes the metadata slot with FLAG_COPY_INCOMPLETE as `complete` says; false if already so. */
  private writeCopySlot(complete: boolean): boolean {
    const { stale, ...meta } = this.host.readMetadata();
    const flags = complete ? meta.flags & ~FLAG_COPY_INCOMPLETE : meta.flags | FLAG_COPY_INCOMPLETE;
    if (flags === meta.flags && !stale) return false;
    this.host.writeMetadataSlot({ ...meta, flags });
    this.ctx.trace(`${this.host.name}: copy ${complete ? "complete" : "incomplete"}`);
    if (complete) this.host.copyCompleted();
    return true;
  }

  private answerHandshake(meta: Metadata, decision: Extract<ConnectDecision, { kind: "accept" }>, cache_epoch: Uint8Array | null): void {
    if (this.ended) return;
    const map = new ActiveMap({
      datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: meta.keepdirty, sectorsize: meta.sectorsize, mapsize: meta.mapsize,
    });
    const ondisk = this.host.readMap(meta.mapsize);
    map.copyIn(ondisk);
    const bitmap_bytes = expectedBitmapBytes(meta.datasize, meta.extentsize);
    const bitmap = decision.map === "own" ? ondisk.subarray(0, bitmap_bytes)
      : decision.map === "full" ? allBits(bitmap_bytes, map.nextents) : new Uint8Array(0);
    this.send({
      kind: "handshake-reply", datasize_bytes: meta.datasize, extentsize_bytes: meta.extentsize,
      localcnt: meta.localcnt, remotecnt: meta.remotecnt, syncsrc: decision.syncsrc, virgin: decision.virgin, bitmap_bytes: bitmap.length,
      cache_epoch,
    });
    for (const frame of bitmapFrames(bitmap)) this.send(frame);
    this.engine = new SecondaryEngine(map, { datasize: meta.datasize, sector_bytes: meta.sectorsize, max_request_bytes: MAX_DATA_BYTES },
      (meta.flags & FLAG_COPY_INCOMPLETE) === 0);
  }

  private onFrame(frame: Frame): void {
    if (frame.kind === "keepalive") return;
    if (frame.kind === "handshake" && this.engine === null) return this.handshake(frame);
    if (frame.kind === "in-sync" && this.engine !== null) return this.run(this.engine.inSync(frame.replies_failed));
    if (this.engine === null || !(frame.kind === "read" || frame.kind === "write" || frame.kind === "delete" || frame.kind === "flush")) {
      throw new Error(`${this.host.name}: unexpected ${frame.kind} frame from the primary`);
    }
    if (this.pending.has(frame.seq)) throw new Error(`${this.host.name}: request ${frame.seq} reused while in flight`);
    this.pending.set(frame.seq, frame);
    const offset = "offset" in frame ? frame.offset : 0;
    const length = frame.kind === "flush" ? 0 : frame.length;
    const r: SecondaryRequest = {
      seq: frame.seq, kind: frame.kind, offset, length, memsync: frame.kind === "write" && frame.memsync,
      sync: (frame.kind === "write" || frame.kind === "read") && frame.sync, digest: frame.kind === "read" && frame.digest === true,
    };
    // As the daemon does: the early memsync answer leaves on receipt, ahead of queued disk work.
    for (const a of this.engine.receive(r)) if (a.type === "reply") this.reply(a.seq, a.error, a.received);
    this.run(this.engine.request(r));
  }

  private run(actions: SecondaryAction[]): void {
    this.queue.push(...actions);
    while (this.queue.length > 0 && !this.host.busy && !this.ended) {
      const a = this.queue.shift()!;
      switch (a.type) {
        case "map":
          this.writeMap(a.write, false, () => this.run([]));
          break;
        case "log":
          this.ctx.trace(`${this.host.name}: ${a.level}: ${a.message}`);
          break;
        case "reply":
          this.reply(a.seq, a.error, a.received);
          break;
        case "copy":
          // secondary.ts setCopyComplete: a synchronous metadata write.
          if (!this.writeCopySlot(a.complete)) break;
          this.host.block(this.ctx.rng.between(0, this.ctx.cfg.meta_latency_ms_max), "metadata", () => {
            this.host.disk.flushNow();
            this.run([]);
          });
          break;
        case "local":
          if (this.map_unsure && this.engine!.reliesOnMarks(a.seq)) {
            const seq = a.seq;
            this.writeMap(this.engine!.wholeMap(), true, (ok) => {
              if (ok) this.local(seq);
              else this.run(this.engine!.localDone(seq, "EIO"));
              this.run([]);
            });
          } else {
            this.local(a.seq);
          }
          break;
      }
    }
  }

  private writeMap(write: MapWrite, whole: boolean, then: (ok: boolean) => void): void {
    const { secondary_map_fail_rate: rate, secondary_map_flush_fail_rate: flush_rate } = this.ctx.cfg;
    const fails = rate > 0 && this.ctx.rng.chance(rate);
    const flush_fails = !fails && write.flush && flush_rate > 0 && this.ctx.rng.chance(flush_rate);
    if (fails || flush_fails) {
      this.ctx.trace(`${this.host.name}: activemap write ${write.seq} fails (EIO${flush_fails ? " from its flush" : ""})`);
      this.ctx.count("map_failures");
    }
    this.host.writeMap(write, this.ctx.rng.between(0, this.ctx.cfg.meta_latency_ms_max), () => {
      if (fails || flush_fails) this.map_unsure = true;
      else if (whole) this.map_unsure = false;
      if (flush_fails) this.writeback_failed = true;
      then(!fails && !flush_fails);
    }, fails, flush_fails);
  }

  private local(seq: number): void {
    const r = this.pending.get(seq)!;
    const sb = this.ctx.cfg.sector_bytes;
    const disk = this.host.disk;
    const done = this.host.guard((error: SecondaryError | null) => {
      if (this.ended) return;
      this.run(this.engine!.localDone(seq, error));
    });
    switch (r.kind) {
      case "read":
        return disk.read(r.offset / sb, r.length / sb, this.host.guard((data: Uint32Array | null) => {
          // A DIGEST READ (a verification) is answered with the range's SHA-256, as secondary.ts does.
          if (data) this.read_data.set(seq, r.digest === true ? bunPeerPrimitives.sha256(sectorsToBytes(data, sb)) : sectorsToBytes(data, sb));
          done(data ? null : "EIO");
        }));
      case "write":
      case "delete": {
        const versions = r.kind === "write" && !r.hole ? bytesToSectors(r.data, sb) : new Uint32Array(r.length / sb);
        const answer = this.host.guard((ok: boolean) => done(ok ? null : "EIO"));
        return disk.write(r.offset / sb, versions, true, (ok: boolean) => {
          // A fact about this disk, told even when the worker has ended meanwhile (a failover).
          if (!(r.kind === "write" && r.sync)) {
            if (ok) this.ctx.observer.secondaryModifyLanded(this.host, r.offset / sb, versions.length, versions[0]!);
            else this.ctx.observer.secondaryModifyFailed(this.host, r.offset / sb, versions.length, versions[0]!);
          }
          answer(ok);
        });
      }
      case "flush":
        return disk.flush(this.host.guard((ok: boolean) => {
          // secondary.ts: a flush failing after the link was lost fails the flush at the end.
          if (!ok && this.ended) this.writeCopy(false);
          // secondary.ts writebackFailure(): a map write's flush took the error this one covers.
          const taken = ok && this.writeback_failed;
          if (taken) this.writeback_failed = false;
          if (!ok || taken) this.ctx.observer.secondaryFlushFailed(this.host);
          done(ok && !taken ? null : "EIO");
        }));
    }
  }

  private reply(seq: number, error: SecondaryError | null, received: boolean): void {
    const data = this.read_data.get(seq) ?? new Uint8Array(0);
    if (!received) {
      this.pending.delete(seq);
      this.read_data.delete(seq);
    }
    this.send({ kind: "reply", seq, error: error ?? "OK", received, data: error ? new Uint8Array(0) : data });
  }
}
