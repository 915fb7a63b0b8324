// hastctl's control client: how long it waits, and what it says when hastd does not answer.
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { UnixSocketListener } from "bun";
import { CONTROL_TIMEOUT_MS, controlRequest, ROLE_TIMEOUT_MS } from "../../../src/ctl/client.ts";
import { WORKER_KILL_WAIT_MS, WORKER_START_WAIT_MS, WORKER_STOP_TIMEOUT_MS } from "../../../src/daemon/worker-handle.ts";
import { HELD_FLUSH_WAIT_MS } from "../../../src/io/held-component.ts";

let dir: string | null = null;
let listener: UnixSocketListener<undefined> | null = null;

afterEach(() => {
  listener?.stop(true);
  listener = null;
  if (dir !== null) rmSync(dir, { recursive: true, force: true });
  dir = null;
});

/** A control socket that takes requests and never answers. */
function silentHastd(): string {
  const made = mkdtempSync(join(tmpdir(), "hast-ctl-client-"));
  dir = made;
  const path = join(made, "control.sock");
  listener = Bun.listen({ unix: path, socket: { data() {} } });
  return path;
}

test("a role change is waited for longer than hastd may take for one (stop, kill, flush, start)", () => {
  expect(ROLE_TIMEOUT_MS).toBeGreaterThan(WORKER_STOP_TIMEOUT_MS + WORKER_KILL_WAIT_MS + HELD_FLUSH_WAIT_MS + WORKER_START_WAIT_MS);
  expect(CONTROL_TIMEOUT_MS).toBe(20_000); // everything else: FreeBSD hastctl's 20 s
});

test("a role request hastd does not answer in time says the change may still take effect", async () => {
  const path = silentHastd();
  const address = { kind: "uds", path } as const;
  const role = controlRequest(address, { cmd: "role", role: "primary", resources: ["r0"] }, 200);
  await expect(role).rejects.toThrow("within 0.2 s (the role change may still take effect: hastctl status tells)");
  const status = controlRequest(address, { cmd: "status", resources: ["all"] }, 200);
  await expect(status).rejects.toThrow(/within 0\.2 s$/);
});
