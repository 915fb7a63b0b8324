// Runs a PrimaryEngine against an in-memory model of two disks and a link: the seed of the
// deterministic simulator. Disk content is one version number per sector (every write and trim
// gets a fresh one), so comparing disks is comparing arrays. Map actions are applied to an
// in-memory image of the on-disk map at once (the durability the engine's ordering contract asks
// for); I/O actions become pending operations that the test completes in whatever order it likes.
//
// Execution model, which the real adapters must match:
// - each disk applies overlapping writes in the order they were issued (the local disk queue and
//   the peer link plus the secondary's disk queue are FIFO per range); non-overlapping ones finish
//   in any order (`completable*` lists what may finish now);
// - a sync copy reads its source and writes its target at the moment it completes;
// - when the link drops, every pending remote operation and sync copy may or may not have reached
//   the peer's disk (`disconnect` asks the caller which), and none of them answers afterwards.
import type { MapWrite } from "../../../src/core/activemap.ts";
import { ActiveMap, type SyncChunk } from "../../../src/core/activemap.ts";
import { setBits } from "../../../src/core/bitmap.ts";
import type { SyncSource } from "../../../src/core/connect-decision.ts";
import {
  PrimaryEngine,
  type Connection,
  type HookEvent,
  type PrimaryAction,
  type PrimaryGeneration,
  type RequestKind,
} from "../../../src/core/primary-engine.ts";
import type { StaleExtents } from "../../../src/core/metadata.ts";
import type { ReplicationMode } from "../../../src/core/request-legs.ts";
import type { VerifyChunk, VerifyResult } from "../../../src/core/verify-pass.ts";

/** More chunks in flight than the daemon's default, so overlaps between chunks and writes show. */
export const DRIVER_SYNC_CHUNKS = 4;

export interface DriverOptions {
  datasize: number;
  extentsize: number;
  sector_bytes: number;
  keepdirty: number;
  chunk_bytes: number;
  mode: ReplicationMode;
  generation?: PrimaryGeneration;
  held_flush_sync_bytes_max?: number;
  changes_listed_max?: number;
  /** A restart: the stale extents the metadata lists (the map is loaded with them dirty). */
  stale?: StaleExtents;
  stale_listed_max?: number;
}

export interface Request {
  id: number;
  kind: RequestKind;
  offset: number;
  length: number;
  /** Content version written by a write or trim (0 for reads and flushes). */
  version: number;
  mode: ReplicationMode;
}

export interface Reply {
  ok: boolean;
  source?: "local" | "remote";
}

export interface IoOp {
  request: Request;
  side: "local" | "remote";
  kind: RequestKind;
  /** Issue order on its side, for the per-range FIFO rule. */
  order: number;
  /** memsync remote write: the early "received" answer is still to come. */
  awaiting_received: boolean;
  /** The link was up when the operation was issued. */
  link_up: boolean;
}

export interface SyncOp {
  chunk: SyncChunk;
  from: SyncSource;
}

const MODIFY_KINDS: ReadonlySet<RequestKind> = new Set(["write", "delete"]);

export class EngineDriver {
  readonly map: ActiveMap;
  readonly engine: PrimaryEngine;
  readonly sector_bytes: number;
  /** Per-sector content versions of the primary's and the secondary's data. */
  readonly local: Uint32Array;
  readonly remote: Uint32Array;
  /** The on-disk activemap region, as the applied map actions left it. */
  readonly map_image: Uint8Array;
  /** Every metadata action, in order. */
  readonly metadata: PrimaryGeneration[] = [];
  readonly events: HookEvent[] = [];
  /** When set, a pass's end-of-pass flush waits in pending_sync_flushes for the test to end it
   * (syncFlushDone); else it succeeds at once, on both nodes while the link is up. */
  hold_sync_flushes = false;
  readonly pending_sync_flushes: number[] = [];
  /** IN_SYNC messages the engine asked to send. */
  in_syncs = 0;
  readonly requests = new Map<number, Request>();
  readonly replies = new Map<number, Reply>();
  pending_local: IoOp[] = [];
  pending_remote: IoOp[] = [];
  pending_sync: SyncOp[] = [];
  /** Verification chunks the engine asked to compare, not yet reported. */
  pending_verify: VerifyChunk[] = [];
  /** Every verification that ended, in order. */
  readonly verified: VerifyResult[] = [];
  link_up = false;
  /** Called for each reply after it was recorded (checkers hook in here). */
  on_reply: ((request: Request, reply: Reply) => void) | null = null;

