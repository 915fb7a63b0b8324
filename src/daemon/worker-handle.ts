// The main process's handle on one worker process: spawn with the ps title FreeBSD's
// scripts look for ("hastd: <name> (<role>)"), query it, stop it, learn how it ended.
import type { Subprocess } from "bun";
import type { FromWorker, HookEvent, ToWorker, VerifyAction, WorkerStatus } from "./ipc.ts";

export type WorkerInit = Omit<Extract<ToWorker, { type: "init" }>, "type">;
import { selfArgv } from "../io/self.ts";

export const WORKER_STATUS_TIMEOUT_MS = 5_000;
export const WORKER_STOP_TIMEOUT_MS = 30_000;
/** How long a worker may take to die after SIGKILL: one blocked in the kernel on a disk that does
 * not answer dies only when that call returns, if ever, and a role change must not wait forever. */
export const WORKER_KILL_WAIT_MS = 30_000;
/** How long `hastctl role primary` waits for the worker to serve before it replies anyway. */
export const WORKER_START_WAIT_MS = 60_000;
/**
 * The machine size JavaScriptCore sizes a worker's heap for (`BUN_JSC_forceRAMSize`, Bun's
 * equivalent of node's --max-old-space-size). It grows the heap in proportion to the RAM it sees,
 * so on a large host a worker under 4 KiB writes let garbage pile up to 35 MiB of heap before a
 * collection; sized for 256 MiB it collects sooner and reuses warm pages: peak RSS 96-112 -> 86-89
 * MiB under async 4 KiB QD32, no slower (docs/performance.md, seventh round).
 */
export const WORKER_HEAP_RAM_BYTES = 256 * 1024 * 1024;
/**
 * How long mimalloc (Bun's allocator) keeps freed memory before it hands it back to the kernel
 * (`MIMALLOC_PURGE_DELAY`, ms; its default is 10). Memory returned that soon faults its pages in
 * again when it is reused, at 20-35 us a fault on a virtual machine. A quarter of a second keeps
 * the working set warm and still returns what a quieter worker freed (docs/performance.md,
 * eighth round): memsync 4 KiB writes QD1 ~4.3k -> ~5.7k IOPS, QD32 23.5k -> 25.8k, next to the
 * NBD connection freeing its socket reads at once. 1000 ms or never (-1) held more memory.
 */
export const WORKER_PURGE_DELAY_MS = 250;

/**
 * Helper threads a worker waits for its disk on (`UV_THREADPOOL_SIZE`, which Bun reads for its
 * thread pool; its default is the number of cores). Reads the page cache does not hold and flushes
 * run there, so this is how many of them overlap: nbdkit's default is 16 threads too. 4 KiB random
 * reads of a cold file at QD32, here: 2 threads ~23k IOPS, 4 ~35k, 16 ~60-69k (fio's io_uring ~75k).
 */
export const WORKER_DISK_THREADS = 16;

/** Runtime settings a worker starts with unless the operator's environment sets them. */
const WORKER_ENV_DEFAULTS: Record<string, string> = {
  BUN_JSC_forceRAMSize: String(WORKER_HEAP_RAM_BYTES),
  MIMALLOC_PURGE_DELAY: String(WORKER_PURGE_DELAY_MS),
  UV_THREADPOOL_SIZE: String(WORKER_DISK_THREADS),
};

export interface WorkerExit {
  code: number | null;
  signal: string | null;
}

export interface WorkerCallbacks {
  onEvent(event: HookEvent, args: string[]): void;
  onCopy(complete: boolean): void;
  onExit(exit: WorkerExit): void;
}

export class WorkerHandle {
  private nextId = 1;
  /** Queries sent to the worker, by id, until it answers (the answer's message) or exits (null). */
  private pending = new Map<number, (answer: FromWorker | null) => void>();
  private exitPromise: Promise<WorkerExit>;
  private exited: WorkerExit | null = null;
  private readyResolve!: () => void;
  readonly ready: Promise<void>;
  /** Started by hastd after its predecessor died, not by a role change (nobody waits on its start). */
  restarted = false;
  /** A role change waits for its start: a refusal meanwhile is reported there (main.ts setRole). */
  awaited = false;
  /** It said it serves (a "ready" message). */
  served = false;

