// The hastd main process (spec 3): owns the configuration, every resource's role, the control
// socket, the worker processes and the hooks. It never reads or writes resource data; it only
// flushes each component before a worker starts on it (held-component.ts).
import type { Config, ResourceConfig, Role } from "../config/index.ts";
import { formatAddress, loadConfig } from "../config/index.ts";
import { ControlError, type ControlReply, type ControlRequest, type EventName, type ResourceStatus } from "../wire/control.ts";
import { ControlServer, type ControlStream } from "./control-server.ts";
import { EVENT_SUBSCRIBERS_MAX, EventFeed } from "./event-feed.ts";
import { HookRunner } from "./hooks.ts";
import { PeerListener, type Admission } from "./listener.ts";
import type { HookEvent, LogSetup, SecondaryPeer, VerifyAction } from "./ipc.ts";
import { WORKER_EXIT_REFUSED, WORKER_EXIT_RESTART } from "./ipc.ts";
import type { Logger } from "./log.ts";
import { resourceNeedsRestart, resourceChanged } from "./reload.ts";
import { Serial } from "./serial.ts";
import { WORKER_KILL_WAIT_MS, WORKER_START_WAIT_MS, WorkerHandle, type WorkerExit } from "./worker-handle.ts";
import { EX_OK, EX_OSERR, EX_SOFTWARE, ExitError } from "../core/sysexits.ts";
import { HeldComponent, type Unacted } from "../io/held-component.ts";
import { Pidfile } from "./pidfile.ts";
import { cleanupStaleDevice, deviceWhere } from "../gate/device.ts";
import { VERSION_CACHE_EPOCH } from "../wire/peer/index.ts";

export const WORKER_RESTART_DELAY_MS = 1_000;
/** A serving primary worker that stopped on an internal error (an assertion, an uncaught
 * exception) is restarted, as FreeBSD's main process restarts one that aborted, but not more than
 * this many times within CRASH_WINDOW_MS: a fault that comes back at once is left to the operator. */
export const CRASH_RESTARTS_MAX = 3;
export const CRASH_WINDOW_MS = 60_000;

/** Why a role change did not take: the reply element's error and message. */
interface RoleFailure {
  error: (typeof ControlError)[keyof typeof ControlError];
  message: string;
}

interface ResourceState {
  config: ResourceConfig;
  role: Role;
  worker: WorkerHandle | null;
  restart: ReturnType<typeof setTimeout> | null;
  /** When its primary workers last crashed (internal errors), within CRASH_WINDOW_MS. */
  crashes: number[];
  /** The last connection attempt ended in split-brain (cleared by a connect or a role change). */
  split_brain: boolean;
  /** A secondary's copy state as its worker last reported it, kept after the worker ends (the
   * primary died): null when unknown (no worker since the last role change). */
  copy_incomplete: boolean | null;
  /** A primary worker ended without its orderly stop (killed, crashed): the /dev/hast device it
   * made may still be there. Removed when the primary period ends (removeDeviceLeft); a primary
   * worker that starts removes it itself. */
  device_left: boolean;
  /** Role changes, admissions and reload restarts, one at a time (each stops and starts the worker
   * across awaits). */
  turns: Serial;
}

export interface MainOptions {
  config_path: string;
  node?: string;
  log: Logger;
  log_setup: LogSetup;
  foreground: boolean;
  /** Held and written by the caller; moved by a reload when it follows the config's `pidfile`
   * (not given with -P, not in the foreground: spec 3.8 item 3). */
  pidfile?: { file: Pidfile; follows_config: boolean };
}

export class Hastd {
  private resources = new Map<string, ResourceState>();
  /** Each component's descriptor held across workers, by path (held-component.ts): kept while
   * hastd runs, so that an error it took outlives a resource removed and added again. */
  private held = new Map<string, HeldComponent>();
  private control!: ControlServer;
  private listener: PeerListener;
  private hooks: HookRunner;
  private events = new EventFeed();
  private stopping = false;
  private shutting: Promise<void> | null = null;
  /** The pidfile held now (a reload may have moved it), released by the caller at exit. */
  pidfile: Pidfile | null;