  private mode: ReplicationMode;
  private next_id = 1;
  private next_version = 1;
  private next_order = 1;
  private map_seq = 0;

  constructor(options: DriverOptions) {
    this.sector_bytes = options.sector_bytes;
    this.map = new ActiveMap({
      datasize: options.datasize, extentsize: options.extentsize, keepdirty: options.keepdirty,
      sectorsize: options.sector_bytes, chunk_bytes: options.chunk_bytes,
    });
    this.map_image = new Uint8Array(this.map.mapsize);
    if (options.stale) {
      setBits(this.map_image, options.stale.extents);
      this.map.copyIn(this.map_image);
    }
    this.mode = options.mode;
    const generation = options.generation ?? { resuid: 1n, localcnt: 0n, remotecnt: 0n, flags: 0 };
    this.engine = new PrimaryEngine(this.map, generation, options.mode, {
      sync_chunks_max: DRIVER_SYNC_CHUNKS, held_flush_sync_bytes_max: options.held_flush_sync_bytes_max, changes_listed_max: options.changes_listed_max,
      ...(options.stale ? { stale: options.stale } : {}), ...(options.stale_listed_max ? { stale_listed_max: options.stale_listed_max } : {}),
    });
    this.local = new Uint32Array(options.datasize / options.sector_bytes);
    this.remote = new Uint32Array(options.datasize / options.sector_bytes);
  }

  setMode(mode: ReplicationMode): void {
    this.mode = mode;
    this.engine.setMode(mode);
  }

  /** A fresh content version, for tests that scribble on a disk behind the engine's back. */
  newVersion(): number {
    return this.next_version++;
  }

  // ---- events into the engine; each returns the actions it executed ----

  /** `internal`: a flush of the daemon's own (background, orderly stop). */
  submit(kind: RequestKind, offset: number, length: number, internal = false): { id: number; actions: PrimaryAction[] } {
    const { id, actions } = this.begin(kind, offset, length, internal);
    return { id, actions: this.run(actions) };
  }

  /** A new request and the engine's actions for it, not yet run. */
  private begin(kind: RequestKind, offset: number, length: number, internal: boolean): { id: number; actions: PrimaryAction[] } {
    const id = this.next_id++;
    const version = MODIFY_KINDS.has(kind) ? this.next_version++ : 0;
    this.requests.set(id, { id, kind, offset, length, version, mode: this.mode });
    return { id, actions: this.engine.submit(id, kind, offset, length, internal) };
  }

  completeLocal(op: IoOp, ok: boolean): PrimaryAction[] {
    this.take(this.pending_local, op);
    if (ok) this.land(this.local, op.request);
    return this.run(this.engine.localDone(op.request.id, ok));
  }

  receiveRemote(op: IoOp): PrimaryAction[] {
    if (!op.awaiting_received) throw new Error(`request ${op.request.id} expects no "received" answer`);
    op.awaiting_received = false;
    return this.run(this.engine.remoteReceived(op.request.id));
  }

  /** `landed`: whether the data reached the peer's disk (a failed write may be partly there). */
  completeRemote(op: IoOp, ok: boolean, landed = ok): PrimaryAction[] {
    this.take(this.pending_remote, op);
    if (landed) this.land(this.remote, op.request);
    return this.run(this.engine.remoteDone(op.request.id, ok));
  }