  private constructor(
    readonly role: "primary" | "secondary",
    private proc: Subprocess,
    callbacks: WorkerCallbacks,
  ) {
    this.ready = new Promise((resolve) => (this.readyResolve = resolve));
    this.exitPromise = proc.exited.then(() => {
      const exit: WorkerExit = { code: proc.signalCode ? null : proc.exitCode, signal: proc.signalCode ? String(proc.signalCode) : null };
      this.exited = exit;
      for (const resolve of this.pending.values()) resolve(null);
      this.pending.clear();
      this.readyResolve();
      callbacks.onExit(exit);
      return exit;
    });
  }

  /** extraFds become the child's fd 3, 4, ... (the accepted peer connection of a secondary). */
  static spawn(init: WorkerInit, callbacks: WorkerCallbacks, extraFds: number[] = []): WorkerHandle {
    let handle: WorkerHandle | undefined;
    const proc = Bun.spawn([...selfArgv(workerRuntimeFlags()), "--worker"], {
      argv0: `hastd: ${init.resource.name} (${init.role})`,
      stdio: ["ignore", "inherit", "inherit", ...extraFds],
      serialization: "advanced",
      env: workerEnv(process.env),
      ipc(message: FromWorker) {
        handle?.onMessage(message, callbacks);
      },
    });
    handle = new WorkerHandle(init.role, proc, callbacks);
    handle.send({ type: "init", ...init });
    return handle;
  }

  get pid(): number {
    return this.proc.pid;
  }

  /** How the process ended; null while it runs. */
  get exit(): WorkerExit | null {
    return this.exited;
  }

  get running(): boolean {
    return this.exited === null;
  }

  send(message: ToWorker): void {
    if (this.running) this.proc.send(message);
  }

  /** Live status, or null when the worker does not answer in time (it is then reported as sick). */
  async status(): Promise<WorkerStatus | null> {
    const answer = await this.ask((id) => ({ type: "status", id }));
    return answer?.type === "status" ? answer.status : null;
  }

  /** Starts, stops or resumes an online verification: why the worker would not, null once it did,
   * or undefined when it does not answer in time. */
  async verify(action: VerifyAction): Promise<string | null | undefined> {
    const answer = await this.ask((id) => ({ type: "verify", id, action }));
    return answer?.type === "verify" ? answer.refused : undefined;
  }

  private async ask(message: (id: number) => ToWorker): Promise<FromWorker | null> {
    if (!this.running) return null;
    const id = this.nextId++;
    return await new Promise<FromWorker | null>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(null);
      }, WORKER_STATUS_TIMEOUT_MS);
      this.pending.set(id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      this.send(message(id));
    });
  }

  /** SIGTERM and wait for the exit (SIGKILL after `stop_ms`), like HAST's synchronous role change.
   * False when it has still not exited `kill_ms` after the SIGKILL. */
  async stop(signal: NodeJS.Signals = "SIGTERM", waits = { stop_ms: WORKER_STOP_TIMEOUT_MS, kill_ms: WORKER_KILL_WAIT_MS }): Promise<boolean> {
    if (!this.running) return true;
    this.proc.kill(signal);
    if (await this.exitedWithin(waits.stop_ms)) return true;
    this.proc.kill("SIGKILL");
    return await this.exitedWithin(waits.kill_ms);
  }

  private async exitedWithin(ms: number): Promise<boolean> {
    let timer: Timer | undefined;
    const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.exitPromise.then(() => true as const), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  private onMessage(message: FromWorker, callbacks: WorkerCallbacks): void {
    switch (message.type) {
      case "ready":
        this.served = true;
        this.readyResolve();
        return;
      case "status":
      case "verify": {
        const resolve = this.pending.get(message.id);
        this.pending.delete(message.id);
        resolve?.(message);
        return;
      }
      case "event":
        callbacks.onEvent(message.event, message.args ?? []);
        return;
      case "copy":
        callbacks.onCopy(message.complete);
        return;
    }
  }
}

/** The worker's environment: the daemon's, with WORKER_ENV_DEFAULTS where the operator set nothing. */
export function workerEnv(env: Record<string, string | undefined>): Record<string, string | undefined> {
  const out = { ...env };
  for (const [name, value] of Object.entries(WORKER_ENV_DEFAULTS)) out[name] ??= value;
  return out;
}

/**
 * HASTD_PROFILE_DIR (development, `bun src/cli/hastd.ts` only): workers run under Bun's CPU
 * profiler and leave a markdown profile there when they exit (docs/performance.md).
 */
function workerRuntimeFlags(): string[] {
  const dir = process.env.HASTD_PROFILE_DIR;
  return dir ? ["--cpu-prof-md", `--cpu-prof-dir=${dir}`] : [];
}
