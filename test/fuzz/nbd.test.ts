// Fuzz the NBD codec (pure parsers: >= 100,000 seeded inputs) and a real server connection
// (a few thousand mutated byte streams), then check the server still serves a good client.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";
import { MemoryBackend } from "../../src/gate/memory-backend.ts";
import { NbdServer } from "../../src/gate/nbd-server.ts";
import { ReceiveBuffer } from "../../src/wire/receive-buffer.ts";
import { NBD_CMD, NBD_CMD_FLAG, NBD_ERR, NBD_OPT, type ParseResult } from "../../src/wire/nbd.ts";
import { decodeOption, parseClientFlags, parseOptionHeader } from "../../src/wire/nbd-handshake.ts";
import {
  checkRequest, encodeRequestHeader, parseReplyHeader, parseRequestHeader, type ExportLimits, type NbdRequest,
} from "../../src/wire/nbd-transmission.ts";
import { RawNbdClient, goData, optionRequest } from "../../src/io/nbd-client.ts";
import { prng } from "./prng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 0x6e6264);
const PARSER_CASES = 120_000;
const STREAM_CASES = 3_000;
const LIMITS: ExportLimits = { size_bytes: 1 << 20, block_bytes: 512, payload_bytes_max: 1 << 25, read_only: false };
const OPTION_KINDS = new Set(["export_name", "info", "go", "list", "abort", "structured_reply", "unsupported", "invalid"]);
const ERROR_NAMES = new Set(Object.keys(NBD_ERR));

type Rand = () => number;
const int = (rand: Rand, n: number) => Math.floor(rand() * n);

function randomBytes(rand: Rand, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = int(rand, 256);
  return out;
}

/** Valid messages that mutations start from. */
function seedMessages(rand: Rand): Uint8Array[] {
  const request = (command: number, flags = 0): NbdRequest => ({
    command, flags, cookie: BigInt(int(rand, 2 ** 32)), offset: int(rand, 2560) * 512, length: (1 + int(rand, 16)) * 512,
  });
  return [
    new Uint8Array([0, 0, 0, 3]),
    optionRequest(NBD_OPT.GO, goData("r0")),
    optionRequest(NBD_OPT.INFO, goData("")),
    optionRequest(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("r0")),
    optionRequest(NBD_OPT.LIST, new Uint8Array(0)),
    optionRequest(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(0)),
    encodeRequestHeader(request(NBD_CMD.READ)),
    encodeRequestHeader(request(NBD_CMD.WRITE, NBD_CMD_FLAG.FUA)),
    encodeRequestHeader(request(NBD_CMD.WRITE_ZEROES, NBD_CMD_FLAG.NO_HOLE)),
    encodeRequestHeader(request(NBD_CMD.TRIM)),
    encodeRequestHeader({ ...request(NBD_CMD.FLUSH), offset: 0, length: 0 }),
  ];
}

function mutate(rand: Rand, input: Uint8Array): Uint8Array {
  const bytes = [...input];
  const edits = 1 + int(rand, 4);
  for (let e = 0; e < edits; e++) {
    const at = int(rand, bytes.length + 1);
    switch (int(rand, 6)) {
      case 0: if (bytes.length) bytes[at % bytes.length] = int(rand, 256); break;
      case 1: if (bytes.length) bytes[at % bytes.length]! ^= 1 << int(rand, 8); break;
      case 2: bytes.splice(at, 0, ...randomBytes(rand, 1 + int(rand, 8))); break;
      case 3: bytes.splice(at, 1 + int(rand, 8)); break;
      case 4: bytes.length = Math.min(bytes.length, at); break;
      case 5: for (let i = 0; i < 4 && at + i < bytes.length; i++) bytes[at + i] = [0x00, 0xff, 0x7f, 0x80][int(rand, 4)]!; break;
    }
  }
  return new Uint8Array(bytes);
}

function expectParseResult<T>(result: ParseResult<T>, input_bytes: number): void {
  if (result.kind === "ok") expect(result.bytes).toBeLessThanOrEqual(input_bytes);
  else if (result.kind === "need") expect(result.bytes).toBeGreaterThan(input_bytes);
  else expect(result.reason.length).toBeGreaterThan(0);
}