  private constructor(
    private config: Config,
    private opts: MainOptions,
  ) {
    this.hooks = new HookRunner(opts.log, opts.foreground ? "inherit" : "ignore");
    this.pidfile = opts.pidfile?.file ?? null;
    this.listener = this.newListener();
    for (const r of config.resources) this.resources.set(r.name, newState(r));
  }

  /** Starts the control socket; the config was already loaded (errors reported by the caller). */
  static async start(config: Config, opts: MainOptions): Promise<Hastd> {
    const hastd = new Hastd(config, opts);
    hastd.control = await ControlServer.start(controlPath(config), (req) => hastd.handle(req), opts.log);
    try {
      const { bound } = await hastd.listener.listenOn(config.listen);
      opts.log.info(`Listening on ${bound.join(", ")}.`);
    } catch (err) {
      hastd.control.stop();
      throw new ExitError((err as Error).message, EX_OSERR);
    }
    return hastd;
  }

  private newListener(): PeerListener {
    return new PeerListener({
      resources: () => [...this.resources.values()].map((s) => s.config),
      roleOf: (name) => this.resources.get(name)?.role,
      admit: (a) => this.admit(a),
      log: this.opts.log,
    });
  }

  /** A primary passed the checks: any previous secondary worker goes, a new one takes the socket.
   * In its turn, the role is looked at again: it may have changed while the admission waited. */
  private async admit(a: Admission): Promise<void> {
    const state = this.resources.get(a.resource.name);
    if (!state) return;
    await state.turns.run(async () => {
      if (this.stopping || this.resources.get(a.resource.name) !== state || state.role !== "secondary") return;
      if (state.worker) this.log.info(`[${state.config.name}] New connection from the primary at ${a.remote}; replacing the secondary worker.`);
      await this.stopWorker(state);
      // With the old worker gone, before the new one writes: what its flush leaves out is a
      // write-back error taken after it, which the next connection's flush meets.
      const held = this.heldOf(state);
      const flushed = await held.flush(state.config.localpath);
      const cache = a.version >= VERSION_CACHE_EPOCH ? flushed : null;
      if (this.stopping || state.role !== "secondary") return;
      if (flushed.flush_error) this.log.warn(`[${state.config.name}] Flush before the handshake reply failed (${flushed.flush_error}); the primary will not copy back from this node the changes it had not confirmed durable.`);
      // A copy the primary completes from here on holds whatever that error dropped (every change
      // this node had not confirmed durable is copied again): it has then been acted on.
      this.startWorker(state, "secondary", { peer: { fd: a.fd, handshake: a.handshake, protocol_version: a.version, cache }, clears: held.unacted });
    });
  }

  private heldOf(state: ResourceState): HeldComponent {
    const path = state.config.localpath;
    let held = this.held.get(path);
    if (!held) this.held.set(path, (held = new HeldComponent()));
    return held;
  }

  get log(): Logger {
    return this.opts.log;
  }

