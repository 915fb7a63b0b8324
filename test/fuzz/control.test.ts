// Fuzz the control protocol (docs/control.md): parseControlRequest gets >= 100,000 seeded random
// and mutated lines and must always return a result (a well-formed request or a one-line error),
// never throw, in bounded time; a live ControlServer gets a few hundred garbage lines and an
// oversized one, answers each, and still answers a good request afterwards; a client that sends
// many requests before it reads any reply (so the server's writes come up short) gets every reply,
// in order. hastctl's checks of event stream lines (parseStreamLine) and of replies
// (parseControlReply) get the same treatment. Seed:
// FUZZ_SEED.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlServer } from "../../src/daemon/control-server.ts";
import { Logger, type LogSink } from "../../src/daemon/log.ts";
import {
  CONTROL_LINE_MAX_BYTES, CONTROL_RESOURCES_MAX, ControlError, EVENT_NAMES, parseControlReply, parseControlRequest, parseStreamLine,
  type ControlReply, type ControlRequest, type ParseResult,
} from "../../src/wire/control.ts";
import { prng } from "./prng.ts";
import { formatList, formatStatus } from "../../src/ctl/format.ts";
import { formatPrometheus } from "../../src/ctl/prometheus.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 0xc0_17_01);
const INPUTS = 110_000;
const LIVE_LINES = 300;
const REPLY_WAIT_MS = 5_000;
/** Pipelined requests and resource names in each: ~10 MB of replies, far beyond a socket buffer. */
const PIPELINED = 300;
const PIPELINED_NAMES = 150;

const VALID: string[] = [
  `{"cmd":"status","resources":["r0"]}`,
  `{"cmd":"status","resources":["r0","shared","x"]}`,
  `{"cmd":"role","role":"primary","resources":["r0"]}`,
  `{"cmd":"role","role":"secondary","resources":["a","b"]}`,
  `{"cmd":"role","role":"init","resources":["all"]}`,
  `{"cmd":"role","role":"primary","resources":["r0"],"force":true}`,
  `{"cmd":"verify","resources":["r0"]}`,
  `{"cmd":"verify","resources":["all"],"stop":true}`,
  `{"cmd":"verify","resources":["r0"],"resume":true}`,
  `{"cmd":"verify","resources":["r0"],"from":1048576}`,
  `{"cmd":"events","resources":["all"]}`,
  `{"cmd":"events","resources":["r0","r1"]}`,
];
const TOKENS = ["{", "}", "[", "]", ",", ":", "\"", "\\", "null", "true", "false", "0", "-1", "1e999", "\"cmd\"", "\"role\"",
  "\"resources\"", "\"status\"", "\"events\"", "\"resume\"", "\"from\"", "1.5", "9007199254740992", "\"stop\"", "\"primary\"", "\"__proto__\"", "\"constructor\"", "\"\\u0000\"", "\"é\"", "\"𝄞\"", " ", "\t"];