  /** As primary-io: a chunk no longer live (its pass ended, or its extent is copied the other way
   * now) is not written, and reported failed. */
  completeSync(op: SyncOp, ok: boolean): PrimaryAction[] {
    this.take(this.pending_sync, op);
    const copied = ok && this.engine.syncChunkLive(op.chunk);
    if (copied) this.copy(op);
    return this.run(this.engine.syncCopyDone(op.chunk, copied));
  }

  /** Compares the chunk's two copies as they are now (both reads happen at once), or fails it. */
  completeVerify(chunk: VerifyChunk, ok = true): { outcome: "same" | "differ" | "failed"; actions: PrimaryAction[] } {
    this.take(this.pending_verify, chunk);
    const first = chunk.offset / this.sector_bytes;
    const end = first + chunk.length / this.sector_bytes;
    let outcome: "same" | "differ" | "failed" = ok ? "same" : "failed";
    for (let s = first; ok && s < end; s++) if (this.local[s] !== this.remote[s]) outcome = "differ";
    return { outcome, actions: this.run(this.engine.verifyChunkDone(chunk, outcome)) };
  }

  startVerify(from = 0): PrimaryAction[] {
    return this.run(this.engine.startVerify(from));
  }

  /** The daemon's sync_rate timer. */
  allowSync(bytes: number, cap: number): PrimaryAction[] {
    return this.run(this.engine.allowSync(bytes, cap));
  }

  /** The daemon's verify_rate timer. */
  allowVerify(bytes: number, cap: number): PrimaryAction[] {
    return this.run(this.engine.allowVerify(bytes, cap));
  }

  stopVerify(): PrimaryAction[] | null {
    const actions = this.engine.stopVerify();
    return actions && this.run(actions);
  }

  /** A held end-of-pass flush ended (hold_sync_flushes). */
  syncFlushDone(pass: number, local_ok: boolean, remote_ok: boolean): PrimaryAction[] {
    return this.run(this.engine.syncFlushDone(pass, local_ok, remote_ok));
  }

  /** The worker's SYNC_RESUME_S timer. */
  resumeSync(): PrimaryAction[] {
    return this.run(this.engine.resumeSync());
  }

  connect(c: Connection): PrimaryAction[] {
    if (this.link_up) throw new Error("connect while the link is up");
    this.link_up = true;
    return this.run(this.engine.connect(c));
  }

  /** `reached(op)`: whether an operation in flight on the link got to the peer's disk anyway. */
  disconnect(reached: (op: IoOp | SyncOp) => boolean = () => false): PrimaryAction[] {
    this.link_up = false;
    for (const op of this.pending_remote) if (MODIFY_KINDS.has(op.kind) && reached(op)) this.land(this.remote, op.request);
    for (const op of this.pending_sync) if (reached(op)) this.copy(op);
    this.pending_remote = [];
    this.pending_sync = [];
    this.pending_verify = [];
    return this.run(this.engine.disconnect());
  }

  // ---- what may happen next ----

  completableLocal(): IoOp[] {
    return this.pending_local.filter((op) => !this.queuedBehind(this.pending_local, op));
  }

  completableRemote(): IoOp[] {
    return this.pending_remote.filter((op) => !op.awaiting_received && !this.queuedBehind(this.pending_remote, op));
  }

  awaitingReceived(): IoOp[] {
    return this.pending_remote.filter((op) => op.awaiting_received);
  }

  idle(): boolean {
    return this.pending_local.length === 0 && this.pending_remote.length === 0 && this.pending_sync.length === 0 && this.pending_verify.length === 0;
  }

  // ---- checks ----