  async handle(request: ControlRequest): Promise<ControlReply | ControlStream> {
    if (request.cmd === "events") return await this.watch(request.resources);
    const all = request.resources[0] === "all";
    const names = all ? [...this.resources.keys()] : request.resources;
    const replies: ResourceStatus[] = [];
    for (const name of names) {
      const state = this.resources.get(name);
      if (!state) {
        replies.push({ name, error: ControlError.NOENTRY, message: "no such resource" });
        continue;
      }
      if (request.cmd === "role") {
        const reply: ResourceStatus = { name };
        const failed = await state.turns.run(async (): Promise<RoleFailure | null> => {
          // A reload removed the resource while this request waited for its turn.
          if (this.resources.get(name) !== state) return { error: ControlError.NOENTRY, message: "no such resource (removed by a reload)" };
          // The role before this request, which an earlier one may have changed while this one waited.
          Object.assign(reply, { role: state.role, previous_role: state.role });
          return await this.setRole(state, request.role, request.force === true);
        });
        if (failed) Object.assign(reply, failed);
        replies.push(reply);
      } else if (request.cmd === "verify") {
        const action: VerifyAction = request.stop === true ? { op: "stop" } : request.resume === true ? { op: "resume" } : { op: "start", from: request.from ?? 0 };
        replies.push(await this.verify(state, action, all));
      } else {
        replies.push(await this.status(state));
      }
    }
    return { error: ControlError.OK, resources: replies };
  }

  /** `events`: the resources' status now, then their events. The subscription starts before the
   * status is gathered, so an event raised meanwhile may show in both, but none goes missing. */
  private async watch(resources: string[]): Promise<ControlReply | ControlStream> {
    const all = resources[0] === "all";
    const names = all ? [...this.resources.keys()] : resources;
    const unknown = names.filter((name) => !this.resources.has(name));
    if (unknown.length > 0) {
      return { error: ControlError.OK, resources: unknown.map((name) => ({ name, error: ControlError.NOENTRY, message: "no such resource" })) };
    }
    const subscription = this.events.subscribe(all ? null : new Set(names));
    if (!subscription) return { error: ControlError.BUSY, message: `${EVENT_SUBSCRIBERS_MAX} event streams are open already`, resources: [] };
    try {
      const statuses = await Promise.all(names.map((name) => this.status(this.resources.get(name)!)));
      return {
        reply: { error: ControlError.OK, resources: statuses },
        attach: (send, end) => {
          subscription.attach(send, end);
          return () => subscription.close();
        },
      };
    } catch (err) {
      subscription.close();
      throw err;
    }
  }

  /** An event of a resource: its hook runs, and every event stream that follows it gets it.
   * `hook` false: a role change hastd made itself (a failed worker), which, as in FreeBSD, runs
   * no hook; the streams report it, or they would show a role the resource no longer has. */
  private raise(state: ResourceState, event: EventName, args: string[], hook = true): void {
    const name = state.config.name;
    if (hook) this.hooks.run(state.config.exec, event, name, args);
    this.events.publish({ event, resource: name, time: new Date().toISOString(), args });
  }

  private async status(state: ResourceState): Promise<ResourceStatus> {
    const c = state.config;
    const base: ResourceStatus = {
      name: c.name, role: state.role, provname: c.provname, localpath: c.localpath,
      remoteaddr: c.remote_text, ...(c.source ? { sourceaddr: formatAddress(c.source) } : {}),
      replication: c.replication, checksum: c.checksum, compression: c.compression,
      ...(c.verify_rate !== null ? { verify_rate: c.verify_rate } : {}),
      ...(c.sync_rate !== null ? { sync_rate: c.sync_rate } : {}),
      workerpid: state.worker?.running ? state.worker.pid : 0, extentsize: 0, keepdirty: 0, dirty: 0,
      nbd: formatAddress(c.nbd),
      ...(state.split_brain ? { split_brain: true } : {}),
      ...(state.copy_incomplete !== null ? { copy_incomplete: state.copy_incomplete } : {}),
    };
    if (!state.worker?.running) return base;
    const live = await state.worker.status();
    if (!live) return { ...base, error: ControlError.BUSY, message: "worker is not answering" };
    return { ...base, ...live, ...(state.split_brain ? { split_brain: true } : {}) };
  }

