// hastctl as a process against a scripted hastd on a unix socket: its output reaches a slow pipe
// whole, a failed write is an error, a reader that leaves ends it quietly, a reply it cannot print
// is a one-line error, and the smaller rules of its operands and exit statuses (a review found each).
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { UnixSocketListener } from "bun";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ControlReply, ControlRequest, ResourceStatus } from "../../../src/wire/control.ts";

const HASTCTL = join(import.meta.dir, "../../../src/cli/hastctl.ts");
const dir = mkdtempSync(join(tmpdir(), "hast-ctl-output-"));
const socket = join(dir, "control.sock");
const conf = join(dir, "hast.conf");
let server: UnixSocketListener<{ got: string }>;
/** What the scripted hastd answers next, and the requests it got. */
let answer: (request: ControlRequest) => string = () => "";
const requests: ControlRequest[] = [];

beforeAll(() => {
  writeFileSync(conf, `control uds://${socket}\nresource r0 {\n local /dev/null\n on alpha {\n  remote none\n }\n}\n`);
  server = Bun.listen<{ got: string }>({
    unix: socket,
    socket: {
      open: (s) => void (s.data = { got: "" }),
      data(s, chunk) {
        s.data.got += chunk.toString();
        const nl = s.data.got.indexOf("\n");
        if (nl < 0) return;
        const request = JSON.parse(s.data.got.slice(0, nl)) as ControlRequest;
        requests.push(request);
        s.write(answer(request));
        s.end();
      },
    },
  });
});
afterAll(() => {
  server.stop(true);
  rmSync(dir, { recursive: true, force: true });
});

function resource(name: string, extra: Partial<ResourceStatus> = {}): ResourceStatus {
  return {
    name, role: "primary", provname: name, localpath: `/dev/disk-of-${name}`, remoteaddr: "tcp://10.0.0.2:8457", replication: "memsync",
    status: "complete", workerpid: 1234, extentsize: 2097152, keepdirty: 64, dirty: 0,
    statistics: { reads: 1, writes: 2, deletes: 0, flushes: 3, activemap_updates: 4, direct_bytes: 0, sync_unchanged_bytes: 0, local_errors: { read: 0, write: 0, delete: 0, flush: 0 } },
    ...extra,
  };
}
const reply = (resources: ResourceStatus[]): string => `${JSON.stringify({ error: 0, resources } satisfies ControlReply)}\n`;

/** hastctl with `args`; stdout read only after `read_after_ms` (a slow reader), or to `stdout` as given. */
async function hastctl(args: string[], opts: { read_after_ms?: number; stdout?: "pipe" | number } = {}) {
  const proc = Bun.spawn([process.execPath, HASTCTL, ...args, "-c", conf], {
    env: { ...process.env, HASTD_NODE: "alpha" }, stdout: opts.stdout ?? "pipe", stderr: "pipe",
  });
  if (opts.read_after_ms) await Bun.sleep(opts.read_after_ms);
  const stdout = proc.stdout instanceof ReadableStream ? await new Response(proc.stdout).text() : "";
  const stderr = await new Response(proc.stderr).text();
  return { code: await proc.exited, stdout, stderr };
}

test("a reply much larger than a pipe's buffer goes through a pipe whole (it was cut at 64 KiB, exit 0)", async () => {
  answer = () => reply(Array.from({ length: 400 }, (_, i) => resource(`resource-with-a-long-name-${i}`)));
  // A pipe made by the shell (Bun.spawn's own stdout is a socket with a larger buffer).
  const proc = Bun.spawn(["sh", "-c", `"${process.execPath}" "${HASTCTL}" status --json -c "${conf}" | cat`], {
    env: { ...process.env, HASTD_NODE: "alpha" }, stdout: "pipe", stderr: "pipe",
  });
  const stdout = await new Response(proc.stdout).text();
  expect(await proc.exited).toBe(0);
  expect(stdout.length).toBeGreaterThan(4 * 65536);
  expect(JSON.parse(stdout)).toHaveLength(400);
});

test("output that cannot be written exits 74; a reader that leaves ends hastctl quietly", async () => {
  answer = () => reply([resource("r0")]);
  const fd = openSync("/dev/full", "w");
  try {
    const full = await hastctl(["metrics"], { stdout: fd });
    expect(full.code).toBe(74);
    expect(full.stderr).toContain("hastctl: cannot write to standard output:");
  } finally {
    closeSync(fd);
  }
  answer = () => reply(Array.from({ length: 400 }, (_, i) => resource(`r${i}`)));
  const proc = Bun.spawn([process.execPath, HASTCTL, "list", "-c", conf], { env: { ...process.env, HASTD_NODE: "alpha" }, stdout: "pipe", stderr: "pipe" });
  const reader = proc.stdout.getReader();
  await reader.read(); // the first bytes, then the reader goes (as `| head -c 10` does)
  await reader.cancel();
  expect(await proc.exited).toBe(0);
  expect(await new Response(proc.stderr).text()).toBe("");
});

test("a reply it cannot print is a one-line error, exit 69 (it was a stack trace, exit 70)", async () => {
  for (const bad of [`5\n`, `{"error":0,"resources":null}\n`, `${JSON.stringify({ error: 0, resources: [{ name: "r0", statistics: {} }] })}\n`]) {
    answer = () => bad;
    const r = await hastctl(["list"]);
    expect(r.code).toBe(69);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("malformed reply from hastd at uds://");
  }
});

test("metrics exits 0 when a worker does not answer (hast_up 0 is in the file), and asks once for a name given twice", async () => {
  answer = (request) => reply(request.resources.map((name) => ({ ...resource(name), error: 5, message: "worker is not answering", statistics: undefined })));
  requests.length = 0;
  const r = await hastctl(["metrics", "r0", "r0"]);
  expect(r.code).toBe(0);
  expect(r.stderr).toContain("r0: worker is not answering");
  expect(requests.map((q) => q.resources)).toEqual([["r0"]]);
  expect(r.stdout.split("\n").filter((l) => l.startsWith("hast_up{"))).toEqual(['hast_up{resource="r0"} 0']);
  answer = () => reply([{ name: "nosuch", error: 1, message: "no such resource" }]);
  expect((await hastctl(["metrics", "nosuch"])).code).toBe(1);
});

test("status keeps a space between a long status and the role; list ends an error line with its number", async () => {
  answer = () => reply([resource("r0", { split_brain: true, role: "secondary" }), { name: "r1", error: 1, message: "no such resource" }]);
  const status = await hastctl(["status"]);
  expect(status.stdout.split("\n")[1]).toStartWith("r0\tsplit-brain secondary");
  const list = await hastctl(["list"]);
  expect(list.stdout).toContain("r1:\n  error: 1\n  message: no such resource\n");
});

test("an empty resource name or -c without a file is a usage error (64)", async () => {
  const empty = await hastctl(["status", ""]);
  expect(empty.code).toBe(64);
  expect(empty.stderr).toContain('invalid resource name "": 1 to 255 characters');
  const proc = Bun.spawnSync([process.execPath, HASTCTL, "list", "-c"], { env: { ...process.env, HASTD_NODE: "alpha" } });
  expect(proc.exitCode).toBe(64);
  expect(proc.stderr.toString()).toContain("option requires an argument -- c");
});