function generator(random: () => number, valid: readonly string[] = VALID) {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  const randomText = (n: number) => {
    let s = "";
    for (let i = 0; i < n; i++) s += String.fromCharCode(int(4) === 0 ? int(0x3000) : 32 + int(95));
    return s;
  };
  const mutate = (line: string): string => {
    let s = line;
    for (let m = 1 + int(4); m > 0; m--) {
      const at = int(s.length + 1);
      switch (int(5)) {
        case 0: s = s.slice(0, at) + s.slice(at + 1 + int(4)); break;
        case 1: s = s.slice(0, at) + pick(TOKENS) + s.slice(at); break;
        case 2: s = s.slice(0, at) + randomText(1 + int(3)) + s.slice(at + 1); break;
        case 3: s = s.slice(0, at) + s.slice(int(s.length)); break;
        default: s = s.slice(0, at) + s.slice(at).repeat(1 + int(3));
      }
    }
    return s;
  };
  const structured = (): string => {
    const value = (depth: number): unknown => {
      switch (int(depth > 3 ? 5 : 8)) {
        case 0: return null;
        case 1: return int(2) === 0;
        case 2: return pick([0, -1, 1.5, 2 ** 53, Number.MAX_VALUE]);
        case 3: return randomText(int(300));
        case 4: return pick(["status", "role", "verify", "events", "primary", "secondary", "init", ""]);
        case 5: return Array.from({ length: int(6) }, () => value(depth + 1));
        case 6: return Object.fromEntries(Array.from({ length: int(4) }, () => [pick(["cmd", "role", "resources", "x", "__proto__"]), value(depth + 1)]));
        default: return Array.from({ length: int(200) === 0 ? CONTROL_RESOURCES_MAX + int(3) - 1 : int(5) }, () => randomText(1 + int(4)));
      }
    };
    const obj: Record<string, unknown> = {};
    if (int(5) !== 0) obj.cmd = int(3) === 0 ? value(1) : pick(["status", "role", "verify", "events"]);
    if (int(4) === 0) obj.stop = int(2) === 0 ? value(1) : true;
    if (int(3) !== 0) obj.role = int(3) === 0 ? value(1) : pick(["init", "primary", "secondary"]);
    if (int(4) === 0) obj.force = int(3) === 0 ? value(1) : int(2) === 0;
    if (int(6) !== 0) obj.resources = int(3) === 0 ? value(1) : [randomText(1 + int(300))];
    return JSON.stringify(obj);
  };
  return (i: number): string => {
    switch (i % 6) {
      case 0: return randomText(int(200));
      case 1: return mutate(pick(valid));
      case 2: return structured();
      case 3: return mutate(structured());
      case 4: return int(100) === 0 ? "[".repeat(int(20_000)) + "]".repeat(int(20_000)) : "[".repeat(int(200)) + "]".repeat(int(200));
      default: return int(500) === 0 ? `{"cmd":"status","resources":["${"x".repeat(CONTROL_LINE_MAX_BYTES)}"]}` : pick(valid);
    }
  };
}

/** A parse result is a request a handler can act on, or a one-line error. */
function checkResult(line: string, result: ReturnType<typeof parseControlRequest>): void {
  if (!result.ok) {
    if (typeof result.error !== "string" || result.error.length === 0 || result.error.length > 200 || result.error.includes("\n")) {
      throw new Error(`bad error for ${JSON.stringify(line.slice(0, 80))}: ${JSON.stringify(result.error)}`);
    }
    return;
  }
  const r: ControlRequest = result.value;
  const wellFormed = (r.cmd === "status" || r.cmd === "events" || (r.cmd === "role" && ["init", "primary", "secondary"].includes(r.role) && [undefined, true].includes(r.force)) ||
    (r.cmd === "verify" && [undefined, true].includes(r.stop) && [undefined, true].includes(r.resume) && !(r.stop && r.resume) &&
      (r.from === undefined || (Number.isSafeInteger(r.from) && r.from >= 0 && !r.stop && !r.resume)))) &&
    Array.isArray(r.resources) && r.resources.length > 0 && r.resources.length <= CONTROL_RESOURCES_MAX &&
    r.resources.every((n) => typeof n === "string" && n.length > 0 && n.length <= 255);
  if (!wellFormed) throw new Error(`malformed request accepted from ${JSON.stringify(line.slice(0, 80))}: ${JSON.stringify(r).slice(0, 200)}`);
}

test(`parseControlRequest survives ${INPUTS} seeded inputs (seed ${SEED})`, () => {
  const next = generator(prng(SEED));
  const counts = { ok: 0, rejected: 0 };
  let slowest_ms = 0;
  const started_ms = performance.now();
  for (let i = 0; i < INPUTS; i++) {
    const line = next(i);
    const t0 = performance.now();
    let result: ReturnType<typeof parseControlRequest>;
    try {
      result = parseControlRequest(line);
    } catch (err) {
      throw new Error(`input ${i} (seed ${SEED}) threw: ${(err as Error).message}: ${JSON.stringify(line.slice(0, 120))}`);
    }
    slowest_ms = Math.max(slowest_ms, performance.now() - t0);
    checkResult(line, result);
    counts[result.ok ? "ok" : "rejected"]++;
  }
  const total_ms = performance.now() - started_ms;
  console.log(`control fuzz seed ${SEED}: ${JSON.stringify(counts)}, ${total_ms.toFixed(0)} ms, slowest input ${slowest_ms.toFixed(1)} ms`);
  expect(counts.ok).toBeGreaterThan(INPUTS / 10);
  expect(counts.rejected).toBeGreaterThan(INPUTS / 2);
  expect(slowest_ms).toBeLessThan(500);
}, 120_000);

