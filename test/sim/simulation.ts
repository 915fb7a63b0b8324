// One simulated run: two nodes running the real engines and codec over a simulated network and
// disks, an application workload against whichever node is primary, an operator that injects
// faults and changes roles, and the checkers (test/sim/checkers.ts) after every tick. The seed
// decides everything; a failure reports the seed, the step and the tail of the trace.
import { mapBytesFor } from "../../src/core/layout.ts";
import { FLAG_COPY_INCOMPLETE, type Metadata, STALE_EXTENTS_MAX } from "../../src/core/metadata.ts";
import { CHANGES_LISTED_MAX, type RequestKind } from "../../src/core/primary-engine.ts";
import type { ReplicationMode } from "../../src/core/request-legs.ts";
import { checkMapCoversDifferences, checkReplicasIdentical, isInSync, passMirrored } from "./checkers.ts";
import type { Observer, Plant, SimConfig, SimContext } from "./context.ts";
import { SimDisk } from "./disk.ts";
import { Host, type ControlWrite, type Role } from "./host.ts";
import { Network, type Connection } from "./network.ts";
import { Oracle, type FlushToken, type WriteRecord } from "./oracle.ts";
import { PrimaryProc, TICK_MS } from "./primary-proc.ts";
import { Rng } from "./random.ts";
import { Scheduler } from "./scheduler.ts";
import { SecondaryProc } from "./secondary-proc.ts";

export interface RunOptions {
  seed: number;
  steps: number;
  plant: Plant | null;
  /** A failed flush may drop cached sectors, as Linux does on a write-back error. Off by default:
   * the engine does not handle it yet (docs/operations.md, "A local flush error on the primary"). */
  linux_flush?: boolean;
  /** PrimaryEngine's changes_listed_max; absent, the run picks it. Replays of seeds recorded before
   * the engine flushed on its own pin CHANGES_LISTED_MAX, and so make the runs they recorded. */
  changes_listed_max?: number;
  /** The operator runs online verifications (hastctl verify) on the primary now and then. Off by
   * default: it changes the runs' random streams, which the recorded seeds rely on. */
  verify?: boolean;
  /** Synchronizations to the secondary compare each chunk's digest first and send only what
   * differs (resync_digest). Off by default, for the same reason. */
  resync_digest?: boolean;
  /** The primary paces synchronizations to the secondary (sync_rate: two chunks a tick). */
  sync_rate?: boolean;
  /** The primary paces its verifications (verify_rate: a chunk a tick); with `verify`. */
  verify_rate?: boolean;
  /** The operator fails over to the secondary while the nodes are apart, and back once it wrote:
   * the old primary is then synchronized from its secondary (decision row 3) while it serves. */
  failback?: boolean;
  /** Every run fails 30% of the secondary's map writes (a fifth of the runs fail some anyway). */
  map_faults?: boolean;
  /** The primary's activemap and metadata writes fail: 10% in their write, 5% in their flush. */
  primary_map_faults?: boolean;
  /** Half the process kills take a worker alone: its main process lives on, with the descriptor it
   * holds (held-component.ts), and restarts a primary's worker a second later. */
  worker_kills?: boolean;
}

export interface RunResult {
  seed: number;
  steps: number;
  ok: boolean;
  error: string | null;
  /** Step at which the failure was seen (steps + 1: during the final heal). */
  failed_step: number | null;
  trace_tail: string[];
  /** FNV-1a of the whole trace: the same seed must give the same value. */
  trace_hash: string;
  stats: Record<string, number>;
}

export const DEFAULT_STEPS = 300;
/** main.ts WORKER_RESTART_DELAY_MS. */
const WORKER_RESTART_MS = 1_000;
const TRACE_TAIL_LINES = Number(process.env.SIM_TRACE_LINES ?? 60);
const INFLIGHT_MAX = 6;
/** How long an armed power loss waits for its victim's next metadata or activemap write. */
const POWER_TRAP_MS = 300;
const MODES: readonly ReplicationMode[] = ["fullsync", "memsync", "async"];

export class SimFailure extends Error {}

type Unseen = "no" | "maybe" | "yes";

type Scenario =
  /** write_at_handshake: the rogue may be promoted before the primary changed anything; if it still
   * has not by the heal, it writes as its HANDSHAKE leaves (a stale handshake must not decide). */
  | { phase: "partition"; rogue: Host; write_at_handshake: boolean }
  | { phase: "rogue"; rogue: Host; writes_left: number; writing: boolean; write_at_handshake: boolean }
  | { phase: "detect"; rogue: Host; deadline_ms: number; detections_before: number }
  /** The secondary serves in `back`'s place while they are apart; once it changed data (and has no
   * request in flight), the operator makes it secondary again and `back` primary. */
  | { phase: "away"; back: Host; stopping: boolean }
  /** `back` serves again; the application waits until it connected (`hastctl status`), and its
   * first connection must synchronize it from the secondary when that changed data. */
  | { phase: "back"; back: Host; peer_changed: boolean };

interface Outstanding {
  kind: RequestKind;
  first: number;
  count: number;
  submit_ms: number;
  host: Host;
  epoch: number;
}

export function runSimulation(options: RunOptions): RunResult {
  return new Simulation(options).run();
}

