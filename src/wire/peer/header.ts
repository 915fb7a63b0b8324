// The fixed 44-byte frame header: encode into a caller's buffer, decode and validate before any
// payload byte is trusted. Layout (little-endian) in docs/protocol.md §2.
import {
  BITMAP_CHUNK_BYTES,
  BODY_CRC_BYTES,
  CRC32_BYTES,
  Flag,
  FRAME_FORMAT_VERSION,
  FRAME_MAGIC,
  FrameType,
  HEADER_BYTES,
  MAX_BITMAP_BYTES,
  MAX_CONTROL_PAYLOAD_BYTES,
  MAX_DATA_BYTES,
  MAX_WIRE_INTEGER,
  PAYLOAD_FLAGS,
  SHA256_BYTES,
} from "./constants.ts";
import { crc32c } from "../../core/crc32c.ts";
import { fail, replyErrorName } from "./errors.ts";
import { assertWireInteger } from "./body.ts";
import { getU16, getU32, getU64, putU16, putU32, putU64 } from "./little-endian.ts";

const CRC_OFFSET = HEADER_BYTES - 4;

export interface Header {
  type: number;
  flags: number;
  seq: number;
  offset: number;
  length: number;
  payload_bytes: number;
  /** REPLY error code (wire number); 0 elsewhere. */
  error: number;
}

/** Writes a header (with its CRC32C) at target[at .. at+HEADER_BYTES), byte by byte (a DataView
 * per frame was 7% of the secondary's samples at 4 KiB QD32 memsync, docs/performance.md). */
export function encodeHeaderInto(target: Uint8Array, at: number, header: Header): void {
  assertWireInteger(header.seq, "seq");
  assertWireInteger(header.offset, "offset");
  assertWireInteger(header.length, "length");
  putU32(target, at, FRAME_MAGIC);
  target[at + 4] = FRAME_FORMAT_VERSION;
  target[at + 5] = header.type;
  putU16(target, at + 6, header.flags);
  putU64(target, at + 8, header.seq);
  putU64(target, at + 16, header.offset);
  putU64(target, at + 24, header.length);
  putU32(target, at + 32, header.payload_bytes);
  putU16(target, at + 36, header.error);
  putU16(target, at + 38, 0);
  putU32(target, at + CRC_OFFSET, crc32c(target, at, at + CRC_OFFSET));
}

/** Decodes and validates the header in bytes[0 .. HEADER_BYTES); throws DecodeFailure. */
export function decodeHeader(bytes: Uint8Array): Header {
  if (bytes.length < HEADER_BYTES) throw new Error(`decodeHeader: ${bytes.length} bytes, a header is ${HEADER_BYTES}`);
  const magic = getU32(bytes, 0);
  if (magic !== FRAME_MAGIC) fail("BAD_MAGIC", `bad frame magic 0x${hex32(magic)} (not a hast peer stream?)`);
  const format = bytes[4]!;
  if (format !== FRAME_FORMAT_VERSION) fail("BAD_FORMAT_VERSION", `unsupported frame format version ${format}`);
  const expected_crc = crc32c(bytes, 0, CRC_OFFSET);
  const crc = getU32(bytes, CRC_OFFSET);
  if (crc !== expected_crc) fail("BAD_HEADER_CRC", `header CRC32C 0x${hex32(crc)} != computed 0x${hex32(expected_crc)}`);
  if (getU16(bytes, 38) !== 0) fail("BAD_HEADER", "reserved header bytes are not zero");
  const header: Header = {
    type: bytes[5]!,
    flags: getU16(bytes, 6),
    seq: wireU64(bytes, 8, "seq"),
    offset: wireU64(bytes, 16, "offset"),
    length: wireU64(bytes, 24, "length"),
    payload_bytes: getU32(bytes, 32),
    error: getU16(bytes, 36),
  };
  validateHeader(header);
  return header;
}

