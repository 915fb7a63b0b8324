// Every process the benchmark starts goes through here, so one finally-block can stop them all
// by pid: SIGTERM, a bounded wait, then SIGKILL for the process and any descendant it left.
import { readdirSync, readFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { waitFor } from "../../test/wait-for.ts";

export { waitFor };

const STOP_WAIT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 300_000;

export interface Started {
  name: string;
  proc: Subprocess;
}

export class Processes {
  private readonly live: Started[] = [];

  /** Starts a long-running process; its stderr goes to `log_path` so a failure can be explained. */
  start(name: string, argv: string[], opts: { env?: Record<string, string>; log_path: string }): Started {
    const proc = Bun.spawn(argv, {
      env: { ...process.env, ...opts.env }, stdin: "ignore", stdout: Bun.file(`${opts.log_path}.out`), stderr: Bun.file(opts.log_path),
    });
    const started = { name, proc };
    this.live.push(started);
    return started;
  }

  /** SIGTERM, wait up to STOP_WAIT_MS, then SIGKILL the process and whatever it spawned. */
  async stop(started: Started): Promise<void> {
    const at = this.live.indexOf(started);
    if (at >= 0) this.live.splice(at, 1);
    const children = descendants(started.proc.pid);
    if (started.proc.exitCode === null && started.proc.signalCode === null) started.proc.kill("SIGTERM");
    const stopped = await Promise.race([started.proc.exited.then(() => true), Bun.sleep(STOP_WAIT_MS).then(() => false)]);
    if (!stopped) {
      console.error(`bench: ${started.name} (pid ${started.proc.pid}) ignored SIGTERM for ${STOP_WAIT_MS} ms; killing it`);
      started.proc.kill("SIGKILL");
      await started.proc.exited;
    }
    for (const pid of children) killIfAlive(pid);
  }

  async stopAll(): Promise<void> {
    for (const started of [...this.live].reverse()) await this.stop(started);
  }
}

/** Runs argv to completion (killed after timeout_ms); throws with its stderr on a non-zero exit. */
export async function runOk(argv: string[], timeout_ms = COMMAND_TIMEOUT_MS, env?: Record<string, string>): Promise<string> {
  const proc = Bun.spawn(argv, { env: { ...process.env, ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeout_ms);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${argv.join(" ")} failed (exit ${code ?? proc.signalCode}): ${(stderr.trim() || stdout.trim()).slice(0, 2000)}`);
  return stdout;
}


function killIfAlive(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return 0;
  }
}

/** Live descendants of pid (hastd workers, ...), read from /proc. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const ppid = parentOf(pid);
    children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}