const REPLY_LINES: string[] = [
  `{"error":0,"resources":[{"name":"r0","role":"primary","status":"complete","statistics":{"reads":1,"writes":2,"deletes":0,"flushes":0,` +
    `"activemap_updates":0,"direct_bytes":0,"sync_unchanged_bytes":0,"local_errors":{"read":0,"write":0,"delete":0,"flush":0}}}]}`,
  `{"error":0,"resources":[{"name":"r1","error":1,"message":"no such resource"}]}`,
  `{"error":0,"resources":[{"name":"r0","role":"primary","sync":{"done":1,"total":2,"rate":3,"eta":null},"last_sync":{"bytes":1,"seconds":2,"finished":"x"},` +
    `"verify":{"done":1,"total":2,"rate":3,"eta":4,"differ_bytes":0,"differ_chunks":0,"skipped_bytes":0,"failed_bytes":0,"from_offset":0,"compare":"sha256"},` +
    `"last_verify":{"seconds":1,"same_bytes":1,"differ_bytes":0,"differ_chunks":0,"skipped_bytes":0,"failed_bytes":0,"from_offset":0,"resume_offset":0,` +
    `"total_bytes":1,"ended":"complete","finished":"x","compare":"data"}}]}`,
  `{"error":2,"message":"bad request","resources":[]}`,
];

/** Runs `parse` over seeded mutations of `valid` lines: it returns, never throws; a refusal is one
 * short line, and `accepted` checks (throws on) whatever it takes. */
function fuzzLines<T>(what: string, salt: number, valid: string[], parse: (line: string) => ParseResult<T>, accepted: (value: T, line: string) => void): void {
  const next = generator(prng(SEED ^ salt), valid);
  const counts = { ok: 0, rejected: 0 };
  for (let i = 0; i < INPUTS / 5; i++) {
    const line = next(i);
    let result: ParseResult<T>;
    try {
      result = parse(line);
    } catch (err) {
      throw new Error(`input ${i} (seed ${SEED}) threw: ${(err as Error).message}: ${JSON.stringify(line.slice(0, 120))}`);
    }
    if (!result.ok) {
      if (result.error.length === 0 || result.error.length > 200 || result.error.includes("\n")) throw new Error(`bad error for ${JSON.stringify(line.slice(0, 80))}: ${JSON.stringify(result.error)}`);
      counts.rejected++;
      continue;
    }
    accepted(result.value, line);
    counts.ok++;
  }
  console.log(`${what} fuzz seed ${SEED}: ${JSON.stringify(counts)}`);
  expect(counts.ok).toBeGreaterThan(INPUTS / 5 / 20);
  expect(counts.rejected).toBeGreaterThan(INPUTS / 5 / 2);
}

test(`parseControlReply survives ${INPUTS / 5} seeded inputs (seed ${SEED}); what it accepts can be printed`, () => {
  fuzzLines("reply", 0x7e91, REPLY_LINES, parseControlReply, (reply) => {
    // Whatever is accepted, hastctl's printers take without throwing.
    formatStatus(reply.resources);
    formatList(reply.resources);
    formatPrometheus(reply.resources);
  });
}, 120_000);

const STREAM_LINES: string[] = [
  `{"event":"role","resource":"r0","time":"2026-11-28T15:40:09.001Z","args":["primary","secondary"]}`,
  `{"event":"split-brain","resource":"shared","time":"2026-11-28T15:40:09.001Z","args":[]}`,
  `{"end":"hastd is exiting"}`,
];