  /** No write or trim executes on either disk at the same time as an overlapping sync copy or
   * verification chunk, and no two of those overlap. */
  checkNoOverlap(): void {
    const chunks = [...this.pending_sync.map((op) => ({ what: "sync chunk", ...op.chunk })), 
      // A chunk a stopped verification let go is still read, but nothing waits for its result.
      ...this.pending_verify.filter((c) => this.engine.verifyChunkLive(c)).map((c) => ({ what: "verify chunk", ...c }))];
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i]!;
      for (let j = i + 1; j < chunks.length; j++) {
        if (overlaps(c, chunks[j]!)) throw new Error(`${c.what} at ${c.offset} and ${chunks[j]!.what} at ${chunks[j]!.offset} overlap`);
      }
      for (const op of [...this.pending_local, ...this.pending_remote]) {
        if (MODIFY_KINDS.has(op.kind) && overlaps(c, op.request)) {
          throw new Error(`${op.side} ${op.kind} ${op.request.id} at ${op.request.offset}+${op.request.length} overlaps ${c.what} at ${c.offset}`);
        }
      }
    }
  }

  /** Extents whose content differs between the two disks (in sectors `ignore` does not exclude). */
  differingExtents(ignore: (sector: number) => boolean = () => false): number[] {
    const per_extent = this.map.extentsize / this.sector_bytes;
    const out: number[] = [];
    for (let e = 0; e < this.map.nextents; e++) {
      const first = e * per_extent;
      const last = Math.min(first + per_extent, this.local.length);
      for (let s = first; s < last; s++) {
        if (this.local[s] !== this.remote[s] && !ignore(s)) {
          out.push(e);
          break;
        }
      }
    }
    return out;
  }

  /** Every extent that differs between the disks is set in the on-disk map (crash safety), but
   * for differences in sectors `ignore` excludes (the engine cannot know of them). */
  checkMapCoversDifferences(ignore?: (sector: number) => boolean): void {
    for (const e of this.differingExtents(ignore)) {
      if (!mapBit(this.map_image, e)) throw new Error(`extent ${e} differs between the disks but is clean in the on-disk map`);
    }
  }

  onDiskExtents(): number[] {
    const out: number[] = [];
    for (let e = 0; e < this.map.nextents; e++) if (mapBit(this.map_image, e)) out.push(e);
    return out;
  }

  // ---- execution of actions ----

  /** Runs the actions in order; what an action yields at once (a flush here is instant and
   * durable) is appended, so callers see the whole sequence. */
  private run(actions: PrimaryAction[]): PrimaryAction[] {
    for (let i = 0; i < actions.length; i++) actions.push(...this.execute(actions[i]!));
    return actions;
  }

  private execute(action: PrimaryAction): PrimaryAction[] {
    switch (action.type) {
      case "map":
        this.applyMap(action.write);
        return [];
      case "metadata":
        this.metadata.push({ ...action.generation });
        return [];
      case "local":
      case "remote": {
        const request = this.requests.get(action.id);
        if (!request) throw new Error(`${action.type} action for unknown request ${action.id}`);
        if (action.kind !== request.kind || (action.kind !== "flush" && (action.offset !== request.offset || action.length !== request.length))) {
          throw new Error(`${action.type} action for request ${action.id} does not match it`);
        }
        if (action.type === "remote" && !this.link_up) throw new Error(`remote action for request ${action.id} while the link is down`);
        const queue = action.type === "local" ? this.pending_local : this.pending_remote;
        if (queue.some((op) => op.request.id === action.id)) throw new Error(`second ${action.type} action for request ${action.id}`);
        queue.push({
          request, side: action.type, kind: action.kind, order: this.next_order++,
          awaiting_received: action.type === "remote" && action.memsync, link_up: this.link_up,
        });
        return [];
      }
      case "reply": {
        const request = this.requests.get(action.id);
        if (!request) throw new Error(`reply to unknown request ${action.id}`);
        if (this.replies.has(action.id)) throw new Error(`request ${action.id} answered twice`);
        const reply: Reply = action.source ? { ok: action.ok, source: action.source } : { ok: action.ok };
        this.replies.set(action.id, reply);
        this.on_reply?.(request, reply);
        return [];
      }
      case "sync-flush":
        if (this.hold_sync_flushes) {
          this.pending_sync_flushes.push(action.pass);
          return [];
        }
        return this.engine.syncFlushDone(action.pass, true, this.link_up);
      case "flush": // as primary-io: a flush of the daemon's own
        return this.begin("flush", 0, 0, true).actions;
      case "sync-copy":
        if (!this.link_up) throw new Error(`sync copy at ${action.chunk.offset} while the link is down`);
        this.pending_sync.push({ chunk: action.chunk, from: action.from });
        return [];
      case "verify":
        if (!this.link_up) throw new Error(`verify chunk at ${action.chunk.offset} while the link is down`);
        this.pending_verify.push(action.chunk);
        return [];
      case "verified":
        this.verified.push(action.result);
        return [];
      case "event":
        this.events.push(action.event);
        return [];
      case "in-sync":
        this.in_syncs++;
        return [];
      case "log":
        return [];
    }
  }

  private applyMap(write: MapWrite): void {
    if (write.seq !== this.map_seq + 1) throw new Error(`map write ${write.seq} applied after ${this.map_seq}`);
    this.map_seq = write.seq;
    for (const piece of write.pieces) this.map_image.set(piece.bytes, piece.offset);
  }

  private take<T>(queue: T[], op: T): void {
    const index = queue.indexOf(op);
    if (index < 0) throw new Error("operation is not pending");
    queue.splice(index, 1);
  }

  /** An earlier overlapping write on the same disk has not finished yet. */
  private queuedBehind(queue: IoOp[], op: IoOp): boolean {
    if (!MODIFY_KINDS.has(op.kind)) return false;
    return queue.some((other) => other.order < op.order && MODIFY_KINDS.has(other.kind) && overlaps(other.request, op.request));
  }

  private land(disk: Uint32Array, request: Request): void {
    if (!MODIFY_KINDS.has(request.kind)) return;
    disk.fill(request.version, request.offset / this.sector_bytes, (request.offset + request.length) / this.sector_bytes);
  }

  private copy(op: SyncOp): void {
    const [source, target] = op.from === "primary" ? [this.local, this.remote] : [this.remote, this.local];
    const first = op.chunk.offset / this.sector_bytes;
    target.set(source.subarray(first, first + op.chunk.length / this.sector_bytes), first);
  }
}

