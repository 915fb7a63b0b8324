// Transmission phase codec: request headers, request validation against the export's limits,
// simple replies and structured reply chunks. Pure: bytes in, values out.
import {
  NBD_CMD, NBD_CMD_FLAG, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE, NBD_REQUEST_MAGIC, NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC, NBD_ERR, OFFSET_DATA_PREFIX_BYTES, REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_HEADER_BYTES, STRUCTURED_REPLY_HEADER_BYTES, commandName, messageBytes, viewOf, writeU64,
  type NbdErrorName, type ParseResult,
} from "./nbd.ts";

export interface NbdRequest {
  flags: number;
  command: number;
  /** Opaque client handle, echoed in the reply. */
  cookie: bigint;
  offset: number;
  length: number;
}

/** The 28-byte request header at `buf[at..]`. A WRITE's payload (`length` bytes) follows it.
 * Reads bytes directly: a DataView per request (and the ArrayBuffer it forces) costs more than the parse. */
export function parseRequestHeader(buf: Uint8Array, at = 0): ParseResult<NbdRequest> {
  if (buf.byteLength - at < REQUEST_HEADER_BYTES) return { kind: "need", bytes: REQUEST_HEADER_BYTES };
  const magic = u32(buf, at);
  if (magic !== NBD_REQUEST_MAGIC) return { kind: "error", reason: `bad request magic 0x${magic.toString(16).padStart(8, "0")}` };
  return {
    kind: "ok",
    value: {
      flags: (buf[at + 4]! << 8) | buf[at + 5]!,
      command: (buf[at + 6]! << 8) | buf[at + 7]!,
      cookie: getCookie(buf, at + 8),
      offset: u32(buf, at + 16) * 0x1_0000_0000 + u32(buf, at + 20),
      length: u32(buf, at + 24),
    },
    bytes: REQUEST_HEADER_BYTES,
  };
}

function u32(buf: Uint8Array, at: number): number {
  return ((buf[at]! << 24) | (buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!) >>> 0;
}

function putU32(into: Uint8Array, at: number, value: number): void {
  into[at] = value >>> 24;
  into[at + 1] = value >>> 16;
  into[at + 2] = value >>> 8;
  into[at + 3] = value;
}

/** Scratch for turning a cookie into bytes without a DataView on every reply. */
const cookie_view = new DataView(new ArrayBuffer(8));
const cookie_bytes = new Uint8Array(cookie_view.buffer);

function getCookie(buf: Uint8Array, at: number): bigint {
  for (let i = 0; i < 8; i++) cookie_bytes[i] = buf[at + i]!;
  return cookie_view.getBigUint64(0);
}

function putCookie(into: Uint8Array, at: number, cookie: bigint): void {
  cookie_view.setBigUint64(0, cookie);
  into.set(cookie_bytes, at);
}

/** Bytes of payload that follow the header on the wire: only WRITE carries one. */
export function requestPayloadBytes(request: NbdRequest): number {
  return request.command === NBD_CMD.WRITE ? request.length : 0;
}

export interface ExportLimits {
  size_bytes: number;
  /** Minimum block: offsets and lengths must be multiples of it. */
  block_bytes: number;
  payload_bytes_max: number;
  read_only: boolean;
}

export type RequestCheck =
  | { kind: "ok" }
  | { kind: "disconnect" }
  /** Reply with `error`; when `close` is set the stream cannot be trusted after this request. */
  | { kind: "reject"; error: NbdErrorName; reason: string; close: boolean };

const FLAGS_ALLOWED: Record<number, number> = {
  [NBD_CMD.READ]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.WRITE]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.FLUSH]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.TRIM]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.CACHE]: NBD_CMD_FLAG.FUA,
  [NBD_CMD.WRITE_ZEROES]: NBD_CMD_FLAG.FUA | NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FAST_ZERO,
};

const COMMAND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(NBD_CMD).map(([name, value]) => [value, name]));
const OK: RequestCheck = { kind: "ok" };

const MODIFYING = new Set<number>([NBD_CMD.WRITE, NBD_CMD.TRIM, NBD_CMD.WRITE_ZEROES]);

/** Decides whether a request may run, and which NBD error it gets if not (spec §1.5–1.6). */
export function checkRequest(request: NbdRequest, limits: ExportLimits): RequestCheck {
  const { command, flags, offset, length } = request;
  if (command === NBD_CMD.DISC) return { kind: "disconnect" };
  const name = COMMAND_NAMES[command] ?? commandName(command);
  if ((command === NBD_CMD.READ || command === NBD_CMD.WRITE) && length > limits.payload_bytes_max) {
    // Checked first: a WRITE's payload length is then untrusted, we cannot skip it safely and
    // hang up, whatever else is wrong with the request.
    return reject("EOVERFLOW", `${name} of ${length} bytes exceeds the ${limits.payload_bytes_max}-byte maximum payload`,
      command === NBD_CMD.WRITE);
  }
  const allowed = FLAGS_ALLOWED[command];
  if (allowed === undefined) return reject("EINVAL", `${name} is not supported`);
  if ((flags & ~allowed) !== 0) return reject("EINVAL", `${name} with unsupported flags 0x${flags.toString(16)}`);
  if (limits.read_only && MODIFYING.has(command)) return reject("EPERM", `${name} on a read-only export`);
  if (command === NBD_CMD.FLUSH) {
    return offset === 0 && length === 0 ? OK : reject("EINVAL", `FLUSH with offset ${offset} length ${length}, expected 0 0`);
  }
  if (length === 0) return reject("EINVAL", `${name} of length 0`);
  if (offset % limits.block_bytes !== 0 || length % limits.block_bytes !== 0) {
    return reject("EINVAL", `${name} offset ${offset} length ${length} not aligned to ${limits.block_bytes} bytes`);
  }
  if (offset + length > limits.size_bytes) {
    const error = command === NBD_CMD.WRITE || command === NBD_CMD.WRITE_ZEROES ? "ENOSPC" : "EINVAL";
    return reject(error, `${name} offset ${offset} length ${length} beyond the ${limits.size_bytes}-byte export`);
  }
  return OK;
}