/** The decoder's rules for a header's fields (throws DecodeFailure); decodeHeader applies them too. */
export function validateHeader(h: Header): void {
  const name = typeName(h.type);
  if (name === undefined) fail("UNKNOWN_TYPE", `unknown frame type ${h.type}`);
  if (h.offset + h.length > MAX_WIRE_INTEGER) fail("BAD_HEADER", `${name}: offset + length exceeds 2^53-1`);
  if (h.error !== 0 && h.type !== FrameType.REPLY) fail("BAD_HEADER", `${name}: error field set`);
  switch (h.type) {
    case FrameType.HELLO:
    case FrameType.CHALLENGE:
    case FrameType.AUTH:
    case FrameType.HANDSHAKE:
    case FrameType.HANDSHAKE_REPLY:
    case FrameType.ERROR:
      expect(name, h, { seq: "zero", offset: "zero", length: "zero", flags: 0 });
      if (h.payload_bytes <= BODY_CRC_BYTES) fail("BAD_HEADER", `${name}: body of ${h.payload_bytes} bytes is too short`);
      if (h.payload_bytes > MAX_CONTROL_PAYLOAD_BYTES) {
        fail("TOO_LARGE", `${name}: body of ${h.payload_bytes} bytes exceeds ${MAX_CONTROL_PAYLOAD_BYTES}`);
      }
      return;
    case FrameType.BITMAP:
      expect(name, h, { seq: "zero", offset: "any", length: "non-zero", flags: PAYLOAD_FLAGS });
      if (h.length > BITMAP_CHUNK_BYTES) fail("TOO_LARGE", `${name}: chunk of ${h.length} bytes exceeds ${BITMAP_CHUNK_BYTES}`);
      if (h.offset + h.length > MAX_BITMAP_BYTES) fail("TOO_LARGE", `${name}: chunk ends beyond ${MAX_BITMAP_BYTES} bytes`);
      return validatePipeline(name, h);
    case FrameType.READ:
      expect(name, h, { seq: "non-zero", offset: "any", length: "non-zero", flags: Flag.SYNC | Flag.DIGEST });
      boundData(name, h);
      return expectNoPayload(name, h);
    case FrameType.WRITE:
      expect(name, h, { seq: "non-zero", offset: "any", length: "non-zero", flags: Flag.MEMSYNC | Flag.SYNC | PAYLOAD_FLAGS });
      if ((h.flags & Flag.MEMSYNC) !== 0 && (h.flags & Flag.SYNC) !== 0) fail("BAD_HEADER", `${name}: MEMSYNC with SYNC`);
      boundData(name, h);
      return validatePipeline(name, h);
    case FrameType.DELETE:
      expect(name, h, { seq: "non-zero", offset: "any", length: "non-zero", flags: 0 });
      return expectNoPayload(name, h);
    case FrameType.FLUSH:
      expect(name, h, { seq: "non-zero", offset: "zero", length: "zero", flags: 0 });
      return expectNoPayload(name, h);
    case FrameType.KEEPALIVE:
      expect(name, h, { seq: "zero", offset: "zero", length: "zero", flags: 0 });
      return expectNoPayload(name, h);
    case FrameType.IN_SYNC:
      expect(name, h, { seq: "zero", offset: "any", length: "zero", flags: 0 });
      return expectNoPayload(name, h);
    case FrameType.REPLY:
      return validateReply(name, h);
  }
}

function validateReply(name: string, h: Header): void {
  const error = replyErrorName(h.error);
  if (error === undefined) fail("BAD_HEADER", `${name}: unknown error code ${h.error}`);
  expect(name, h, { seq: "non-zero", offset: "zero", length: "any", flags: Flag.RECEIVED | PAYLOAD_FLAGS });
  if (error !== "OK" || (h.flags & Flag.RECEIVED) !== 0) {
    if (h.length !== 0) fail("BAD_HEADER", `${name}: data with ${error === "OK" ? "RECEIVED" : error}`);
    if (error !== "OK" && (h.flags & Flag.RECEIVED) !== 0) fail("BAD_HEADER", `${name}: RECEIVED with ${error}`);
  }
  if (h.length === 0) return expectNoPayload(name, h);
  boundData(name, h);
  validatePipeline(name, h);
}