  /** `all`: the resources this node is primary of and that have a secondary (others are passed
   * over, without an error, so one periodic `hastctl verify all` serves both nodes). */
  private async verify(state: ResourceState, action: VerifyAction, all: boolean): Promise<ResourceStatus> {
    const reply: ResourceStatus = { name: state.config.name, role: state.role };
    const what = action.op === "stop" ? "verification not stopped" : "verification not started";
    if (state.role !== "primary") {
      const message = `${what}: this node is not primary (verification runs on the primary)`;
      return all ? { ...reply, message } : { ...reply, error: ControlError.INVALID, message };
    }
    if (state.config.remote === null) {
      const message = `${what}: this resource has no secondary (remote none)`;
      return all ? { ...reply, message } : { ...reply, error: ControlError.INVALID, message };
    }
    const refused = state.worker?.running ? await state.worker.verify(action) : "the worker is not running";
    if (refused === undefined) return { ...reply, error: ControlError.BUSY, message: `${what}: the worker is not answering` };
    return refused === null ? reply : { ...reply, error: ControlError.BUSY, message: `${what}: ${refused}` };
  }

  /** null when the role is `role` now; else why not: the new primary worker refused this node's
   * copy (incomplete; the role stays `old`), or it ended at its start (the role is init). Only in
   * the resource's turn (state.turns). */
  private async setRole(state: ResourceState, role: Role, force = false): Promise<RoleFailure | null> {
    const old = state.role;
    if (old === role) return null;
    const name = state.config.name;
    this.log.info(`[${name}] Role changed to ${role}.`);
    state.role = role;
    state.split_brain = false;
    await this.stopWorker(state);
    state.copy_incomplete = null;
    let worker: WorkerHandle | null = null;
    try {
      if (role === "primary") worker = await this.startPrimary(state, force);
    } catch (err) {
      const message = (err as Error).message;
      this.backToInit(state, `Unable to start the primary worker: ${message}.`);
      return { error: ControlError.FAILED, message: `not promoted: the primary worker could not be started (${message}); the role is init` };
    }
    if (worker) {
      worker.awaited = true;
      await Promise.race([worker.ready, Bun.sleep(WORKER_START_WAIT_MS)]);
      worker.awaited = false;
      if (worker.exit?.code === WORKER_EXIT_REFUSED) {
        this.log.error(`[${name}] The primary worker refused this node's copy. Role changed back to ${old}.`);
        state.role = old;
        state.copy_incomplete = true;
        return { error: ControlError.REFUSED, message: "not promoted: this node's copy is incomplete (the log says why and what to do)" };
      }
      // It ended before it served: workerExited put the role back to init and said so.
      if (state.role !== role) {
        return { error: ControlError.FAILED, message: `not promoted: the primary worker ended at its start (the log says why); the role is ${state.role}` };
      }
    }
    this.raise(state, "role", [old, role]);
    return null;
  }

  /** A primary worker, once the main process flushed the component (held-component.ts: its
   * descriptor meets a write-back error a dead worker took); null when hastd stops meanwhile. A
   * failed flush, this one or one no primary worker has acted on yet, goes to the worker, and is
   * kept until one has (marked its copy incomplete, or been forced past it). */
  private async startPrimary(state: ResourceState, force = false, restart = false): Promise<WorkerHandle | null> {
    if (this.stopping) return null;
    const held = this.heldOf(state);
    await held.flush(state.config.localpath);
    const unacted = held.unacted;
    if (unacted) this.log.error(`[${state.config.name}] Flush before the primary worker starts failed (${unacted.error}).`);
    if (this.stopping) return null;
    state.device_left = false; // the worker removes what it finds at its start
    const worker = this.startWorker(state, "primary", { force, restart, start_flush_error: unacted?.error ?? null });
    if (unacted) {
      void worker.ready.then(() => {
        if (worker.exit === null || worker.exit.code === WORKER_EXIT_REFUSED) held.acted(unacted);
      });
    }
    return worker;
  }

