// Fuzz the peer FrameDecoder: random bytes, mutated valid streams, and mutated frames whose
// checksums are fixed up so the deeper parsers are reached. Every input must yield frames or an
// error value: no exception, no endless loop, buffered bytes bounded by the input. Each decoded
// frame must survive a re-encode/decode unchanged. Seed: FUZZ_SEED (default below).
import { expect, test } from "bun:test";
import { crc32c } from "../../src/core/crc32c.ts";
import { bunPeerPrimitives as prims } from "../../src/io/peer-primitives.ts";
import { FRAME_MAGIC, FrameType, HEADER_BYTES } from "../../src/wire/peer/constants.ts";
import { FrameDecoder } from "../../src/wire/peer/decoder.ts";
import { FrameEncoder, frameBytes } from "../../src/wire/peer/frame.ts";
import type { ChecksumKind, CompressionKind, Frame } from "../../src/wire/peer/types.ts";
import { prng } from "./prng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_4a57);
const INPUTS = 120_000;
const CONTROL_TYPES = new Set<number>([FrameType.HELLO, FrameType.CHALLENGE, FrameType.AUTH, FrameType.HANDSHAKE, FrameType.HANDSHAKE_REPLY, FrameType.ERROR]);

test(`peer FrameDecoder survives ${INPUTS} seeded hostile inputs (seed ${SEED})`, () => {
  const random = prng(SEED);
  const int = (n: number) => Math.floor(random() * n);
  const corpus = validFrames(int);
  const stats = { frames: 0, errors: 0, incomplete: 0 };
  for (let i = 0; i < INPUTS; i++) {
    let input: Uint8Array;
    switch (i % 4) {
      case 0:
        input = randomBytes(int, int(2) === 0 ? 64 : 400, int(2) === 0);
        break;
      case 1:
        input = mutate(int, stream(int, corpus));
        break;
      default:
        input = mutateAndFix(int, corpus[int(corpus.length)]!);
    }
    const outcome = feed(input, int);
    stats[outcome] += 1;
  }
  console.log(`peer fuzz seed ${SEED}: ${JSON.stringify(stats)}`);
  expect(stats.frames).toBeGreaterThan(1000);
  expect(stats.errors).toBeGreaterThan(INPUTS / 2);
}, 60_000);

/** Feeds input in random chunks, draining after each; returns how the input ended. */
function feed(input: Uint8Array, int: (n: number) => number): "frames" | "errors" | "incomplete" {
  const decoder = new FrameDecoder(prims);
  let frames = 0;
  for (let at = 0; at < input.length; ) {
    const size = 1 + int(int(4) === 0 ? 8 : 300);
    decoder.push(input.slice(at, at + size));
    at += size;
    // Each "frame" result consumes at least one header, so this bound is never reached legitimately.
    for (let step = 0; ; step++) {
      if (step > input.length / HEADER_BYTES + 2) throw new Error(`decoder loops on input ${hex(input)}`);
      const result = decoder.next();
      if (result.kind === "need-more") break;
      if (result.kind === "error") {
        if (decoder.buffered_bytes !== 0 || result.reason.includes("\n") || result.reason.length === 0) throw new Error(`bad error value ${result.reason}`);
        return "errors";
      }
      frames += 1;
      checkReencodes(result.frame);
    }
    if (decoder.buffered_bytes > input.length) throw new Error("decoder buffers more than it was given");
  }
  return frames > 0 ? "frames" : "incomplete";
}

function checkReencodes(frame: Frame): void {
  const again = new FrameDecoder(prims);
  again.push(frameBytes(new FrameEncoder(prims, { checksum: "crc32", compression: "zstd" }).encode(frame)));
  const result = again.next();
  if (result.kind !== "frame") throw new Error(`re-encoded frame does not decode: ${JSON.stringify(result)}`);
  expect(logical(result.frame)).toEqual(logical(frame));
}

/** Zeroes sent as they are and zeroes sent as a hole are the same write. */
function logical(frame: Frame): Frame {
  if (frame.kind !== "write") return frame;
  const { hole, ...rest } = frame;
  return { ...rest, data: hole ? new Uint8Array(frame.length) : frame.data };
}

function randomBytes(int: (n: number) => number, max_bytes: number, with_magic: boolean): Uint8Array {
  const out = new Uint8Array(int(max_bytes));
  for (let i = 0; i < out.length; i++) out[i] = int(256);
  if (with_magic && out.length >= HEADER_BYTES) {
    const view = new DataView(out.buffer);
    view.setUint32(0, FRAME_MAGIC, true);
    view.setUint8(4, 1);
    view.setUint8(5, [1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 32][int(13)]!);
    for (const field of [8, 16, 24]) if (int(2) === 0) view.setUint32(field + 4, 0, true);
    if (int(2) === 0) view.setUint32(32, int(out.length - HEADER_BYTES + 1), true);
    view.setUint16(36, int(3) === 0 ? int(10) : 0, true);
    view.setUint16(38, 0, true);
    view.setUint32(HEADER_BYTES - 4, crc32c(out.subarray(0, HEADER_BYTES - 4)), true);
  }
  return out;
}