class Simulation implements SimContext, Observer {
  readonly clock = new Scheduler();
  readonly rng: Rng;
  readonly net: Network;
  readonly cfg: SimConfig;
  readonly plant: Plant | null;
  readonly resync_digest: boolean;
  readonly sync_rate: number | null;
  readonly verify_rate: number | null;
  private readonly linux_flush: boolean;
  readonly observer: Observer = this;
  readonly hosts: [Host, Host];
  official: Host;
  private readonly oracle: Oracle;
  private readonly trace_tail: string[] = [];
  private trace_hash = 0x811c9dc5;
  private step_no = 0;
  private next_value = 1;
  private mode: ReplicationMode;
  /**
   * Whether a node holds data changes its peer has not seen: "yes" when its counters must say so
   * (a write issued while the link was down: localcnt was bumped durably first; or one answered
   * after the peer missed it: bumped before the answer); "maybe" while such a change is under way
   * (Observer.mayDiverge): a crash may leave the bump without the data, or unanswered data without
   * the bump, which is fine: it was never promised, and the node's map covers it.
   */
  private readonly unseen = new Map<Host, Unseen>();
  /** One crash per in-sync period, the first one before the pair was ever in sync (a fresh
   * primary's resuid is on disk before its first attempt): the guarantees are about single failures. */
  private crash_allowed = true;
  /**
   * A node crashed and the pair has not connected since: the primary may still see the old link
   * as healthy (a dead secondary is noticed by timeout), which is no in-sync point.
   */
  private awaiting_reconnect = false;
  /** A node whose power loss waits for its next control write (see armPowerLoss). */
  private power_trap: Host | null = null;
  /** A node was re-created (map zeroed) and awaits its full sync: differences are expected. */
  private recreated = false;
  private finishing = false;
  private scenario: Scenario | null = null;
  private split_brain_detections = 0;
  private readonly outstanding = new Set<Outstanding>();
  private readonly stats: Record<string, number> = {
    requests: 0, acked: 0, crashes: 0, failovers: 0, failbacks: 0, syncs_from_secondary: 0, promotions_refused: 0, restarts_refused: 0, forced: 0, split_brains: 0, swaps: 0, resets: 0, partitions: 0, in_sync: 0, map_batches: 0, own_flushes: 0, stale_restarts: 0, map_failures: 0, primary_control_failures: 0, drops: 0, worker_kills: 0,
    verifications: 0, verify_differ_chunks: 0, sync_unchanged_chunks: 0,
  };

  constructor(private readonly options: RunOptions) {
    this.rng = new Rng(options.seed);
    this.plant = options.plant;
    this.resync_digest = options.resync_digest === true;
    this.linux_flush = options.linux_flush === true;
    this.net = new Network(this.clock, this.rng);
    this.cfg = makeConfig(this.rng, new Rng(options.seed ^ LATER_KNOBS_SALT), options.changes_listed_max, options.map_faults === true, options.primary_map_faults === true);
    this.sync_rate = options.sync_rate === true ? (2 * this.cfg.chunk_bytes * 1000) / TICK_MS : null;
    this.verify_rate = options.verify_rate === true ? (this.cfg.chunk_bytes * 1000) / TICK_MS : null;
    this.mode = this.cfg.mode;
    this.net.latency_ms_max = this.rng.between(0, 3);
    const mapsize = mapBytesFor(this.cfg.nextents);
    const faulty = this.rng.chance(0.5);
    this.hosts = [this.makeHost("A", mapsize, faulty), this.makeHost("B", mapsize, faulty)];
    this.oracle = new Oracle(this.cfg.sectors);
    this.official = this.hosts[0];
    for (const h of this.hosts) this.unseen.set(h, "no");
    this.trace(`config ${JSON.stringify(this.cfg)} disk faults ${JSON.stringify(this.hosts[0].disk.faults)}`);
    this.setRole(this.hosts[1], "secondary");
    this.setRole(this.hosts[0], "primary");
  }

  run(): RunResult {
    let error: string | null = null;
    try {
      for (this.step_no = 1; this.step_no <= this.options.steps; this.step_no++) this.tick();
      this.step_no = this.options.steps + 1;
      this.finish();
    } catch (err) {
      error = err instanceof SimFailure ? err.message : `${(err as Error).stack ?? String(err)}`;
      this.trace(`FAILED: ${error.split("\n")[0]}`);
    }
    return {
      seed: this.options.seed, steps: this.options.steps, ok: error === null, error,
      failed_step: error === null ? null : this.step_no, trace_tail: this.trace_tail.slice(),
      trace_hash: (this.trace_hash >>> 0).toString(16).padStart(8, "0"), stats: this.stats,
    };
  }

  // ---- SimContext ----

  count(stat: "map_batches" | "own_flushes" | "stale_restarts" | "map_failures" | "primary_control_failures" | "verifications" | "verify_differ_chunks" | "sync_unchanged_chunks"): void {
    this.stats[stat]!++;
  }

  trace(line: string): void {
    const text = `t=${this.clock.now_ms} #${this.step_no} ${line}`;
    for (let i = 0; i < text.length; i++) this.trace_hash = Math.imul(this.trace_hash ^ text.charCodeAt(i), 0x01000193);
    this.trace_tail.push(text);
    if (this.trace_tail.length > TRACE_TAIL_LINES) this.trace_tail.shift();
  }

  other(host: Host): Host {
    return host === this.hosts[0] ? this.hosts[1] : this.hosts[0];
  }

  dial(from: Host): { conn: Connection } | { refused: string } {
    const to = this.other(from);
    if (!to.up) return { refused: `${to.name} is down` };
    if (to.role !== "secondary") return { refused: `${to.name} is ${to.role}, not secondary` };
    const conn = this.net.open();
    if (!conn) return { refused: "network partitioned" };
    if (to.secondary && !to.secondary.ended) to.secondary.stop("replaced by a new connection from the primary");
    to.secondary = null;
    to.endProcess();
    to.secondary = new SecondaryProc(to, this, conn);
    return { conn };
  }

  // ---- Observer ----

  localModify(host: Host, peer_sees: boolean): void {
    if (!peer_sees) this.unseen.set(host, "yes");
  }

