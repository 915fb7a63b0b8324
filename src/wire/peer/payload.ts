// Data payload pipeline (WRITE data, READ reply data, BITMAP chunks). Sender: hole check, zstd,
// checksum of the LOGICAL data in front. Receiver: undo per the frame's flags, then verify.
import {
  CRC32_BYTES,
  Flag,
  SHA256_BYTES,
  ZSTD_MIN_INPUT_BYTES,
  ZSTD_MIN_SAVING_DIVISOR,
} from "./constants.ts";
import { fail } from "./errors.ts";
import { checksumBytes } from "./header.ts";
import { getU32, putU32 } from "./little-endian.ts";
import type { PayloadEncoding, PeerPrimitives } from "./types.ts";
import { inspectZstdFrame } from "./zstd-frame.ts";

export interface EncodedPayload {
  flags: number;
  checksum: Uint8Array;
  /** Bytes sent after the checksum: the data itself, its zstd frame, or nothing for a hole. */
  stored: Uint8Array;
}

const EMPTY = new Uint8Array(0);

export function encodePayload(data: Uint8Array, encoding: PayloadEncoding, prims: PeerPrimitives): EncodedPayload {
  if (data.length === 0) throw new Error("encodePayload: empty data");
  // A hole carries no checksum: the header CRC already covers its only content (HOLE flag + length).
  if (encoding.compression !== "none" && prims.isZero(data)) return { flags: Flag.HOLE, checksum: EMPTY, stored: EMPTY };
  let flags = 0;
  let stored = data;
  if (encoding.compression === "zstd" && data.length >= ZSTD_MIN_INPUT_BYTES) {
    const compressed = prims.zstdCompress(data);
    if (compressed.length <= data.length - Math.floor(data.length / ZSTD_MIN_SAVING_DIVISOR)) {
      flags |= Flag.ZSTD;
      stored = compressed;
    }
  }
  switch (encoding.checksum) {
    case "none":
      return { flags, checksum: EMPTY, stored };
    case "crc32": {
      const checksum = new Uint8Array(CRC32_BYTES);
      putU32(checksum, 0, prims.crc32(data) >>> 0);
      return { flags: flags | Flag.CRC32, checksum, stored };
    }
    case "sha256":
      return { flags: flags | Flag.SHA256, checksum: prims.sha256(data), stored };
  }
}

/**
 * Recovers the logical data of a validated header's payload (header.ts has already checked that
 * flags and payload length agree). Throws DecodeFailure on bad compression or checksum mismatch.
 */
export function decodePayload(
  what: string,
  flags: number,
  length: number,
  payload: Uint8Array,
  prims: PeerPrimitives,
): Uint8Array {
  if ((flags & Flag.HOLE) !== 0) return new Uint8Array(length);
  const checksum_bytes = checksumBytes(flags);
  const stored = checksum_bytes === 0 ? payload : payload.subarray(checksum_bytes);
  const data = (flags & Flag.ZSTD) !== 0 ? decompress(what, stored, length, prims) : stored;
  if ((flags & Flag.CRC32) !== 0) {
    const sent = getU32(payload, 0);
    const computed = prims.crc32(data) >>> 0;
    if (sent !== computed) fail("CHECKSUM_MISMATCH", `${what}: crc32 0x${hex(sent)} != computed 0x${hex(computed)}`);
  } else if ((flags & Flag.SHA256) !== 0) {
    const computed = prims.sha256(data);
    if (!bytesEqual(payload.subarray(0, SHA256_BYTES), computed)) fail("CHECKSUM_MISMATCH", `${what}: sha256 mismatch`);
  }
  return data;
}

function decompress(what: string, stored: Uint8Array, length: number, prims: PeerPrimitives): Uint8Array {
  const check = inspectZstdFrame(stored);
  if (!check.ok) fail("BAD_COMPRESSION", `${what}: ${check.reason}`);
  if (check.content_bytes !== length) {
    fail("BAD_COMPRESSION", `${what}: zstd content size ${check.content_bytes} != frame length ${length}`);
  }
  let data: Uint8Array;
  try {
    data = prims.zstdDecompress(stored, length);
  } catch (error) {
    return fail("BAD_COMPRESSION", `${what}: zstd decompression failed: ${(error as Error).message}`);
  }
  if (data.length !== length) fail("BAD_COMPRESSION", `${what}: zstd produced ${data.length} bytes, expected ${length}`);
  return data;
}

/** Bytes looked at one by one before the word loop: data that is not zeroes usually ends the
 * check there, without the word view (which costs the engine the ArrayBuffer behind `data`). */
const ZERO_CHECK_LEAD_BYTES = 64;

export function isAllZero(data: Uint8Array): boolean {
  let i = 0;
  // Byte by byte through the lead and up to a word boundary, then word-at-a-time; bytes again at the end.
  for (; i < data.length && (i < ZERO_CHECK_LEAD_BYTES || ((data.byteOffset + i) & 3) !== 0); i++) {
    if (data[i] !== 0) return false;
  }
  const words = Math.floor((data.length - i) / 4);
  if (words > 0) {
    const view = new Uint32Array(data.buffer, data.byteOffset + i, words);
    for (let w = 0; w < words; w++) if (view[w] !== 0) return false;
    i += words * 4;
  }
  for (; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hex(n: number): string {
  return n.toString(16).padStart(8, "0");
}