test(`parseStreamLine survives ${INPUTS / 5} seeded inputs (seed ${SEED})`, () => {
  fuzzLines("stream line", 0x5eed, STREAM_LINES, parseStreamLine, (v, line) => {
    const wellFormed = "end" in v ? typeof v.end === "string" && Object.keys(v).length === 1
      : EVENT_NAMES.includes(v.event) && typeof v.resource === "string" && v.resource.length > 0 && !Number.isNaN(Date.parse(v.time)) &&
        Array.isArray(v.args) && v.args.every((a) => typeof a === "string");
    if (!wellFormed) throw new Error(`malformed stream line accepted from ${JSON.stringify(line.slice(0, 80))}: ${JSON.stringify(v).slice(0, 200)}`);
  });
}, 120_000);

// ---- a live server ----

let dir = "";
let server: ControlServer | null = null;
const quiet: LogSink = { write() {} };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "hast-control-fuzz-"));
  const handler = async (request: ControlRequest): Promise<ControlReply> =>
    ({ error: ControlError.OK, resources: request.resources.map((name) => ({ name, role: "init" as const })) });
  server = await ControlServer.start(join(dir, "control.sock"), handler, new Logger(quiet, 0));
});

afterAll(() => {
  server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** One client connection that reads reply lines as they come (or, `paused`, once told to). */
async function connect(options: { paused?: boolean } = {}) {
  const replies: ControlReply[] = [];
  const decoder = new TextDecoder();
  let buffer = "";
  let closed = false;
  let wake: () => void = () => {};
  // Bun writes what the socket buffer takes and says how much; the rest goes out on drain.
  let unsent = new Uint8Array(0);
  const push = (s: { write(b: Uint8Array): number }) => {
    if (unsent.length > 0) unsent = unsent.subarray(Math.max(0, s.write(unsent)));
  };
  const socket = await Bun.connect({
    unix: server!.path,
    socket: {
      drain(s) {
        push(s);
      },
      data(_s, chunk) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
          replies.push(JSON.parse(buffer.slice(0, nl)) as ControlReply);
          buffer = buffer.slice(nl + 1);
        }
        wake();
      },
      close() {
        closed = true;
        wake();
      },
    },
  });
  if (options.paused) socket.pause();
  /** Waits (bounded) until `want` replies in total arrived or the server closed. */
  const wait = async (want: number) => {
    const deadline_ms = Date.now() + REPLY_WAIT_MS;
    while (replies.length < want && !closed && Date.now() < deadline_ms) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  };
  return {
    replies,
    get closed() {
      return closed;
    },
    /** Queues `payload`: what the socket does not take now goes out as it drains. */
    write(payload: string): void {
      unsent = new TextEncoder().encode(payload);
      push(socket);
    },
    get unsent_bytes() {
      return unsent.length;
    },
    /** Sends `payload` and waits (bounded) until `want` replies in total arrived or the server closed. */
    async send(payload: string, want: number): Promise<void> {
      this.write(payload);
      await wait(want);
    },
    /** Starts reading replies and waits (bounded) until `want` arrived. */
    async read(want: number): Promise<void> {
      socket.resume();
      await wait(want);
    },
    end: () => socket.end(),
  };
}