  mayDiverge(host: Host): void {
    if (this.unseen.get(host) === "no") this.unseen.set(host, "maybe");
  }

  changesOnPeer(primary: Host): void {
    if (this.unseen.get(primary) === "yes") this.unseen.set(primary, "maybe");
  }

  metadataDurable(primary: Host): void {
    // A crash may follow within the same step: the end of a pass must be seen when it happens.
    if (primary === this.official) this.observeSync();
  }

  connected(primary: Host, secondary: Host): void {
    this.awaiting_reconnect = false;
    // A pass that mirrored the secondary's counters is not seen to end when the primary's process
    // was killed in its metadata write (the page cache kept the slot): its counters tell.
    if (this.unseen.get(secondary) === "yes" && primary.readMetadata().remotecnt === secondary.readMetadata().localcnt) this.unseen.set(secondary, "no");
    if (this.unseen.get(primary) === "yes" && this.unseen.get(secondary) === "yes") {
      this.fail(`split-brain merged silently: ${primary.name} and ${secondary.name} both changed data while apart, yet they connected`);
    }
    const s = this.scenario;
    if (s?.phase === "back" && primary === s.back) {
      const syncsrc = primary.primary!.engine.sync_source;
      if (s.peer_changed && syncsrc !== "secondary") this.fail(`${primary.name} connected after the failback but is not synchronized from its secondary (${syncsrc})`);
      if (syncsrc === "secondary") this.stats.syncs_from_secondary!++;
      this.scenario = null;
    }
  }

  splitBrain(primary: Host, secondary: Host): void {
    if (this.unseen.get(primary) === "no" || this.unseen.get(secondary) === "no") {
      this.fail(`spurious split-brain: ${primary.name} changed=${this.unseen.get(primary)}, ${secondary.name} changed=${this.unseen.get(secondary)}`);
    }
    this.split_brain_detections++;
    this.stats.split_brains!++;
    if (this.scenario === null && primary === this.official) {
      // The operator keeps the node that serves the application and re-creates the other one.
      this.clock.after(this.rng.between(1, 200), () => this.recreate(secondary));
    }
  }

  /** The nodes of one pair share their resuid: a fresh primary offers the one it wrote before its
   * first attempt, whatever restarts come between (the operator promotes no secondary that never
   * met its primary: failOver). */
  resuidMismatch(primary: Host, secondary: Host): void {
    this.fail(`${secondary.name} refused ${primary.name}'s resuid`);
  }

  secondaryModifyFailed(host: Host, first: number, count: number, value: number): void {
    this.oracle.peerModifyFailed(first, count, value, host === this.official);
  }

  primaryLocalFailed(host: Host, first: number, count: number, value: number): void {
    if (host === this.official) this.oracle.localFailed(first, count, value);
  }

  secondaryFlushFailed(host: Host): void {
    if (host !== this.official) this.oracle.peerUntrusted();
  }

  secondaryModifyLanded(host: Host, first: number, count: number, value: number): void {
    if (host !== this.official) this.oracle.peerModifyLanded(first, count, value);
  }

  // ---- the run ----

  private tick(): void {
    this.clock.runUntil(this.clock.now_ms + this.rng.between(1, 15));
    this.observeSync();
    if (!this.finishing) {
      // Sometimes several requests at one moment, as one NBD read brings them (map updates batch).
      if (this.rng.chance(0.6)) for (let n = this.rng.chance(0.3) ? this.rng.between(2, 4) : 1; n > 0; n--) this.workload();
      this.faults();
      if (this.options.verify === true && this.rng.chance(0.03)) this.verify();
    }
    this.scenarioStep();
    this.check();
  }

  private check(): void {
    const [a, b] = this.hosts;
    if (!this.recreated) {
      const problem = checkMapCoversDifferences(a.disk, b.disk, this.cfg);
      if (problem) this.fail(problem);
    }
    for (const h of this.hosts) h.primary?.map.checkInvariants();
    const limit_ms = 3 * this.cfg.timeout_ms + 1000;
    for (const o of this.outstanding) {
      if (o.epoch !== o.host.epoch) this.outstanding.delete(o);
      else if (this.clock.now_ms - o.submit_ms > limit_ms) {
        this.fail(`liveness: ${o.kind} of sectors ${o.first}+${o.count} on ${o.host.name} unanswered for ${this.clock.now_ms - o.submit_ms} ms`);
      }
    }
    this.observeSync();
  }

  private observeSync(): void {
    const p = this.official.primary;
    // Once the rogue is promoted its peer view is stale: nothing is in sync until it is resolved.
    if (!p || this.official.busy || (this.scenario && this.scenario.phase !== "partition")) return;
    // Both sides' changes are now on both: the counters no longer tell of a divergence. Not the
    // primary's while requests run: one the peer failed bumps localcnt only when it ends. (A peer
    // that crashed after the pass's flush keeps what it flushed, and its counters.)
    if (passMirrored(p)) {
      this.unseen.set(this.other(this.official), "no");
      if (p.engine.inflight() === 0) this.unseen.set(this.official, "no");
    }
    if (!this.awaiting_reconnect && isInSync(p) && this.outstanding.size === 0) this.onInSync();
  }

  private onInSync(): void {
    if (!this.crash_allowed) this.trace("in sync");
    this.stats.in_sync!++;
    this.oracle.inSync();
    for (const h of this.hosts) this.unseen.set(h, "no");
    this.crash_allowed = this.scenario === null && this.power_trap === null;
    this.recreated = false;
  }

  private fail(message: string): never {
    throw new SimFailure(message);
  }

  // ---- roles and crashes (the operator) ----