/** The properties every request check must keep, whatever the input. */
function expectSoundCheck(request: NbdRequest): void {
  const check = checkRequest(request, LIMITS);
  if (check.kind === "reject") {
    expect(ERROR_NAMES.has(check.error)).toBe(true);
    return;
  }
  if (check.kind === "disconnect") return expect(request.command).toBe(NBD_CMD.DISC);
  if (request.command === NBD_CMD.FLUSH) return expect(request.offset + request.length).toBe(0);
  expect(request.length).toBeGreaterThan(0);
  expect(request.offset + request.length).toBeLessThanOrEqual(LIMITS.size_bytes);
  expect(request.offset % 512 + request.length % 512).toBe(0);
}

const dir = mkdtempSync(join(tmpdir(), "hast-nbd-fuzz-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe(`nbd codec fuzz (seed ${SEED})`, () => {
  test(`${PARSER_CASES} random and mutated inputs: results or clean errors, never throws`, () => {
    const rand = prng(SEED);
    const seeds = seedMessages(rand);
    const counts = { ok: 0, need: 0, error: 0 };
    for (let i = 0; i < PARSER_CASES; i++) {
      const input = rand() < 0.3 ? randomBytes(rand, int(rand, 64)) : mutate(rand, seeds[int(rand, seeds.length)]!);
      try {
        expectParseResult(parseClientFlags(input), input.byteLength);
        const option = parseOptionHeader(input);
        expectParseResult(option, input.byteLength);
        if (option.kind === "ok") {
          const data = input.subarray(16, 16 + Math.min(option.value.data_bytes, input.byteLength - 16));
          expect(OPTION_KINDS.has(decodeOption(option.value.option, data).kind)).toBe(true);
        }
        expect(OPTION_KINDS.has(decodeOption(1 + int(rand, 11), input).kind)).toBe(true);
        const request = parseRequestHeader(input);
        expectParseResult(request, input.byteLength);
        counts[request.kind]++;
        if (request.kind === "ok") expectSoundCheck(request.value);
        expectParseResult(parseReplyHeader(input), input.byteLength);
      } catch (err) {
        throw new Error(`case ${i} (seed ${SEED}) input ${Buffer.from(input).toString("hex")}: ${(err as Error).message}`);
      }
    }
    // The mutations reach every outcome, so the loop above exercised more than the error path.
    expect(counts.ok).toBeGreaterThan(1000);
    expect(counts.need).toBeGreaterThan(1000);
    expect(counts.error).toBeGreaterThan(1000);
  }, 120_000);

  test("request streams split at random boundaries parse to the same requests", () => {
    const rand = prng(SEED + 1);
    for (let i = 0; i < 2_000; i++) {
      const requests = Array.from({ length: 1 + int(rand, 8) }, (): NbdRequest => ({
        command: int(rand, 8), flags: int(rand, 0x40), cookie: BigInt(int(rand, 2 ** 32)), offset: int(rand, 2 ** 40), length: int(rand, 2 ** 32),
      }));
      const stream = new Uint8Array(requests.length * 28);
      requests.forEach((r, k) => stream.set(encodeRequestHeader(r), k * 28));
      const rx = new ReceiveBuffer();
      const parsed: NbdRequest[] = [];
      for (let at = 0; at < stream.byteLength;) {
        const chunk = 1 + int(rand, 40);
        rx.push(stream.subarray(at, at + chunk));
        at += chunk;
        while (rx.bytes >= 28) {
          const result = parseRequestHeader(rx.take(28));
          if (result.kind !== "ok") throw new Error(`stream ${i}: ${result.kind}`);
          parsed.push(result.value);
        }
      }
      expect(parsed).toEqual(requests);
    }
  }, 120_000);
});

