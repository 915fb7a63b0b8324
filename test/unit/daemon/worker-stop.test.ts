// How the main process stops a worker: SIGTERM, SIGKILL after a while, and, for a process that
// does not die even then (blocked in the kernel on a disk that does not answer), a bound on the
// wait so that a role change goes on. A stand-in process object: none can ignore SIGKILL.
import { expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { WorkerHandle, type WorkerCallbacks } from "../../../src/daemon/worker-handle.ts";

interface FakeProc {
  kills: string[];
  proc: Subprocess;
}

/** A process that dies on the signals in `dies_on`, and on no other. */
function fakeProc(dies_on: string[]): FakeProc {
  const kills: string[] = [];
  let exit!: () => void;
  const proc = {
    pid: 4242, exitCode: null as number | null, signalCode: null as string | null,
    exited: new Promise<void>((resolve) => (exit = resolve)),
    kill(signal: string) {
      kills.push(signal);
      if (!dies_on.includes(signal)) return;
      proc.signalCode = signal;
      exit();
    },
  };
  return { kills, proc: proc as unknown as Subprocess };
}

const callbacks: WorkerCallbacks = { onEvent() {}, onCopy() {}, onExit() {} };
const handle = (proc: Subprocess) =>
  new (WorkerHandle as unknown as new (role: string, proc: Subprocess, cb: WorkerCallbacks) => WorkerHandle)("primary", proc, callbacks);
const waits = { stop_ms: 50, kill_ms: 100 };

test("a worker that ends on SIGTERM is not killed", async () => {
  const f = fakeProc(["SIGTERM"]);
  expect(await handle(f.proc).stop("SIGTERM", waits)).toBe(true);
  expect(f.kills).toEqual(["SIGTERM"]);
});

test("a worker that ignores SIGTERM is killed", async () => {
  const f = fakeProc(["SIGKILL"]);
  expect(await handle(f.proc).stop("SIGTERM", waits)).toBe(true);
  expect(f.kills).toEqual(["SIGTERM", "SIGKILL"]);
});

test("a worker that does not die even on SIGKILL is given up on, after a bounded wait", async () => {
  const f = fakeProc([]);
  const started = performance.now();
  expect(await handle(f.proc).stop("SIGTERM", waits)).toBe(false);
  expect(f.kills).toEqual(["SIGTERM", "SIGKILL"]);
  expect(performance.now() - started).toBeGreaterThanOrEqual(waits.stop_ms + waits.kill_ms - 5);
});