  private makeHost(name: string, mapsize: number, faulty: boolean): Host {
    const disk = new SimDisk(this.cfg.sectors, mapsize, this.clock, this.rng);
    disk.faults = faulty
      ? { latency_ms_max: this.rng.between(1, 6), eio_read: 0.01, eio_write: 0.01, eio_flush: 0.02 }
      : { latency_ms_max: this.rng.between(0, 4), eio_read: 0, eio_write: 0, eio_flush: 0 };
    const host = new Host(name, disk, this.clock);
    disk.drops_on_eio = this.linux_flush;
    disk.on_drop = (sectors, values) => {
      this.trace(`${name}: a failed flush dropped ${sectors.length} cached sectors (${sectors.slice(0, 40).join(", ")}${sectors.length > 40 ? ", …" : ""})`);
      this.stats.drops!++;
      if (host === this.official && host.primary !== null) this.oracle.dropped(sectors, values);
      else this.secondaryLost(sectors, values);
    };
    host.create(this.freshMetadata(mapsize));
    return host;
  }

  private freshMetadata(mapsize: number): Metadata {
    const c = this.cfg;
    return {
      resource: c.resource, datasize: c.datasize, extentsize: c.extent_bytes, keepdirty: c.keepdirty, localoff: 8192 + mapsize,
      mapsize, sectorsize: c.sector_bytes, resuid: 0n, localcnt: 0n, remotecnt: 0n, prevrole: "init", flags: 0,
    };
  }

  /**
   * The secondary's disk lost cached sectors (a failed flush dropped them, or a power loss). The
   * primary copies its own copy to it again, but
   * while it is synchronized from the secondary, an extent whose only current copy the secondary
   * held has none whole left: changes there that no flush made durable may be lost (the primary
   * reports that with a failed flush, which the engine's unit tests check).
   */
  private secondaryLost(sectors: number[], values: number[]): void {
    const p = this.official.primary;
    if (!p || p.engine.sync_source !== "secondary") return;
    const per_extent = this.cfg.extent_bytes / this.cfg.sector_bytes;
    const source_only = sectors.map((s) => p.engine.currentOnPeerOnly(Math.floor(s / per_extent)));
    this.oracle.lostUnflushed(sectors.filter((_, k) => source_only[k]), values.filter((_, k) => source_only[k]));
  }

  /** Returns false when a promotion was refused (the copy is incomplete): the role stays as it was.
   * Only the callers that pass `may_refuse` expect that; for the others it is a failure. */
  private setRole(host: Host, role: Role, may_refuse = false, force = false): boolean {
    this.trace(`operator: ${host.name} role ${force ? "--force " : ""}${role}`);
    host.primary?.stop();
    host.secondary?.stop(`role changed to ${role}`);
    host.primary = null;
    host.secondary = null;
    host.endProcess();
    const old = host.role;
    host.role = role;
    if (role !== "primary") return true;
    const proc = PrimaryProc.start(host, this, force);
    if (proc === null) {
      if (!may_refuse) this.fail(`${host.name} refused to become primary: its copy is marked incomplete`);
      this.stats.promotions_refused!++;
      host.role = old;
      return false;
    }
    host.primary = proc;
    proc.setMode(this.mode);
    return true;
  }

  private copyIncomplete(host: Host): boolean {
    return (host.readMetadata().flags & FLAG_COPY_INCOMPLETE) !== 0;
  }

  private crash(host: Host, kind: "kill" | "power"): void {
    this.trace(`FAULT: ${host.name} ${kind === "kill" ? "process killed" : "loses power"}`);
    this.stats.crashes!++;
    this.awaiting_reconnect = true;
    for (const proc of [host.primary, host.secondary]) {
      if (!proc) continue;
      if (kind === "power") proc.vanish();
      else proc.kill();
    }
    const cached = kind === "power" ? host.disk.cachedSectors() : [];
    const cached_values = cached.map((s) => host.disk.data[s]!);
    if (kind === "power") {
      host.disk.powerLoss();
      host.boots++;
    }
    // What the secondary held unflushed (a power loss), or had received and not yet written (any
    // crash), is gone: the primary's copy is the only one left, but where it is synchronized from
    // the secondary and its copy is not current.
    if (host !== this.official) {
      this.oracle.peerLostCache();
      this.secondaryLost(cached, cached_values);
    }
    host.primary = null;
    host.secondary = null;
    host.endProcess();
    host.dropHeld(); // hastd's main process went too
    host.role = "init";
    host.up = false;
  }

  /**
   * `--worker-kills`: the worker of `victim` dies (SIGKILL, OOM) while hastd's main process lives
   * on. A secondary's next worker comes with the primary's next connection; a primary's is started
   * a second later (main.ts workerExited), through the main process's flush, and when it refuses
   * the copy the role goes to init and the operator fails over.
   */
  private killWorker(victim: Host): void {
    this.trace(`FAULT: ${victim.name}'s worker killed`);
    this.stats.crashes!++;
    this.stats.worker_kills!++;
    this.awaiting_reconnect = true;
    const was_primary = victim.primary !== null;
    for (const proc of [victim.primary, victim.secondary]) proc?.kill();
    if (victim !== this.official) {
      this.oracle.peerLostCache();
      this.secondaryLost([], []);
    }
    victim.primary = null;
    victim.secondary = null;
    victim.endProcess();
    if (!was_primary) return;
    this.oracle.primaryEnded();
    this.clock.after(WORKER_RESTART_MS, () => {
      if (victim.role !== "primary" || victim.primary || !victim.up) return;
      const proc = PrimaryProc.start(victim, this);
      if (proc) {
        victim.primary = proc;
        proc.setMode(this.mode);
        return;
      }
      this.trace(`${victim.name}: the restarted primary worker refused its copy: role init`);
      victim.role = "init";
      this.stats.restarts_refused!++;
      if (!this.failOver(victim)) {
        this.stats.forced!++;
        if (!this.failOver(victim, true)) this.fail(`${this.other(victim).name} could not be forced to primary`);
      }
      this.setRole(victim, "secondary");
    });
  }

