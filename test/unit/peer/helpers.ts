// Shared fixtures for the peer codec tests.
import { bunPeerPrimitives } from "../../../src/io/peer-primitives.ts";
import { FrameDecoder } from "../../../src/wire/peer/decoder.ts";
import { FrameEncoder, frameBytes } from "../../../src/wire/peer/frame.ts";
import type { DecodeResult, Frame, PayloadEncoding } from "../../../src/wire/peer/types.ts";

export const prims = bunPeerPrimitives;
export const RAW: PayloadEncoding = { checksum: "none", compression: "none" };

export function encode(frame: Frame, encoding: PayloadEncoding = RAW): Uint8Array {
  return frameBytes(new FrameEncoder(prims, encoding).encode(frame));
}

/** Feeds `bytes` in chunks of `chunk_bytes` and collects every result until need-more. */
export function decodeAll(bytes: Uint8Array, chunk_bytes = bytes.length): DecodeResult[] {
  const decoder = new FrameDecoder(prims);
  const results: DecodeResult[] = [];
  for (let at = 0; at < bytes.length; at += chunk_bytes) {
    decoder.push(bytes.slice(at, at + chunk_bytes));
    for (;;) {
      const result = decoder.next();
      if (result.kind === "need-more") break;
      results.push(result);
      if (result.kind === "error") return results;
    }
  }
  return results;
}

export function decodeOne(bytes: Uint8Array): DecodeResult {
  const results = decodeAll(bytes);
  if (results.length !== 1) throw new Error(`expected one result, got ${results.length}`);
  return results[0]!;
}

export function nonce(fill: number): Uint8Array {
  return new Uint8Array(32).fill(fill);
}

export function patterned(length: number, seed = 1): Uint8Array {
  const data = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    data[i] = x & 0xff;
  }
  return data;
}

/** Compressible, non-zero data. */
export function repetitive(length: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = "hast on bun "[i % 12]!.charCodeAt(0);
  return data;
}

/** One valid instance of every frame kind. */
export function sampleFrames(): Frame[] {
  return [
    { kind: "hello", version_min: 1, version_max: 1, client_nonce: nonce(1), resource: "shared", node: "node-a" },
    { kind: "challenge", version: 1, server_nonce: nonce(2), auth: { state: "no-secret" } },
    { kind: "challenge", version: 1, server_nonce: nonce(2), auth: { state: "proof", proof: nonce(3) } },
    { kind: "auth", auth: { state: "proof", proof: nonce(4) } },
    { kind: "auth", auth: { state: "withheld" } },
    { kind: "auth", auth: { state: "no-secret" } },
    {
      kind: "handshake",
      resuid: 0xfedc_ba98_7654_3210n,
      localcnt: 3n,
      remotecnt: 2n,
      virgin: true,
      datasize_bytes: 2 ** 40 + 4096,
      extentsize_bytes: 2 * 1024 * 1024,
      replication: "memsync",
    },
    {
      kind: "handshake-reply",
      datasize_bytes: 64 * 1024 * 1024,
      extentsize_bytes: 2 * 1024 * 1024,
      localcnt: 2n ** 64n - 1n,
      remotecnt: 0n,
      syncsrc: "secondary",
      virgin: false,
      bitmap_bytes: 4,
      cache_epoch: null,
    },
    {
      kind: "handshake-reply",
      datasize_bytes: 64 * 1024 * 1024,
      extentsize_bytes: 2 * 1024 * 1024,
      localcnt: 7n,
      remotecnt: 7n,
      syncsrc: "primary",
      virgin: false,
      bitmap_bytes: 0,
      cache_epoch: Uint8Array.from({ length: 16 }, (_, i) => 0xf0 - i),
    },
    { kind: "bitmap", offset: 0, data: new Uint8Array([1, 2, 3, 4]) },
    { kind: "error", code: "NOT_SECONDARY", busy: true, message: "Remote node acts as primary for the resource and not as secondary." },
    { kind: "error", code: "SPLIT_BRAIN", busy: false, message: "Split-brain condition! ✓" },
    { kind: "read", seq: 7, offset: 4096, length: 65536, sync: false },
    { kind: "read", seq: 2 ** 53 - 1, offset: 0, length: 512, sync: true },
    { kind: "read", seq: 12, offset: 1 << 20, length: 1 << 20, sync: true, digest: true },
    { kind: "write", seq: 8, offset: 8192, length: 4096, memsync: true, sync: false, data: patterned(4096) },
    { kind: "write", seq: 9, offset: 0, length: 1024, memsync: false, sync: true, data: repetitive(1024) },
    { kind: "delete", seq: 10, offset: 2 ** 40, length: 2 ** 40 },
    { kind: "flush", seq: 11 },
    { kind: "keepalive" },
    { kind: "in-sync", replies_failed: 0 },
    { kind: "in-sync", replies_failed: 2 ** 53 - 1 },
    { kind: "reply", seq: 7, error: "OK", received: false, data: patterned(65536, 9) },
    { kind: "reply", seq: 8, error: "OK", received: true, data: new Uint8Array(0) },
    { kind: "reply", seq: 12, error: "OK", received: false, data: patterned(32, 3) },
    { kind: "reply", seq: 8, error: "OK", received: false, data: new Uint8Array(0) },
    { kind: "reply", seq: 10, error: "ENOSPC", received: false, data: new Uint8Array(0) },
  ];
}