  /** Returns the worker; its `ready` settles once it serves (or has exited). `peer`: a secondary's
   * accepted connection (its fd becomes the worker's PEER_FD). */
  private startWorker(
    state: ResourceState, role: "primary" | "secondary",
    opts: { peer?: SecondaryPeer & { fd: number }; force?: boolean; restart?: boolean; start_flush_error?: string | null; clears?: Unacted | null } = {},
  ): WorkerHandle {
    const { peer, force, restart, start_flush_error, clears } = opts;
    let was_incomplete = false;
    const init = {
      resource: state.config, role, node: this.config.node, log: this.opts.log_setup,
      ...(peer ? { peer: { handshake: peer.handshake, protocol_version: peer.protocol_version, cache: peer.cache } } : {}),
      ...(force ? { force } : {}),
      ...(restart ? { restart } : {}),
      ...(start_flush_error ? { start_flush_error } : {}),
    };
    // What the worker said of its link: one that dies without saying the rest (killed) leaves event
    // streams the missing syncintr and disconnect, so that what they follow adds up. Not hooks:
    // FreeBSD's hear only what a worker says.
    const said = { connected: false, syncing: false };
    const worker = WorkerHandle.spawn(init, {
      onEvent: (event: HookEvent, args: string[]) => {
        // A worker being stopped still reports what it saw, but no longer speaks for the resource.
        if (state.worker === worker && event === "split-brain") state.split_brain = true;
        if (state.worker === worker && event === "connect") state.split_brain = false;
        if (event === "connect" || event === "disconnect") said.connected = event === "connect";
        if (event === "syncstart" || event === "syncdone" || event === "syncintr" || event === "disconnect") said.syncing = event === "syncstart";
        this.raise(state, event, args);
      },
      onCopy: (complete: boolean) => {
        if (state.worker === worker && state.copy_incomplete !== !complete) {
          state.copy_incomplete = !complete;
          // Whether this secondary may be promoted: a failover manager following the stream needs it.
          this.raise(state, "copy", [complete ? "complete" : "incomplete"], false);
        }
        if (!complete) was_incomplete = true;
        else if (was_incomplete && clears) this.heldOf(state).acted(clears);
      },
      onExit: (exit) => {
        if (said.syncing) this.raise(state, "syncintr", [], false);
        if (said.connected) this.raise(state, "disconnect", [], false);
        this.workerExited(state, worker, exit);
      },
    }, peer ? [peer.fd] : []);
    state.worker = worker;
    this.log.debug(`[${state.config.name}] ${role} worker started (pid=${worker.pid}).`);
    return worker;
  }

  private async stopWorker(state: ResourceState): Promise<void> {
    if (state.restart) clearTimeout(state.restart);
    state.restart = null;
    const worker = state.worker;
    state.worker = null;
    if (worker && !(await worker.stop())) {
      this.log.error(`[${state.config.name}] Worker process (pid=${worker.pid}) has not exited ${WORKER_KILL_WAIT_MS / 1000} s after SIGKILL ` +
        "(blocked in the kernel, on its disk?); going on without it. It keeps the component locked until it exits.");
      if (worker.role === "primary") state.device_left = true;
    }
    if (state.role !== "primary" || this.stopping) await this.removeDeviceLeft(state);
  }

  /**
   * The primary period is over: a device its last worker left (killed, or crashed and not
   * restarted) goes now, not at the next promotion. Until then it would take I/O nobody serves,
   * and a worker of the next period would find it in its way.
   */
  private async removeDeviceLeft(state: ResourceState): Promise<void> {
    if (!state.device_left) return;
    state.device_left = false;
    const { config } = state;
    const where = deviceWhere(config, (m) => this.log.info(`[${config.name}] ${m}`));
    try {
      await cleanupStaleDevice(where);
    } catch (err) {
      this.log.error(`[${config.name}] Unable to remove the device its primary worker left: ${(err as Error).message}`);
    }
  }