  private restartLater(host: Host, role: Role): void {
    this.clock.after(this.rng.between(50, 1500), () => {
      host.up = true;
      this.trace(`${host.name} boots`);
      if (this.setRole(host, role, role === "primary")) return;
      // Refused: more extents of its copy were stale (a write or flush failed there that the peer
      // took) than its metadata lists. The operator fails over to the peer, which holds them; if
      // that copy is incomplete too, neither is whole, and the operator forces the peer's (what
      // the crashed primary had not copied to it is lost, as in any failover).
      this.stats.restarts_refused!++;
      if (!this.failOver(host)) {
        this.stats.forced!++;
        if (!this.failOver(host, true)) this.fail(`${this.other(host).name} could not be forced to primary`);
      }
      this.setRole(host, "secondary");
    });
  }

  /**
   * The secondary becomes primary in `from`'s place, unless it refuses (its copy is incomplete) or
   * never met `from` (its resuid is still 0): it holds none of its data then, and promoted it would
   * draw a resuid of its own, which `from`'s copy, back as its secondary, does not share.
   */
  private failOver(from: Host, force = false): boolean {
    const to = this.other(from);
    if (to.role !== "secondary" || to.readMetadata().resuid === 0n || !this.setRole(to, "primary", true, force)) return false;
    // What the peer was promised to hold is what survives.
    this.stats.failovers!++;
    this.oracle.lowerFloor((rec) => rec.replicated);
    this.official = to;
    return true;
  }

  /** `hastctl verify` on the primary, when it would start: over the whole device, or from an
   * offset (`--from`, any byte: the walk rounds it down to its chunk). */
  private verify(): void {
    const p = this.official.primary;
    if (!p || p.engine.verifyRefusal() !== null) return;
    const from = this.rng.chance(0.5) ? 0 : this.rng.between(0, this.cfg.datasize - 1);
    this.trace(`operator: verify on ${this.official.name}${from === 0 ? "" : ` --from ${from}`}`);
    p.verify(from);
  }

  /** Split-brain recovery (spec 7.4): role init, hastctl create, role secondary. */
  private recreate(host: Host): void {
    if (host === this.official || !host.up) return;
    this.setRole(host, "init");
    host.create(this.freshMetadata(mapBytesFor(this.cfg.nextents)));
    this.trace(`operator: ${host.name} re-created`);
    this.unseen.set(host, "no");
    this.recreated = true;
    this.oracle.peerLostCache(); // its copy is empty until the full sync
    this.setRole(host, "secondary");
  }

  private faults(): void {
    const r = this.rng.float();
    const now = this.clock.now_ms;
    const [a, b] = this.hosts;
    if (r < 0.012) {
      this.trace("FAULT: connections reset");
      this.stats.resets!++;
      this.net.resetAll("connection reset");
    } else if (r < 0.02) {
      const until = now + this.rng.between(50, 2 * this.cfg.timeout_ms);
      this.trace(`FAULT: link stalls until t=${until}`);
      this.net.stall(until);
    } else if (r < 0.026) {
      const until = now + this.rng.between(100, 3 * this.cfg.timeout_ms);
      this.trace(`FAULT: partition until t=${until}`);
      this.stats.partitions!++;
      this.net.partition(until);
    } else if (r < 0.031) {
      this.mode = this.rng.pick(MODES);
      this.trace(`operator: replication ${this.mode}`);
      for (const h of this.hosts) h.primary?.setMode(this.mode);
    } else if (r < 0.05) {
      if (!this.crash_allowed || this.scenario || !a.up || !b.up) return;
      this.crash_allowed = false;
      const victim = this.rng.chance(0.5) ? this.official : this.other(this.official);
      const kind = this.rng.chance(0.5) ? "power" : "kill";
      if (kind === "power" && this.rng.chance(0.5)) return this.armPowerLoss(victim);
      if (kind === "kill" && this.options.worker_kills === true && this.rng.chance(0.5)) return this.killWorker(victim);
      this.crashAndRecover(victim, kind);
    } else if (r < 0.054) {
      // Not while the primary is synchronized from its secondary: it cannot change data apart then.
      const p = this.official.primary;
      if (!this.crash_allowed || this.scenario || !a.up || !b.up || !p?.connected || p.engine.sync_source === "secondary") return;
      this.crash_allowed = false;
      const rogue = this.other(this.official);
      this.trace(`FAULT: split-brain scenario, ${rogue.name} will be promoted while partitioned`);
      this.net.partition(Number.MAX_SAFE_INTEGER);
      this.scenario = { phase: "partition", rogue, write_at_handshake: this.rng.chance(0.5) };
    } else if (r < 0.06) {
      const next = this.switchable();
      if (!next) return;
      this.onInSync();
      this.stats.swaps!++;
      this.trace(`operator: planned switch-over to ${next.name}`);
      this.switchTo(next);
    } else if (r < 0.09 && this.options.failback === true) {
      const next = this.switchable();
      if (!next) return;
      this.onInSync();
      this.stats.failbacks!++;
      const back = this.official;
      this.trace(`FAULT: partition; the operator fails over to ${next.name}, and back to ${back.name} once ${next.name} wrote`);
      this.net.partition(Number.MAX_SAFE_INTEGER);
      if (this.switchTo(next)) this.scenario = { phase: "away", back, stopping: false };
      else this.net.heal();
    }
  }