test(`a live ControlServer answers ${LIVE_LINES} garbage lines and an oversized one, then a good request`, async () => {
  const random = prng(SEED ^ 0x5a5a);
  const next = generator(random);
  const lines: string[] = [];
  for (let i = 0; lines.length < LIVE_LINES; i++) {
    const line = next(i).replaceAll("\n", " ").replaceAll("\r", " ");
    if (line.length > 0 && line.length < CONTROL_LINE_MAX_BYTES && line.trim() !== "") lines.push(line);
  }
  const client = await connect();
  try {
    await client.send(lines.map((line) => `${line}\n`).join(""), lines.length);
    expect(client.replies.length).toBe(lines.length);
    for (let i = 0; i < lines.length; i++) {
      const parsed = parseControlRequest(lines[i]!.trim());
      expect(client.replies[i]?.error).toBe(parsed.ok ? ControlError.OK : ControlError.INVALID);
    }
    expect(client.closed).toBe(false);
  } finally {
    client.end();
  }
  const big = await connect();
  try {
    await big.send("x".repeat(CONTROL_LINE_MAX_BYTES + 10), 1);
    expect(big.replies[0]?.error).toBe(ControlError.INVALID);
  } finally {
    big.end();
  }
  const good = await connect();
  try {
    await good.send(`{"cmd":"status","resources":["r0"]}\n`, 1);
    expect(good.replies).toEqual([{ error: ControlError.OK, resources: [{ name: "r0", role: "init" }] }]);
  } finally {
    good.end();
  }
}, 60_000);

test(`a client that sends ${PIPELINED} requests before reading gets every reply, in order`, async () => {
  const names = (i: number) => Array.from({ length: PIPELINED_NAMES }, (_, j) => `r${i}-${j}-`.padEnd(200, "x"));
  const payload = Array.from({ length: PIPELINED }, (_, i) => `{"cmd":"status","resources":${JSON.stringify(names(i))}}\n`).join("");
  expect(payload.length / PIPELINED).toBeLessThan(CONTROL_LINE_MAX_BYTES);
  const client = await connect({ paused: true });
  try {
    client.write(payload);
    // Not reading: the server's replies fill the socket, its writes come up short, it stops
    // reading, and the rest of the requests wait in our send buffer.
    await Bun.sleep(300);
    expect(client.replies.length).toBe(0);
    expect(client.unsent_bytes).toBeGreaterThan(0);
    await client.read(PIPELINED);
    expect(client.replies.length).toBe(PIPELINED);
    for (let i = 0; i < PIPELINED; i++) {
      const reply = client.replies[i]!;
      expect(reply.error).toBe(ControlError.OK);
      expect(reply.resources.map((r) => r.name)).toEqual(names(i));
    }
    expect(client.closed).toBe(false);
  } finally {
    client.end();
  }
}, 60_000);

test("verify's stop and resume are booleans that exclude each other; from is a byte offset that excludes both", () => {
  const parse = (line: string) => parseControlRequest(line);
  expect(parse(`{"cmd":"verify","resources":["r0"],"resume":true}`)).toEqual({ ok: true, value: { cmd: "verify", resources: ["r0"], resume: true } });
  expect(parse(`{"cmd":"verify","resources":["r0"],"resume":false,"stop":false}`)).toEqual({ ok: true, value: { cmd: "verify", resources: ["r0"] } });
  expect(parse(`{"cmd":"verify","resources":["r0"],"resume":1}`)).toEqual({ ok: false, error: "'resume' must be true or false" });
  expect(parse(`{"cmd":"verify","resources":["r0"],"stop":true,"resume":true}`)).toEqual({ ok: false, error: "'stop' and 'resume' exclude each other" });
  expect(parse(`{"cmd":"verify","resources":["r0"],"from":0}`)).toEqual({ ok: true, value: { cmd: "verify", resources: ["r0"], from: 0 } });
  expect(parse(`{"cmd":"verify","resources":["r0"],"from":9007199254740991}`)).toEqual({ ok: true, value: { cmd: "verify", resources: ["r0"], from: 9007199254740991 } });
  for (const bad of ["-1", "1.5", "9007199254740992", "\"1M\"", "null", "1e999"]) {
    expect(parse(`{"cmd":"verify","resources":["r0"],"from":${bad}}`)).toEqual({ ok: false, error: "'from' must be a byte offset (an integer, 0 or more)" });
  }
  for (const other of ["stop", "resume"]) {
    expect(parse(`{"cmd":"verify","resources":["r0"],"from":0,"${other}":true}`)).toEqual({ ok: false, error: "'from' excludes 'stop' and 'resume'" });
  }
});