function stream(int: (n: number) => number, corpus: Uint8Array[]): Uint8Array {
  const parts = Array.from({ length: 1 + int(4) }, () => corpus[int(corpus.length)]!);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function mutate(int: (n: number) => number, input: Uint8Array): Uint8Array {
  let bytes = input.slice();
  const count = int(4);
  for (let m = 0; m < count && bytes.length > 0; m++) {
    const at = int(bytes.length);
    switch (int(5)) {
      case 0:
        bytes[at]! ^= 1 << int(8);
        break;
      case 1:
        bytes[at] = [0, 0xff, 0x7f, 0x80, int(256)][int(5)]!;
        break;
      case 2:
        bytes = bytes.slice(0, at);
        break;
      case 3:
        bytes = new Uint8Array([...bytes.subarray(0, at), int(256), ...bytes.subarray(at)]);
        break;
      default:
        bytes = new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
    }
  }
  return bytes;
}

/** Changes bytes of one frame, then repairs the header CRC (and a control body's CRC). */
function mutateAndFix(int: (n: number) => number, frame: Uint8Array): Uint8Array {
  const bytes = frame.slice();
  const count = 1 + int(3);
  for (let m = 0; m < count; m++) {
    const at = int(bytes.length);
    if (at >= HEADER_BYTES - 4 && at < HEADER_BYTES) continue;
    bytes[at] = int(3) === 0 ? bytes[at]! ^ (1 << int(8)) : int(256);
  }
  const view = new DataView(bytes.buffer);
  if (CONTROL_TYPES.has(bytes[5]!) && bytes.length >= HEADER_BYTES + 4) {
    const body = bytes.subarray(HEADER_BYTES, bytes.length - 4);
    view.setUint32(bytes.length - 4, crc32c(body), true);
  }
  view.setUint32(HEADER_BYTES - 4, crc32c(bytes.subarray(0, HEADER_BYTES - 4)), true);
  return bytes;
}

function validFrames(int: (n: number) => number): Uint8Array[] {
  const nonce = () => Uint8Array.from({ length: 32 }, () => int(256));
  const small = (zero: boolean, min_bytes = 1) => Uint8Array.from({ length: min_bytes + int(2000) }, (_, i) => (zero ? 0 : i % 7 === 0 ? int(256) : 65));
  const frames: Frame[] = [
    { kind: "hello", version_min: 1, version_max: 2, client_nonce: nonce(), resource: "shared", node: "nodé-a" },
    { kind: "challenge", version: 1, server_nonce: nonce(), auth: { state: "proof", proof: nonce() } },
    { kind: "challenge", version: 1, server_nonce: nonce(), auth: { state: "no-secret" } },
    { kind: "auth", auth: { state: "proof", proof: nonce() } },
    { kind: "auth", auth: { state: "withheld" } },
    { kind: "handshake", resuid: 77n, localcnt: 5n, remotecnt: 4n, virgin: false, datasize_bytes: 1 << 30, extentsize_bytes: 1 << 20, replication: "async" },
    { kind: "handshake-reply", datasize_bytes: 1 << 30, extentsize_bytes: 1 << 20, localcnt: 4n, remotecnt: 5n, syncsrc: "primary", virgin: true, bitmap_bytes: 128, cache_epoch: null },
    { kind: "handshake-reply", datasize_bytes: 1 << 30, extentsize_bytes: 1 << 20, localcnt: 4n, remotecnt: 5n, syncsrc: "primary", virgin: false, bitmap_bytes: 0, cache_epoch: nonce().slice(0, 16) },
    { kind: "bitmap", offset: 0, data: small(false) },
    { kind: "error", code: "NOT_SECONDARY", busy: true, message: "Remote node acts as primary." },
    { kind: "read", seq: 1, offset: 4096, length: 4096, sync: true },
    { kind: "write", seq: 2, offset: 0, length: 0, memsync: true, sync: false, data: small(false) },
    { kind: "write", seq: 9, offset: 0, length: 0, memsync: false, sync: false, data: small(false, 1024) },
    { kind: "write", seq: 3, offset: 512, length: 0, memsync: false, sync: true, data: small(true) },
    { kind: "delete", seq: 4, offset: 0, length: 1 << 30 },
    { kind: "flush", seq: 5 },
    { kind: "keepalive" },
    { kind: "in-sync", replies_failed: 3 },
    { kind: "reply", seq: 6, error: "OK", received: false, data: small(false) },
    { kind: "reply", seq: 7, error: "OK", received: true, data: new Uint8Array(0) },
    { kind: "reply", seq: 8, error: "EROFS", received: false, data: new Uint8Array(0) },
  ];
  const encodings: { checksum: ChecksumKind; compression: CompressionKind }[] = [];
  for (const checksum of ["none", "crc32", "sha256"] as const) for (const compression of ["none", "hole", "zstd"] as const) encodings.push({ checksum, compression });
  const out: Uint8Array[] = [];
  for (const encoding of encodings) {
    const encoder = new FrameEncoder(prims, encoding);
    for (const frame of frames) {
      const fixed = frame.kind === "write" ? { ...frame, length: frame.data.length } : frame;
      out.push(frameBytes(encoder.encode(fixed)));
    }
  }
  return out;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.subarray(0, 200)).toString("hex");
}

