// HookRunner: a hook that outlives its limit is killed with what it started (its process group),
// and hooks beyond the running bound wait their turn; a `role` hook is never dropped.
import { afterAll, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HookRunner } from "../../../src/daemon/hooks.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { waitFor } from "../../wait-for.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-hooks-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function runner(limits: ConstructorParameters<typeof HookRunner>[2]) {
  const lines: string[] = [];
  const hooks = new HookRunner(new Logger({ write: (_level, line) => void lines.push(line) }, 2), "ignore", limits);
  return { hooks, lines };
}

test("a hook past its limit is killed with the processes it started (review: its children ran on)", async () => {
  const child_pid = join(dir, "child.pid");
  const hook = script("hangs", `sleep 60 & echo $! > ${child_pid}; sleep 60`);
  const { hooks, lines } = runner({ kill_after_ms: 300 });
  hooks.run(hook, "connect", "r0");
  await waitFor("the hook's child", () => existsSync(child_pid) && readFileSync(child_pid, "utf8").trim() !== "");
  const child = Number(readFileSync(child_pid, "utf8").trim());
  await waitFor("the kill", () => lines.some((l) => l.includes("Hook killed after 0.3 seconds")), 5_000);
  await waitFor("the hook's child to be gone", () => !alive(child), 5_000);
});

test("beyond the running bound hooks wait their turn; a role hook always waits, others beyond the waiting bound are dropped", async () => {
  const log = join(dir, "ran.log");
  const gate = join(dir, "gate");
  const hook = script("records", `while [ ! -e ${gate} ]; do sleep 0.05; done; echo "$1 $2" >> ${log}`);
  const { hooks, lines } = runner({ running_max: 1, waiting_max: 1 });
  hooks.run(hook, "connect", "r0"); // runs, held at the gate
  hooks.run(hook, "disconnect", "r0"); // waits
  hooks.run(hook, "syncstart", "r0"); // dropped: the waiting bound is reached
  hooks.run(hook, "role", "r0", ["secondary", "primary"]); // waits anyway
  expect(lines.filter((l) => l.includes("Hook not started"))).toHaveLength(1);
  expect(lines.find((l) => l.includes("Hook not started"))).toContain("syncstart r0");
  writeFileSync(gate, "");
  await waitFor("every hook run", () => existsSync(log) && readFileSync(log, "utf8").trim().split("\n").length === 3, 10_000);
  expect(readFileSync(log, "utf8").trim().split("\n")).toEqual(["connect r0", "disconnect r0", "role r0"]);
  await hooks.settle(5_000);
});
