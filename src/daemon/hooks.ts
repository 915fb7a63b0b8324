// Event hooks (spec 10): `exec <path> <event> <resource> [args]`, run by the main process,
// never awaited by I/O. Unlike FreeBSD hastd we do not let a hook hang forever: it is warned
// about, then killed after HOOK_KILL_AFTER_MS, with every process it started (a hook runs in a
// process group of its own). At most HOOKS_RUNNING_MAX run at once; the rest wait their turn.
import { basename } from "node:path";
import type { Subprocess } from "bun";
import type { Logger } from "./log.ts";

export const HOOK_WARN_AFTER_MS = 30_000;
export const HOOK_KILL_AFTER_MS = 60_000;
export const HOOKS_RUNNING_MAX = 64;
/** Hooks waiting for a free slot. A `role` hook always waits (a failover script acts on it);
 * beyond this many others, one is not run, and that is logged. */
export const HOOKS_WAITING_MAX = 256;

export interface HookLimits {
  warn_after_ms: number;
  kill_after_ms: number;
  running_max: number;
  waiting_max: number;
}

const LIMITS: HookLimits = {
  warn_after_ms: HOOK_WARN_AFTER_MS, kill_after_ms: HOOK_KILL_AFTER_MS, running_max: HOOKS_RUNNING_MAX, waiting_max: HOOKS_WAITING_MAX,
};

interface RunningHook {
  proc: Subprocess;
  cmd: string;
  started_ms: number;
  warn: ReturnType<typeof setTimeout>;
  kill: ReturnType<typeof setTimeout>;
}

export class HookRunner {
  private running = new Set<RunningHook>();
  private waiting: string[][] = [];

  private limits: HookLimits;

  constructor(
    private log: Logger,
    private stdio: "inherit" | "ignore",
    limits: Partial<HookLimits> = {},
  ) {
    this.limits = { ...LIMITS, ...limits };
  }

  run(exec: string, event: string, resource: string, args: string[] = []): void {
    if (!exec) return;
    const argv = [exec, event, resource, ...args];
    if (this.running.size < this.limits.running_max) return this.start(argv);
    if (event !== "role" && this.waiting.length >= this.limits.waiting_max) {
      this.log.error(`Hook not started, ${this.running.size} hooks running and ${this.waiting.length} waiting (cmd=[${argv.join(" ")}]).`);
      return;
    }
    this.waiting.push(argv);
  }

  private start(argv: string[]): void {
    const cmd = argv.join(" ");
    let proc: Subprocess;
    try {
      proc = Bun.spawn(argv, { argv0: basename(argv[0]!), stdio: ["ignore", this.stdio, this.stdio], detached: true });
    } catch (err) {
      this.log.error(`Unable to execute hook (cmd=[${cmd}]): ${(err as Error).message}`);
      return;
    }
    const hook: RunningHook = {
      proc, cmd, started_ms: Date.now(),
      warn: setTimeout(() => this.log.warn(`Hook is running for ${Math.round((Date.now() - hook.started_ms) / 1000)} seconds (pid=${proc.pid}, cmd=[${cmd}]).`), this.limits.warn_after_ms),
      kill: setTimeout(() => {
        this.log.error(`Hook killed after ${this.limits.kill_after_ms / 1000} seconds (pid=${proc.pid}, cmd=[${cmd}]).`);
        killGroup(proc);
      }, this.limits.kill_after_ms),
    };
    this.running.add(hook);
    this.log.debug(`Hook started (pid=${proc.pid}, cmd=[${cmd}]).`);
    void proc.exited.then((code) => {
      clearTimeout(hook.warn);
      clearTimeout(hook.kill);
      this.running.delete(hook);
      if (proc.signalCode) this.log.error(`Hook was killed by signal ${proc.signalCode} (pid=${proc.pid}, cmd=[${cmd}]).`);
      else if (code !== 0) this.log.error(`Hook exited ungracefully (pid=${proc.pid}, exitcode=${code}, cmd=[${cmd}]).`);
      else this.log.debug(`Hook exited gracefully (pid=${proc.pid}, cmd=[${cmd}]).`);
      const next = this.waiting.shift();
      if (next) this.start(next);
    });
  }

  /** Waits (bounded) for running hooks, e.g. before exit so a role hook is not orphaned mid-way. */
  async settle(timeout_ms: number): Promise<void> {
    const all = Promise.all([...this.running].map((h) => h.proc.exited));
    await Promise.race([all, Bun.sleep(timeout_ms)]);
  }
}

/** The hook and what it started (its process group: spawned detached, it leads one). */
function killGroup(proc: Subprocess): void {
  try {
    process.kill(-proc.pid, "SIGKILL");
  } catch {
    proc.kill("SIGKILL"); // the group is gone already: the hook alone, if it still runs
  }
}