/** Payload = [checksum of the logical data][data: raw | zstd frame | nothing for HOLE]. */
function validatePipeline(name: string, h: Header): void {
  const hole = (h.flags & Flag.HOLE) !== 0;
  const zstd = (h.flags & Flag.ZSTD) !== 0;
  if (hole && zstd) fail("BAD_HEADER", `${name}: both HOLE and ZSTD`);
  const checksum_bytes = checksumBytes(h.flags);
  if (checksum_bytes < 0) fail("BAD_HEADER", `${name}: both CRC32 and SHA256`);
  if (hole) {
    if (checksum_bytes !== 0) fail("BAD_HEADER", `${name}: HOLE with a checksum`);
    if (h.payload_bytes !== 0) fail("BAD_HEADER", `${name}: HOLE with ${h.payload_bytes} payload bytes`);
  } else if (zstd) {
    if (h.payload_bytes <= checksum_bytes || h.payload_bytes > checksum_bytes + h.length) {
      fail("BAD_HEADER", `${name}: ZSTD payload of ${h.payload_bytes} bytes for ${h.length} data bytes`);
    }
  } else if (h.payload_bytes !== checksum_bytes + h.length) {
    fail("BAD_HEADER", `${name}: payload of ${h.payload_bytes} bytes, expected ${checksum_bytes + h.length}`);
  }
}

/** Bytes of checksum the flags announce; -1 when they announce two. */
export function checksumBytes(flags: number): number {
  const crc = (flags & Flag.CRC32) !== 0;
  const sha = (flags & Flag.SHA256) !== 0;
  if (crc && sha) return -1;
  return crc ? CRC32_BYTES : sha ? SHA256_BYTES : 0;
}

interface Expectation {
  seq: "zero" | "non-zero";
  offset: "zero" | "any";
  length: "zero" | "non-zero" | "any";
  flags: number;
}

function expect(name: string, h: Header, e: Expectation): void {
  if ((h.seq === 0) !== (e.seq === "zero")) fail("BAD_HEADER", `${name}: seq must be ${e.seq}, got ${h.seq}`);
  if (e.offset === "zero" && h.offset !== 0) fail("BAD_HEADER", `${name}: offset must be zero, got ${h.offset}`);
  if (e.length === "zero" && h.length !== 0) fail("BAD_HEADER", `${name}: length must be zero, got ${h.length}`);
  if (e.length === "non-zero" && h.length === 0) fail("BAD_HEADER", `${name}: length must be non-zero`);
  if ((h.flags & ~e.flags) !== 0) fail("BAD_HEADER", `${name}: flags 0x${h.flags.toString(16)} not allowed`);
}

function boundData(name: string, h: Header): void {
  if (h.length > MAX_DATA_BYTES) fail("TOO_LARGE", `${name}: length ${h.length} exceeds ${MAX_DATA_BYTES}`);
}

function expectNoPayload(name: string, h: Header): void {
  if (h.payload_bytes !== 0) fail("BAD_HEADER", `${name}: unexpected payload of ${h.payload_bytes} bytes`);
}

const TYPE_NAMES = new Map<number, string>(Object.entries(FrameType).map(([k, v]) => [v, k]));

export function typeName(type: number): string | undefined {
  return TYPE_NAMES.get(type);
}

function wireU64(b: Uint8Array, at: number, field: string): number {
  const value = getU64(b, at);
  if (value > MAX_WIRE_INTEGER) fail("BAD_HEADER", `${field} exceeds 2^53-1`);
  return value;
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, "0");
}