// The decoder with a sink (sink_for) and straight reads from a socket: streams of valid frames,
// large plain WRITEs among them, arriving in random pieces, some bytes delivered by the "event
// loop" (push) and the rest read directly. Every frame must come out as a plain decoder reads the
// whole stream, a landed WRITE's bytes in its sink, and nothing may be read out of order.
const STREAMS = 1_000;

test(`peer FrameDecoder with a sink matches the plain decoder on ${STREAMS} seeded streams (seed ${SEED})`, () => {
  const random = prng(SEED ^ 0x51ac);
  const int = (n: number) => Math.floor(random() * n);
  const encodings = [{ checksum: "none", compression: "none" }, { checksum: "none", compression: "hole" }, { checksum: "crc32", compression: "none" }] as const;
  let landed = 0;
  for (let i = 0; i < STREAMS; i++) {
    const encoder = new FrameEncoder(prims, encodings[int(encodings.length)]!);
    const frames: Frame[] = Array.from({ length: 1 + int(6) }, (_, k) => {
      const large = int(2) === 0;
      const data = Uint8Array.from({ length: large ? 65536 + 512 * int(300) : 512 * (1 + int(16)) }, () => int(4) === 0 ? 0 : int(256));
      return int(4) === 0 ? { kind: "reply", seq: k + 1, error: "OK", received: true, data: new Uint8Array(0) }
        : { kind: "write", seq: k + 1, offset: 512 * int(1000), length: data.length, ...(int(2) === 0 ? { memsync: true, sync: false } : { memsync: false, sync: int(2) === 0 }), data };
    });
    const wire = Buffer.concat(frames.map((f) => frameBytes(encoder.encode(f))));
    const expected = new FrameDecoder(prims);
    expected.push(wire);
    const want: Frame[] = [];
    for (let r = expected.next(); r.kind === "frame"; r = expected.next()) want.push(r.frame);
    expect(want.length).toBe(frames.length);

    let pos = 0; // bytes taken off the "socket", by push or directly
    let avail = 0; // bytes the "kernel" holds so far
    const arrive = () => (avail = Math.min(wire.length, avail + 1 + int(200_000)));
    const direct = (into: Uint8Array, wait_us: number) => {
      if (wait_us > 0 && int(2) === 0) arrive();
      const n = Math.min(into.length, avail - pos);
      into.set(wire.subarray(pos, pos + n));
      pos += n;
      return n;
    };
    const sunk = new Map<number, Uint8Array>();
    const decoder = new FrameDecoder(prims, {
      sink_for: (head) => {
        if (int(4) === 0) return null;
        const buf = new Uint8Array(head.length);
        sunk.set(head.seq, buf);
        let next = 0; // the sink must get its bytes in order, without gaps
        return {
          write: (bytes, at) => {
            expect(at).toBe(next);
            buf.set(bytes, at);
            next = at + bytes.length;
          },
          take: (at, max, wait_us) => {
            expect(at).toBe(next);
            const n = direct(buf.subarray(at, at + max), wait_us);
            next = at + n;
            return n;
          },
        };
      },
    });
    const got: Frame[] = [];
    for (let rounds = 0; got.length < want.length; rounds++) {
      if (rounds > 10_000) throw new Error(`stream ${i}: no progress`);
      arrive();
      const size = Math.min(avail - pos, 1 + int(100_000));
      if (size > 0) {
        decoder.push(wire.subarray(pos, pos + size));
        pos += size;
      }
      // Now and then no direct reads (as while a link replays what came before it started):
      // pushed pieces then pile up, and a sink later gets several at once.
      const read = int(3) === 0 ? undefined : direct;
      for (let r = decoder.next(read); r.kind !== "need-more"; r = decoder.next(read)) {
        if (r.kind === "error") throw new Error(`stream ${i}: ${r.reason}`);
        got.push(r.frame);
      }
    }
    for (const [k, frame] of got.entries()) {
      if (frame.kind === "write" && frame.landed === true) {
        landed++;
        expect({ ...frame, landed: undefined, data: sunk.get(frame.seq)! } as Frame).toEqual({ ...want[k]!, landed: undefined } as Frame);
      } else {
        expect(frame).toEqual(want[k]!);
      }
    }
    expect(pos).toBe(wire.length);
  }
  console.log(`peer sink fuzz seed ${SEED}: ${landed} landed WRITEs in ${STREAMS} streams`);
  expect(landed).toBeGreaterThan(STREAMS / 4);
}, 60_000);