  private workerExited(state: ResourceState, worker: WorkerHandle, exit: WorkerExit): void {
    const name = state.config.name;
    if (exit.code === EX_OK) void this.heldOf(state).absorb();
    const how = exit.signal ? `killed by signal ${exit.signal}` : `exited with status ${exit.code}`;
    if (worker.role === "primary" && exit.code !== EX_OK) state.device_left = true;
    if (state.worker !== worker) {
      this.log.debug(`[${name}] Worker process (pid=${worker.pid}) ${how}.`);
      return;
    }
    state.worker = null;
    if (this.stopping) return;
    if (worker.role === "secondary") {
      this.log.info(`[${name}] Secondary worker (pid=${worker.pid}) ${how}.`);
      return;
    }
    if (exit.code === WORKER_EXIT_REFUSED && (worker.restarted || !worker.awaited)) {
      // Its predecessor left the copy marked incomplete (more extents stale than the metadata
      // lists), or a flush at its start failed: the other node holds what this one lacks. Not
      // started by hastd, it refused after the role change had stopped waiting for it.
      this.backToInit(state, `The ${worker.restarted ? "restarted " : ""}primary worker refused this node's copy (the log says why).`);
      state.copy_incomplete = true;
      return;
    }
    if (exit.code === WORKER_EXIT_REFUSED) return; // setRole reports it and restores the role
    // One that never served is not: its role change reports how it ended.
    const crashed = exit.code === EX_SOFTWARE && worker.served;
    if (crashed) {
      const now = Date.now();
      state.crashes = [...state.crashes.filter((t) => now - t < CRASH_WINDOW_MS), now];
      if (state.crashes.length > CRASH_RESTARTS_MAX) {
        this.backToInit(state, `Worker process (pid=${worker.pid}) ${how} on an internal error, its ${state.crashes.length}th in ${CRASH_WINDOW_MS / 1000} s; not restarted again.`);
        return;
      }
    }
    if (exit.signal || exit.code === WORKER_EXIT_RESTART || crashed) {
      this.log.error(`[${name}] Worker process (pid=${worker.pid}) ${how}${crashed ? " on an internal error (the log says which)" : ""}; restarting in ${WORKER_RESTART_DELAY_MS / 1000} s.`);
      state.restart = setTimeout(() => {
        state.restart = null;
        void state.turns.run(async () => {
          if (state.role !== "primary" || state.worker) return;
          try {
            const restarted = await this.startPrimary(state, false, true);
            if (restarted) restarted.restarted = true;
          } catch (err) {
            // Not left primary with no worker: a later `hastctl role primary` would find nothing to do.
            this.backToInit(state, `Unable to restart the primary worker: ${(err as Error).message}.`);
          }
        });
      }, WORKER_RESTART_DELAY_MS);
      return;
    }
    this.backToInit(state, `Worker process (pid=${worker.pid}) ${how}.`);
  }

  /** A primary with no worker it can run: the role goes back to init, said in the log and the
   * `role` event (hooks, failover managers). */
  private backToInit(state: ResourceState, why: string): void {
    this.log.error(`[${state.config.name}] ${why} Changing resource role back to init.`);
    const old = state.role;
    state.role = "init";
    void state.turns.run(() => this.removeDeviceLeft(state));
    this.raise(state, "role", [old, "init"], false);
  }

