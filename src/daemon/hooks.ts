// Event hooks (spec 10): `exec <path> <event> <resource> [args]`, run by the main process,
// never awaited by I/O. Unlike FreeBSD hastd we do not let a hook hang forever: it is warned
// about, then killed after HOOK_KILL_AFTER_MS.
import { basename } from "node:path";
import type { Subprocess } from "bun";
import type { Logger } from "./log.ts";

export const HOOK_WARN_AFTER_MS = 30_000;
export const HOOK_KILL_AFTER_MS = 60_000;
export const HOOKS_RUNNING_MAX = 64;

interface RunningHook {
  proc: Subprocess;
  cmd: string;
  started_ms: number;
  warn: ReturnType<typeof setTimeout>;
  kill: ReturnType<typeof setTimeout>;
}

export class HookRunner {
  private running = new Set<RunningHook>();

  constructor(
    private log: Logger,
    private stdio: "inherit" | "ignore",
  ) {}

  run(exec: string, event: string, resource: string, args: string[] = []): void {
    if (!exec) return;
    const argv = [exec, event, resource, ...args];
    const cmd = argv.join(" ");
    if (this.running.size >= HOOKS_RUNNING_MAX) {
      this.log.error(`Hook not started, ${HOOKS_RUNNING_MAX} hooks already running (cmd=[${cmd}]).`);
      return;
    }
    let proc: Subprocess;
    try {
      proc = Bun.spawn(argv, { argv0: basename(exec), stdio: ["ignore", this.stdio, this.stdio] });
    } catch (err) {
      this.log.error(`Unable to execute hook (cmd=[${cmd}]): ${(err as Error).message}`);
      return;
    }
    const hook: RunningHook = {
      proc, cmd, started_ms: Date.now(),
      warn: setTimeout(() => this.log.warn(`Hook is running for ${Math.round((Date.now() - hook.started_ms) / 1000)} seconds (pid=${proc.pid}, cmd=[${cmd}]).`), HOOK_WARN_AFTER_MS),
      kill: setTimeout(() => {
        this.log.error(`Hook killed after ${HOOK_KILL_AFTER_MS / 1000} seconds (pid=${proc.pid}, cmd=[${cmd}]).`);
        proc.kill("SIGKILL");
      }, HOOK_KILL_AFTER_MS),
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
    });
  }

  /** Waits (bounded) for running hooks, e.g. before exit so a role hook is not orphaned mid-way. */
  async settle(timeout_ms: number): Promise<void> {
    const all = Promise.all([...this.running].map((h) => h.proc.exited));
    await Promise.race([all, Bun.sleep(timeout_ms)]);
  }
}