  /** The secondary, when a planned switch-over to it may start now: the pair in sync and idle, and
   * (as an operator checks `hastctl status` there first) the secondary's copy complete. */
  private switchable(): Host | null {
    const p = this.official.primary;
    if (!p || this.scenario || this.power_trap || this.awaiting_reconnect || this.official.busy || !isInSync(p) || this.outstanding.size > 0) return null;
    const next = this.other(this.official);
    return next.busy || this.copyIncomplete(next) ? null : next;
  }

  /** The official primary becomes secondary and `next` primary; false when `next` refused (the
   * roles are then as they were). */
  private switchTo(next: Host): boolean {
    const previous = this.official;
    this.setRole(previous, "secondary");
    if (!this.setRole(next, "primary", true)) {
      this.primaryAgain(previous);
      return false;
    }
    this.oracle.primaryEnded();
    this.official = next;
    return true;
  }

  /**
   * `host`, which just stopped as primary, serves again after its peer refused to take over. With
   * `primary_map_faults` its own stop may have failed to write its map or metadata: not an orderly
   * end, so its start meets the failed flushes that worker had acted on and marks its copy
   * incomplete (a peer's refusal may be that too). The operator then forces it: it holds all the
   * pair had.
   */
  private primaryAgain(host: Host): void {
    if (this.setRole(host, "primary", this.options.primary_map_faults === true)) return;
    this.stats.forced!++;
    this.setRole(host, "primary", false, true);
  }

  /** A crash of `victim`, then what the operator does: restart it, or fail over to its peer. */
  private crashAndRecover(victim: Host, kind: "kill" | "power"): void {
    const official = this.official;
    const survivor = this.other(victim);
    this.crash(victim, kind);
    if (victim !== official) return this.restartLater(victim, "secondary");
    this.oracle.primaryEnded();
    // Failover, unless the survivor refuses (its copy is incomplete): the operator then brings the
    // crashed primary back instead.
    if (survivor.role === "secondary" && this.rng.chance(0.5) && this.failOver(victim)) return this.restartLater(victim, "secondary");
    if (kind === "power") this.oracle.lowerFloor((rec) => rec.flushed);
    this.restartLater(victim, "primary");
  }

  /**
   * The power loss strikes while `victim` sits in a metadata or activemap write, where write
   * ordering matters most: its next one, or its next map write that clears bits (or after
   * POWER_TRAP_MS if none comes). Meanwhile no other crash, scenario or switch-over starts; the
   * end of the run disarms it.
   */
  private armPowerLoss(victim: Host): void {
    const target: ControlWrite | "any" = this.rng.pick(["any", "map-clear"] as const);
    this.trace(`FAULT: ${victim.name} will lose power in its next ${target === "any" ? "metadata or activemap write" : "map write that clears bits"}`);
    this.power_trap = victim;
    const fire = () => {
      if (this.power_trap !== victim) return;
      this.power_trap = null;
      victim.on_block = null;
      if (this.finishing || !victim.up || !this.other(victim).up) return this.trace(`${victim.name}: power loss disarmed`);
      this.crashAndRecover(victim, "power");
    };
    victim.on_block = (ms, what) => {
      if (target !== "any" && what !== target) return false;
      // The block ends at +ms and was scheduled first: a crash at +ms-1 or earlier lands inside it.
      this.clock.after(this.rng.int(ms), fire);
      return true;
    };
    this.clock.after(POWER_TRAP_MS, fire);
  }

  private scenarioStep(): void {
    const s = this.scenario;
    if (!s) return;
    const official = this.official;
    switch (s.phase) {
      case "partition":
        if (this.finishing) {
          this.trace("split-brain scenario abandoned before the promotion");
          this.scenario = null;
          this.net.heal();
          return;
        }
        // Promote only once the primary noticed the partition and (unless it writes at the handshake,
        // below) changed data the peer cannot see.
        if (official.primary?.connected !== false) return;
        if (!s.write_at_handshake && this.unseen.get(official) !== "yes") return;
        if (!this.setRole(s.rogue, "primary", true)) {
          this.trace("split-brain scenario abandoned: the promotion was refused");
          this.scenario = null;
          this.net.heal();
          return;
        }
        this.scenario = { phase: "rogue", rogue: s.rogue, writes_left: this.rng.between(1, 3), writing: false, write_at_handshake: s.write_at_handshake };
        return;
      case "rogue": {
        const p = s.rogue.primary!;
        if (s.writing) return;
        if (s.writes_left === 0) {
          if (this.unseen.get(s.rogue) !== "yes") this.fail(`${s.rogue.name} wrote as primary but no change was seen`);
          if (this.unseen.get(official) !== "yes") {
            // Its first change since the partition races its next HANDSHAKE: the handshake carries
            // the old counters, and the reply (row 3) must not be acted on.
            this.trace(`${official.name} will write as its next HANDSHAKE leaves`);
            official.primary!.on_handshake = () => this.appModify(official);
          }
          this.setRole(s.rogue, "secondary");
          this.net.heal();
          this.scenario = {
            phase: "detect", rogue: s.rogue, detections_before: this.split_brain_detections,
            deadline_ms: this.clock.now_ms + this.detectWindowMs(),
          };
          return;
        }
        const count = this.rng.between(1, 4);
        const first = this.rng.int(this.cfg.sectors - count + 1);
        const value = this.next_value++;
        s.writing = true;
        s.rogue.guard(() => p.submit("write", first * this.cfg.sector_bytes, count * this.cfg.sector_bytes, new Uint32Array(count).fill(value), (_id, ok) => {
          s.writing = false;
          if (ok) s.writes_left--; // one that failed (its metadata could not be written) is made again
        }))();
        return;
      }
      case "away": {
        if (!s.stopping) {
          // The operator stops the application once the stand-in changed data (or the run ends).
          s.stopping = this.finishing || (this.unseen.get(official) === "yes" && this.rng.chance(0.2));
          return;
        }
        if (this.outstanding.size > 0 || official.busy || s.back.busy) return;
        const peer_changed = this.unseen.get(official) === "yes";
        this.trace(`operator: back to ${s.back.name} as primary, ${official.name} secondary${peer_changed ? " (it changed data)" : ""}`);
        this.oracle.primaryEnded();
        // The stand-in's process flushed as it ended: every acknowledged write is on its disk.
        this.oracle.durableOnPeer();
        this.setRole(official, "secondary");
        if (!this.setRole(s.back, "primary", true)) {
          if (this.options.primary_map_faults !== true) this.fail(`${s.back.name} refused to become primary again`);
          this.trace(`operator: ${official.name} serves again`);
          this.primaryAgain(official);
          this.scenario = null;
          this.net.heal();
          return;
        }
        this.official = s.back;
        this.net.heal();
        this.scenario = { phase: "back", back: s.back, peer_changed };
        return;
      }
      case "back":
        return; // until it connects (connected())
      case "detect":
        if (this.split_brain_detections > s.detections_before) {
          this.scenario = null;
          this.recreate(s.rogue);
        } else if (this.net.blocked_until_ms > this.clock.now_ms) {
          // A later partition or stall keeps them apart: the window starts again when it ends.
          s.deadline_ms = Math.max(s.deadline_ms, this.net.blocked_until_ms + this.detectWindowMs());
        } else if (this.clock.now_ms > s.deadline_ms) {
          this.fail(`split-brain between ${official.name} and ${s.rogue.name} not detected by t=${s.deadline_ms}`);
        }
        return;
    }
  }