  /** SIGHUP (spec 3.8): parse the file again; on any error keep the running configuration. */
  async reload(): Promise<void> {
    const notReloaded = (why: string) => {
      this.log.error(why);
      this.log.error("Configuration not reloaded.");
    };
    let next: Config;
    let control_moved: boolean;
    try {
      next = loadConfig(this.opts.config_path, { node: this.opts.node });
      control_moved = controlPath(next) !== controlPath(this.config);
    } catch (err) {
      return notReloaded((err as Error).message);
    }
    // Spec 3.8 items 1-3: the new control socket first, then the listen addresses; either failing
    // leaves everything as it was. The pidfile's move only warns.
    let control: ControlServer | null = null;
    try {
      if (control_moved) control = await ControlServer.start(controlPath(next), (req) => this.handle(req), this.log);
    } catch (err) {
      return notReloaded(`Unable to listen on control address ${formatAddress(next.control)}: ${(err as Error).message}`);
    }
    try {
      const { opened, closed } = await this.listener.listenOn(next.listen);
      if (opened.length > 0) this.log.info(`Listening on ${opened.join(", ")}.`);
      if (closed.length > 0) this.log.info(`No longer listening on ${closed.join(", ")}.`);
    } catch (err) {
      control?.stop();
      return notReloaded((err as Error).message);
    }
    if (control) {
      this.control.stop();
      this.control = control;
    }
    this.movePidfile(next.pidfile);
    const nextNames = new Set(next.resources.map((r) => r.name));
    for (const [name, state] of this.resources) {
      if (nextNames.has(name)) continue;
      this.log.info(`[${name}] Resource removed from the configuration.`);
      await state.turns.run(() => this.setRole(state, "init"));
      this.resources.delete(name);
    }
    for (const r of next.resources) {
      const state = this.resources.get(r.name);
      if (!state) {
        this.log.info(`[${r.name}] Resource added to the configuration.`);
        this.resources.set(r.name, newState(r));
        continue;
      }
      if (!resourceChanged(state.config, r)) continue;
      // In its turn: the role to restore is the one it has then, and a worker being started has
      // started (it takes a reload only once it serves).
      await state.turns.run(async () => {
        if (resourceNeedsRestart(state.config, r, state.role)) {
          this.log.info(`[${r.name}] Configuration changed, restarting the resource.`);
          const role = state.role;
          await this.setRole(state, "init");
          state.config = r;
          await this.setRole(state, role);
        } else if (state.role === "primary") {
          this.log.info(`[${r.name}] Configuration changed, reloading the primary worker.`);
          state.config = r;
          state.worker?.send({ type: "reload", resource: r });
        } else {
          this.log.info(`[${r.name}] Configuration changed (settings a primary reads); nothing to restart.`);
          state.config = r;
        }
      });
    }
    this.config = next;
    this.log.info("Configuration reloaded successfully.");
  }

  /** A new pidfile is taken and written before the old one goes; a failure only warns. */
  private movePidfile(path: string): void {
    const old = this.pidfile;
    if (!old || !this.opts.pidfile?.follows_config || path === old.path) return;
    try {
      const moved = Pidfile.acquire(path);
      moved.writePid(process.pid);
      old.release();
      this.pidfile = moved;
      this.log.info(`Pidfile moved from ${old.path} to ${path}.`);
    } catch (err) {
      this.log.warn(`${(err as Error).message}; the pidfile stays ${old.path}.`);
    }
  }

  /** SIGTERM/SIGINT: stop every worker (their frontends go with them), then the control socket.
   * A second signal gets the same promise: hastd exits (and its pidfile goes) once the workers did. */
  shutdown(): Promise<void> {
    this.shutting ??= this.stopAll();
    return this.shutting;
  }

  private async stopAll(): Promise<void> {
    this.stopping = true;
    this.log.info("Termination signal received, exiting.");
    this.listener.stop();
    await Promise.all([...this.resources.values()].map((s) => this.stopWorker(s)));
    await Promise.all([...this.held.values()].map((h) => h.close()));
    this.events.endAll("hastd is exiting");
    this.control.stop();
    await this.hooks.settle(2_000);
  }
}

function newState(config: ResourceConfig): ResourceState {
  return { config, role: "init", worker: null, restart: null, crashes: [], split_brain: false, copy_incomplete: null, device_left: false, turns: new Serial() };
}

function controlPath(config: Config): string {
  if (config.control.kind !== "uds") throw new Error(`control address ${formatAddress(config.control)} must be a unix socket`);
  return config.control.path;
}
