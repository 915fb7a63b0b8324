// The control socket against clients that send too much: requests sent ahead of their replies are
// not read while one is handled, nor while a client leaves its replies untaken, and lines by the
// thousand never hold the event loop.
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlServer } from "../../../src/daemon/control-server.ts";
import { Logger } from "../../../src/daemon/log.ts";
import type { ControlReply, ControlRequest } from "../../../src/wire/control.ts";
import { waitFor } from "../../wait-for.ts";

let dir: string;
let server: ControlServer | null = null;
let client: Socket | null = null;

afterEach(() => {
  client?.destroy();
  client = null;
  server?.stop();
  server = null;
  rmSync(dir, { recursive: true, force: true });
});

async function start(handler: (r: ControlRequest) => Promise<ControlReply>): Promise<{ path: string; log: string[] }> {
  dir = mkdtempSync(join(tmpdir(), "hast-control-"));
  const path = join(dir, "control.sock");
  const log: string[] = [];
  server = await ControlServer.start(path, handler, new Logger({ write: (_level, line) => void log.push(line) }, 2));
  return { path, log };
}

const STATUS = `${JSON.stringify({ cmd: "status", resources: ["all"] })}\n`;

/** The longest gap between ticks of a 5 ms timer while `run` goes on. */
async function maxLag(run: () => Promise<void>): Promise<number> {
  let last = performance.now();
  let worst = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last);
    last = now;
  }, 5);
  try {
    await run();
  } finally {
    clearInterval(timer);
  }
  return worst;
}

test("requests are handled one at a time, in order, each after the reply before it", async () => {
  const seen: number[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const { path } = await start(async () => {
    seen.push(seen.length);
    if (seen.length === 1) await held;
    return { error: 0, resources: [] };
  });
  const replies: string[] = [];
  client = connect(path);
  client.on("data", (d) => replies.push(...d.toString().split("\n").filter((l) => l !== "")));
  client.write(STATUS + STATUS + STATUS);
  await Bun.sleep(200);
  expect(seen).toEqual([0]); // the two behind it wait
  release();
  await waitFor("three replies", () => replies.length === 3, 5_000);
  expect(seen).toEqual([0, 1, 2]);
});

test("a client that does not take its replies is not read from until it does", async () => {
  const { path, log } = await start(async () => ({ error: 0, resources: [] }));
  client = connect(path);
  client.pause(); // takes no reply
  let replies = 0;
  client.on("data", (d) => (replies += d.toString().split("\n").length - 1));
  const lines = 100_000;
  const refused = () => log.filter((l) => l.includes("rejected request")).length;
  const lag = await maxLag(async () => {
    client!.write("x\n".repeat(lines));
    await Bun.sleep(500);
  });
  expect(lag).toBeLessThan(200);
  const while_stuck = refused();
  expect(while_stuck).toBeLessThan(lines / 2); // it stopped at the replies the socket would hold
  await Bun.sleep(200);
  expect(refused()).toBe(while_stuck);
  client.resume();
  await waitFor("every reply", () => replies >= lines, 20_000);
  // Each refused line is logged, as a warning only the first time.
  expect(log.filter((l) => l.startsWith("warn: control: rejected request"))).toHaveLength(1);
}, 30_000);

test("lines by the thousand, replies taken: the event loop keeps its turns", async () => {
  const { path } = await start(async () => ({ error: 0, resources: [] }));
  let replies = 0;
  client = connect(path);
  client.on("data", (d) => (replies += d.toString().split("\n").length - 1));
  const lines = 200_000;
  const lag = await maxLag(async () => {
    client!.write("x\n".repeat(lines));
    await waitFor("every reply", () => replies >= lines, 20_000);
  });
  expect(lag).toBeLessThan(200);
}, 30_000);