describe(`nbd server fuzz (seed ${SEED})`, () => {
  test(`${STREAM_CASES} mutated byte streams through real connections; the server keeps serving`, async () => {
    const sock = join(dir, "fuzz.sock");
    const logs: string[] = [];
    const backend = new MemoryBackend({ size_bytes: 1 << 20 });
    const server = await NbdServer.start({ listen: { unix: sock }, export_name: "r0", backend, log: (level, msg) => void logs.push(`${level} ${msg}`) });
    try {
      const rand = prng(SEED + 2);
      const seeds = seedMessages(rand);
      const session = () => {
        // client flags, maybe INFO/LIST/STRUCTURED_REPLY, then GO or EXPORT_NAME, then requests
        const parts = [seeds[0]!];
        if (rand() < 0.5) parts.push(seeds[[2, 4, 5][int(rand, 3)]!]!);
        parts.push(seeds[rand() < 0.7 ? 1 : 3]!);
        for (let k = int(rand, 6); k > 0; k--) {
          const header = seeds[6 + int(rand, 5)]!;
          parts.push(header);
          if (header[7] === NBD_CMD.WRITE) parts.push(randomBytes(rand, new DataView(header.buffer).getUint32(24)));
        }
        if (rand() < 0.15) return randomBytes(rand, int(rand, 200));
        const victim = int(rand, parts.length);
        parts[victim] = mutate(rand, parts[victim]!); // one broken message among valid ones
        const joined = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
        parts.reduce((at, p) => (joined.set(p, at), at + p.byteLength), 0);
        return joined;
      };
      const BATCH = 25;
      for (let done = 0; done < STREAM_CASES; done += BATCH) {
        await Promise.all(Array.from({ length: BATCH }, () => feed(sock, session(), rand)));
        if (done % 500 === 0) await expectGoodClient(sock, backend);
      }
      await expectGoodClient(sock, backend);
      const deadline = Date.now() + 5_000;
      while (server.connections() > 0 && Date.now() < deadline) await Bun.sleep(20);
      expect(server.connections()).toBe(0);
      expect(logs.filter((l) => l.startsWith("error") || l.includes("socket error"))).toEqual([]);
      expect(logs.some((l) => l.includes("closing connection"))).toBe(true);
      // The streams got past the handshake and ran requests, not just the greeting.
      const ran = backend.counts.read + backend.counts.write + backend.counts.trim + backend.counts.writeZeroes + backend.counts.flush;
      console.log(`server fuzz: ${logs.filter((l) => l.includes("transmission started")).length} sessions reached transmission, ${ran} backend calls`);
      expect(ran).toBeGreaterThan(STREAM_CASES / 10);
    } finally {
      await server.stop();
    }
  }, 120_000);
});

/** Sends `bytes` in random chunks, then half-closes and waits (bounded) for the server to close. */
async function feed(unix: string, bytes: Uint8Array, rand: Rand): Promise<void> {
  let closed!: () => void;
  const done = new Promise<void>((resolve) => (closed = resolve));
  const socket: Socket<undefined> = await Bun.connect({ unix, socket: { data() {}, close: () => closed(), error: () => closed() } });
  for (let at = 0; at < bytes.byteLength;) {
    const chunk = bytes.subarray(at, at + 1 + int(rand, 64));
    at += chunk.byteLength;
    if (socket.write(chunk) < chunk.byteLength) break; // the server closed or the buffer is full: enough
  }
  socket.end();
  await Promise.race([done, Bun.sleep(2_000)]);
}

async function expectGoodClient(unix: string, backend: MemoryBackend): Promise<void> {
  const c = await RawNbdClient.connect({ unix });
  try {
    await c.handshake({ export_name: "r0", structured: true });
    const data = new Uint8Array(4096).fill(0xa5);
    c.send({ command: NBD_CMD.WRITE, offset: 8192 }, data);
    expect((await c.reply()).error).toBe(0);
    c.send({ command: NBD_CMD.READ, offset: 8192, length: 4096 });
    const reply = await c.reply();
    expect(reply.data).toEqual(data);
    expect(backend.bytes[8192]).toBe(0xa5);
  } finally {
    c.close();
  }
}