  /** Time the pair needs to meet once the link works: a few reconnect attempts and handshakes. */
  private detectWindowMs(): number {
    return 3 * this.cfg.reconnect_ms + 2 * this.cfg.timeout_ms + 1000;
  }

  // ---- the application ----

  private workload(): void {
    const host = this.official;
    const p = host.primary;
    if (!host.up || !p || this.outstanding.size >= INFLIGHT_MAX) return;
    const s = this.scenario;
    if ((s?.phase === "back" && !p.connected) || (s?.phase === "away" && s.stopping)) return;
    const r = this.rng.int(100);
    const kind: RequestKind = r < 50 ? "write" : r < 60 ? "delete" : r < 85 ? "read" : "flush";
    const count = kind === "flush" ? 0 : this.rng.between(1, Math.min(8, this.cfg.sectors));
    const first = kind === "flush" ? 0 : this.rng.int(this.cfg.sectors - count + 1);
    if (kind === "write" || kind === "delete") {
      // The scenario's first change on the primary is the one it makes at the handshake.
      if ((s?.phase === "partition" || s?.phase === "rogue") && s.write_at_handshake && this.unseen.get(host) !== "yes") return;
      if (this.changeInFlight(first, count)) return;
    }
    this.issue(p, { kind, first, count, submit_ms: this.clock.now_ms, host, epoch: host.epoch });
  }

  /** A write from the application now, on sectors no change in flight covers. */
  private appModify(host: Host): void {
    const p = host.primary;
    if (!host.up || !p) return;
    const count = this.rng.between(1, Math.min(8, this.cfg.sectors));
    const first = this.rng.int(this.cfg.sectors - count + 1);
    if (this.changeInFlight(first, count)) return;
    this.issue(p, { kind: "write", first, count, submit_ms: this.clock.now_ms, host, epoch: host.epoch });
  }

  /** A write or trim in flight covers part of sectors first..first+count-1 (the oracle orders none). */
  private changeInFlight(first: number, count: number): boolean {
    for (const o of this.outstanding) {
      if ((o.kind === "write" || o.kind === "delete") && o.first < first + count && first < o.first + o.count) return true;
    }
    return false;
  }

  private issue(p: PrimaryProc, o: Outstanding): void {
    this.outstanding.add(o);
    this.stats.requests!++;
    o.host.guard(() => this.submit(p, o))();
  }

  private submit(p: PrimaryProc, o: Outstanding): void {
    const sb = this.cfg.sector_bytes;
    const mode = this.mode;
    const connected = p.connected;
    const link_epoch = p.link_epoch;
    let rec: WriteRecord | null = null;
    let data: Uint32Array | null = null;
    let flush: FlushToken | null = null;
    let floors: Int32Array | null = null;
    if (o.kind === "write" || o.kind === "delete") {
      const value = o.kind === "write" ? this.next_value++ : 0;
      rec = this.oracle.submitModify(o.first, o.count, value);
      data = new Uint32Array(o.count).fill(value);
    } else if (o.kind === "flush") flush = this.oracle.flushSubmitted();
    else floors = this.oracle.floorsOf(o.first, o.count);
    p.submit(o.kind, o.first * sb, o.count * sb, data, (id, ok, read) => {
      this.outstanding.delete(o);
      if (ok) this.stats.acked!++;
      this.trace(`${o.host.name}: request ${id} ${o.kind} ${o.first}+${o.count}${rec ? ` value ${rec.value}` : ""} answered ${ok ? "ok" : "EIO"}`);
      if (rec) {
        // Answered with the link down: a change the peer cannot see, unless it made it (its answer
        // may have come before the link went, and then the counters need not say so).
        if (ok && !p.connected) {
          if (rec.landed) this.mayDiverge(o.host);
          else this.unseen.set(o.host, "yes");
        }
        const promised = ok && (o.kind === "delete" || mode !== "async") && connected && p.connected && p.link_epoch === link_epoch;
        this.oracle.acked(rec, ok, promised);
      } else if (o.kind === "flush") {
        const lie = this.oracle.flushAcked(flush!, ok);
        if (lie) this.fail(lie);
      }
      else if (ok) {
        const now = this.oracle.floorsOf(o.first, o.count); // a drop while the read ran lowers it
        for (let i = 0; i < o.count; i++) {
          if (!this.oracle.allows(o.first + i, read![i]!, Math.min(floors![i]!, now[i]!))) {
            this.fail(`read of sector ${o.first + i} on ${o.host.name} returned ${read![i]}, which the application may not see (${this.oracle.describe(o.first + i)})`);
          }
        }
      }
    });
  }