function reject(error: NbdErrorName, reason: string, close = false): RequestCheck {
  return { kind: "reject", error, reason, close };
}

/** Simple reply header (16 bytes) written at `into[at..]`; READ data follows it. */
export function writeSimpleReplyHeader(into: Uint8Array, error: NbdErrorName | 0, cookie: bigint, at = 0): void {
  putU32(into, at, NBD_SIMPLE_REPLY_MAGIC);
  putU32(into, at + 4, error === 0 ? 0 : NBD_ERR[error]);
  putCookie(into, at + 8, cookie);
}

export function encodeSimpleReply(error: NbdErrorName | 0, cookie: bigint): Uint8Array {
  const out = new Uint8Array(SIMPLE_REPLY_HEADER_BYTES);
  writeSimpleReplyHeader(out, error, cookie);
  return out;
}

/** Structured reply chunk header (20 bytes) written at the start of `into`. */
export function writeStructuredReplyHeader(into: Uint8Array, flags: number, type: number, cookie: bigint, payload_bytes: number): void {
  const view = viewOf(into);
  view.setUint32(0, NBD_STRUCTURED_REPLY_MAGIC);
  view.setUint16(4, flags);
  view.setUint16(6, type);
  view.setBigUint64(8, cookie);
  view.setUint32(16, payload_bytes);
}

/** Bytes before the data in a final OFFSET_DATA chunk: chunk header + u64 offset. */
export const OFFSET_DATA_HEADER_BYTES = STRUCTURED_REPLY_HEADER_BYTES + OFFSET_DATA_PREFIX_BYTES;

/** Header of a single, final OFFSET_DATA chunk carrying `data_bytes` of READ data at `offset`. */
export function writeOffsetDataHeader(into: Uint8Array, cookie: bigint, offset: number, data_bytes: number): void {
  writeStructuredReplyHeader(into, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.OFFSET_DATA, cookie, OFFSET_DATA_PREFIX_BYTES + data_bytes);
  writeU64(viewOf(into), STRUCTURED_REPLY_HEADER_BYTES, offset);
}

/** A final ERROR chunk: u32 error, u16 message length, message. */
export function encodeErrorChunk(cookie: bigint, error: NbdErrorName, message: string): Uint8Array {
  const text = messageBytes(message);
  const out = new Uint8Array(STRUCTURED_REPLY_HEADER_BYTES + 6 + text.byteLength);
  writeStructuredReplyHeader(out, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE.ERROR, cookie, 6 + text.byteLength);
  const view = viewOf(out);
  view.setUint32(STRUCTURED_REPLY_HEADER_BYTES, NBD_ERR[error]);
  view.setUint16(STRUCTURED_REPLY_HEADER_BYTES + 4, text.byteLength);
  out.set(text, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return out;
}

/** A reply header as a client sees it (used by tests and the fuzz client). */
export type ReplyHeader =
  | { kind: "simple"; error: number; cookie: bigint }
  | { kind: "structured"; flags: number; type: number; cookie: bigint; payload_bytes: number };

export function parseReplyHeader(buf: Uint8Array): ParseResult<ReplyHeader> {
  if (buf.byteLength < 4) return { kind: "need", bytes: 4 };
  const view = viewOf(buf);
  const magic = view.getUint32(0);
  if (magic === NBD_SIMPLE_REPLY_MAGIC) {
    if (buf.byteLength < SIMPLE_REPLY_HEADER_BYTES) return { kind: "need", bytes: SIMPLE_REPLY_HEADER_BYTES };
    return { kind: "ok", value: { kind: "simple", error: view.getUint32(4), cookie: view.getBigUint64(8) }, bytes: SIMPLE_REPLY_HEADER_BYTES };
  }
  if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
    if (buf.byteLength < STRUCTURED_REPLY_HEADER_BYTES) return { kind: "need", bytes: STRUCTURED_REPLY_HEADER_BYTES };
    return {
      kind: "ok",
      value: { kind: "structured", flags: view.getUint16(4), type: view.getUint16(6), cookie: view.getBigUint64(8), payload_bytes: view.getUint32(16) },
      bytes: STRUCTURED_REPLY_HEADER_BYTES,
    };
  }
  return { kind: "error", reason: `bad reply magic 0x${magic.toString(16).padStart(8, "0")}` };
}

/** Encodes a request header (client side; used by tests and the fuzz client). */
export function encodeRequestHeader(request: NbdRequest): Uint8Array {
  const out = new Uint8Array(REQUEST_HEADER_BYTES);
  const view = viewOf(out);
  view.setUint32(0, NBD_REQUEST_MAGIC);
  view.setUint16(4, request.flags);
  view.setUint16(6, request.command);
  view.setBigUint64(8, request.cookie);
  writeU64(view, 16, request.offset);
  view.setUint32(24, request.length);
  return out;
}