/** Completes every sync chunk, those it leads to included; the side each extent was last copied from. */
export function drainSync(d: EngineDriver): Map<number, string> {
  const from = new Map<number, string>();
  for (let n = 0; d.pending_sync.length > 0 && n < 10_000; n++) {
    const chunk = d.pending_sync[0]!;
    from.set(chunk.chunk.extent, chunk.from);
    d.completeSync(chunk, true);
  }
  return from;
}

/** A one-sector write at `offset` that succeeds on both disks (after memsync's "received"); its
 * content version. Throws unless it was answered ok. */
export function writeBoth(d: EngineDriver, offset: number): number {
  const { id } = d.submit("write", offset, d.sector_bytes);
  d.completeLocal(op(d.pending_local, id), true);
  const remote = op(d.pending_remote, id);
  if (remote.awaiting_received) d.receiveRemote(remote);
  d.completeRemote(remote, true);
  if (d.replies.get(id)?.ok !== true) throw new Error(`write ${id} at ${offset} was not answered ok`);
  return d.requests.get(id)!.version;
}

/** A flush whose two legs end as told, this node's first; its request id. */
export function flushWith(d: EngineDriver, local_ok: boolean, remote_ok: boolean): number {
  const { id } = d.submit("flush", 0, 0);
  d.completeLocal(op(d.pending_local, id), local_ok);
  d.completeRemote(op(d.pending_remote, id), remote_ok);
  return id;
}

/** The pending operation of request `id` in `queue` (pending_local or pending_remote). */
export function op(queue: IoOp[], id: number): IoOp {
  const found = queue.find((o) => o.request.id === id);
  if (!found) throw new Error(`no pending operation for request ${id}`);
  return found;
}

function overlaps(a: { offset: number; length: number }, b: { offset: number; length: number }): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

function mapBit(image: Uint8Array, e: number): boolean {
  return (image[e >> 3]! & (1 << (e & 7))) !== 0;
}