  // ---- the end: heal, wait for sync, compare ----

  private finish(): void {
    this.finishing = true;
    this.trace("final: faults stop, the network heals");
    for (const h of this.hosts) h.disk.faults = { ...h.disk.faults, eio_read: 0, eio_write: 0, eio_flush: 0 };
    // The primary's too: a metadata write that failed in the final flush would fail it.
    this.cfg.primary_control_fail_rate = this.cfg.primary_control_flush_fail_rate = 0;
    this.net.heal();
    const deadline_ms = this.clock.now_ms + 20 * this.cfg.timeout_ms + 20 * this.cfg.reconnect_ms + 5000;
    let retried_ms = this.clock.now_ms;
    for (;;) {
      this.tick();
      const p = this.official.primary;
      if (this.scenario === null && p && this.outstanding.size === 0 && this.crash_allowed && isInSync(p)) break;
      if (this.clock.now_ms > deadline_ms) {
        this.fail(`liveness: no in-sync state by t=${deadline_ms} after the network healed (${this.outstanding.size} requests open, scenario ${this.scenario?.phase ?? "none"})`);
      }
      // A pass that left extents dirty after errors retries only at the next connection.
      if (p?.connected && !p.engine.syncProgress().active && p.map.syncExtentCount() > 0 && this.clock.now_ms - retried_ms > this.cfg.timeout_ms) {
        retried_ms = this.clock.now_ms;
        this.trace("final: sync left extents dirty; reconnecting to retry them");
        this.net.resetAll("retry");
      }
    }
    this.finalFlush();
    const problem = checkReplicasIdentical(this.hosts[0].disk, this.hosts[1].disk);
    if (problem) this.fail(problem);
    const data = this.official.disk.data;
    for (let s = 0; s < this.cfg.sectors; s++) {
      if (!this.oracle.allows(s, data[s]!)) {
        this.fail(`acknowledged data lost: sector ${s} holds ${data[s]} on ${this.official.name} (${this.oracle.describe(s)})`);
      }
    }
    this.trace(`final: ok ${JSON.stringify(this.stats)}`);
  }

  /** The application flushes once more; both caches must then be durable and equal. The first
   * flush may report a failed flush of the daemon's own (as Linux reports a write-back error once);
   * a second one must succeed. */
  private finalFlush(): void {
    for (let attempt = 1; ; attempt++) {
      if (this.flushOnce()) return;
      if (attempt === 2) this.fail("final flush failed");
      this.trace("final: the flush reported an earlier failure; flushing again");
    }
  }

  private flushOnce(): boolean {
    const p = this.official.primary!;
    let answer: boolean | null = null;
    this.official.guard(() => p.submit("flush", 0, 0, null, (_id, ok) => {
      answer = ok;
    }))();
    const deadline_ms = this.clock.now_ms + 4 * this.cfg.timeout_ms;
    while (answer === null) {
      if (this.clock.now_ms > deadline_ms) this.fail("liveness: final flush unanswered");
      this.clock.runUntil(this.clock.now_ms + 5);
    }
    return answer;
  }
}

/** Choices added after seeds were recorded come from a stream of their own, so a recorded seed
 * (CI's replays) still makes the run it made. */
const LATER_KNOBS_SALT = 0x5eed_c0de;

function makeConfig(rng: Rng, later: Rng, changes_listed_max: number | undefined, map_faults: boolean, primary_map_faults: boolean): SimConfig {
  const sector_bytes = 512, extent_bytes = 4096;
  const nextents = rng.between(16, 64);
  const datasize = nextents * extent_bytes - (rng.chance(0.3) ? sector_bytes * rng.between(1, 7) : 0);
  const timeout_ms = rng.between(1000, 3000);
  return {
    resource: "sim", sector_bytes, extent_bytes, nextents, datasize, sectors: datasize / sector_bytes,
    keepdirty: rng.between(1, 4), chunk_bytes: rng.pick([1024, 2048, 4096]), mode: rng.pick(MODES),
    checksum: rng.pick(["none", "crc32", "sha256"] as const), compression: rng.pick(["none", "hole", "hole", "zstd"] as const),
    timeout_ms, keepalive_ms: Math.floor(timeout_ms / 2), reconnect_ms: rng.between(200, 1000), meta_latency_ms_max: rng.between(1, 6),
    // Half the runs hold the change lists to a few extents: flushes of the engine's own then come
    // among the faults (the default never fills on the simulator's small disks).
    changes_listed_max: changes_listed_max ?? (later.chance(0.5) ? later.between(1, 8) : CHANGES_LISTED_MAX),
    // A quarter of the runs list at most one or two stale extents in the primary's metadata: past
    // that its copy is marked incomplete, and a restart of it is refused.
    stale_listed_max: later.chance(0.25) ? later.between(1, 2) : STALE_EXTENTS_MAX,
    // A fifth of the runs fail some of the secondary's map writes (its marks then count as made in
    // memory, not on disk).
    secondary_map_fail_rate: map_faults ? 0.3 : later.chance(0.2) ? later.pick([0.05, 0.3]) : 0,
    secondary_map_flush_fail_rate: map_faults ? 0.1 : 0,
    primary_control_fail_rate: primary_map_faults ? 0.1 : 0,
    primary_control_flush_fail_rate: primary_map_faults ? 0.05 : 0,
  };
}
