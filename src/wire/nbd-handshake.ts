// Fixed newstyle handshake codec: greeting, client flags, option requests, option replies,
// NBD_INFO payloads and the NBD_OPT_EXPORT_NAME reply. Pure: bytes in, values out.
import {
  CLIENT_FLAGS_BYTES, EXPORT_NAME_PADDING_BYTES, GREETING_BYTES, NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO, NBD_MAGIC, NBD_OPT,
  NBD_OPTION_REPLY_MAGIC, NBD_OPTS_MAGIC, OPTION_HEADER_BYTES, OPTION_REPLY_HEADER_BYTES,
  STRING_BYTES_MAX, messageBytes, optionName, viewOf, writeU64, type ParseResult,
} from "./nbd.ts";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Handshake flags we offer: fixed newstyle and no zero padding. */
export const SERVER_HANDSHAKE_FLAGS = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;

export function encodeGreeting(): Uint8Array {
  const out = new Uint8Array(GREETING_BYTES);
  const view = viewOf(out);
  view.setBigUint64(0, NBD_MAGIC);
  view.setBigUint64(8, NBD_OPTS_MAGIC);
  view.setUint16(16, SERVER_HANDSHAKE_FLAGS);
  return out;
}

export interface ClientFlags {
  fixed_newstyle: boolean;
  no_zeroes: boolean;
}

/** The 4-byte client flags; any bit we did not offer is a protocol error (the server must drop). */
export function parseClientFlags(buf: Uint8Array): ParseResult<ClientFlags> {
  if (buf.byteLength < CLIENT_FLAGS_BYTES) return { kind: "need", bytes: CLIENT_FLAGS_BYTES };
  const flags = viewOf(buf).getUint32(0);
  const known = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;
  if ((flags & ~known) !== 0) {
    return { kind: "error", reason: `client flags 0x${hex(flags, 8)} set bits the server did not offer` };
  }
  return {
    kind: "ok",
    value: { fixed_newstyle: (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0, no_zeroes: (flags & NBD_FLAG_C_NO_ZEROES) !== 0 },
    bytes: CLIENT_FLAGS_BYTES,
  };
}

export interface OptionHeader {
  option: number;
  data_bytes: number;
}

/** The 16-byte option request header; the caller then waits for `data_bytes` more bytes. */
export function parseOptionHeader(buf: Uint8Array): ParseResult<OptionHeader> {
  if (buf.byteLength < OPTION_HEADER_BYTES) return { kind: "need", bytes: OPTION_HEADER_BYTES };
  const view = viewOf(buf);
  const magic = view.getBigUint64(0);
  if (magic !== NBD_OPTS_MAGIC) return { kind: "error", reason: `bad option magic 0x${magic.toString(16)}` };
  return { kind: "ok", value: { option: view.getUint32(8), data_bytes: view.getUint32(12) }, bytes: OPTION_HEADER_BYTES };
}

/** What a complete option asks for, decoded from its number and data. */
export type OptionRequest =
  | { kind: "export_name"; name: string }
  | { kind: "info" | "go"; name: string; info_types: number[] }
  | { kind: "list" }
  | { kind: "abort" }
  | { kind: "structured_reply" }
  | { kind: "unsupported"; option: number }
  | { kind: "invalid"; option: number; reason: string };

export function decodeOption(option: number, data: Uint8Array): OptionRequest {
  switch (option) {
    case NBD_OPT.EXPORT_NAME: {
      const name = decodeString(data);
      return typeof name === "string" ? { kind: "export_name", name } : invalid(option, `export name ${name.reason}`);
    }
    case NBD_OPT.ABORT:
      return { kind: "abort" }; // the spec says to ignore any data
    case NBD_OPT.LIST:
      return data.byteLength === 0 ? { kind: "list" } : invalid(option, `carries ${data.byteLength} data bytes, expected none`);
    case NBD_OPT.STRUCTURED_REPLY:
      return data.byteLength === 0 ? { kind: "structured_reply" } : invalid(option, `carries ${data.byteLength} data bytes, expected none`);
    case NBD_OPT.INFO:
    case NBD_OPT.GO:
      return decodeInfoRequest(option, data);
    default:
      return { kind: "unsupported", option };
  }
}

/** NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count × u16 info type. */
function decodeInfoRequest(option: number, data: Uint8Array): OptionRequest {
  const view = viewOf(data);
  if (data.byteLength < 6) return invalid(option, `data is ${data.byteLength} bytes, shorter than the 6-byte minimum`);
  const name_bytes = view.getUint32(0);
  if (name_bytes > data.byteLength - 6) return invalid(option, `name length ${name_bytes} exceeds the data`);
  const name = decodeString(data.subarray(4, 4 + name_bytes));
  if (typeof name !== "string") return invalid(option, `export name ${name.reason}`);
  const count = view.getUint16(4 + name_bytes);
  const expected_bytes = 6 + name_bytes + 2 * count;
  if (expected_bytes !== data.byteLength) {
    return invalid(option, `${count} info requests need ${expected_bytes} data bytes, got ${data.byteLength}`);
  }
  const info_types: number[] = [];
  for (let i = 0; i < count; i++) info_types.push(view.getUint16(6 + name_bytes + 2 * i));
  return { kind: option === NBD_OPT.GO ? "go" : "info", name, info_types };
}

function decodeString(bytes: Uint8Array): string | { reason: string } {
  if (bytes.byteLength > STRING_BYTES_MAX) return { reason: `is ${bytes.byteLength} bytes, over the ${STRING_BYTES_MAX}-byte limit` };
  if (bytes.includes(0)) return { reason: "contains a NUL byte" };
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return { reason: "is not valid UTF-8" };
  }
}

function invalid(option: number, reason: string): OptionRequest {
  return { kind: "invalid", option, reason: `${optionName(option)}: ${reason}` };
}

/** Option reply: 20-byte header (magic, echoed option, reply type, length) + data. */
export function encodeOptionReply(option: number, reply_type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(OPTION_REPLY_HEADER_BYTES + data.byteLength);
  const view = viewOf(out);
  view.setBigUint64(0, NBD_OPTION_REPLY_MAGIC);
  view.setUint32(8, option);
  view.setUint32(12, reply_type);
  view.setUint32(16, data.byteLength);
  out.set(data, OPTION_REPLY_HEADER_BYTES);
  return out;
}

/** Error option reply (type with bit 31 set) carrying a human-readable message. */
export function encodeOptionError(option: number, error_type: number, message: string): Uint8Array {
  if ((error_type & 0x80000000) === 0) throw new Error(`nbd: option reply type 0x${hex(error_type, 8)} is not an error`);
  return encodeOptionReply(option, error_type, messageBytes(message));
}

export function encodeInfoExport(size_bytes: number, transmission_flags: number): Uint8Array {
  const out = new Uint8Array(12);
  const view = viewOf(out);
  view.setUint16(0, NBD_INFO.EXPORT);
  writeU64(view, 2, size_bytes);
  view.setUint16(10, transmission_flags);
  return out;
}

export function encodeInfoName(name: string): Uint8Array {
  return withInfoType(NBD_INFO.NAME, encodeString(name));
}

export function encodeInfoDescription(description: string): Uint8Array {
  return withInfoType(NBD_INFO.DESCRIPTION, encodeString(description));
}

export interface BlockSizes {
  minimum_bytes: number;
  preferred_bytes: number;
  maximum_payload_bytes: number;
}

export function encodeInfoBlockSize(sizes: BlockSizes): Uint8Array {
  const { minimum_bytes, preferred_bytes, maximum_payload_bytes } = sizes;
  if (!isPowerOfTwo(minimum_bytes) || minimum_bytes > 65536) throw new Error(`nbd: minimum block ${minimum_bytes} must be a power of two <= 65536`);
  if (!isPowerOfTwo(preferred_bytes) || preferred_bytes < Math.max(minimum_bytes, 512)) {
    throw new Error(`nbd: preferred block ${preferred_bytes} must be a power of two >= max(minimum, 512)`);
  }
  if (maximum_payload_bytes < preferred_bytes || maximum_payload_bytes > 0xffffffff) {
    throw new Error(`nbd: maximum payload ${maximum_payload_bytes} must be >= preferred block and fit in u32`);
  }
  const out = new Uint8Array(14);
  const view = viewOf(out);
  view.setUint16(0, NBD_INFO.BLOCK_SIZE);
  view.setUint32(2, minimum_bytes);
  view.setUint32(6, preferred_bytes);
  view.setUint32(10, maximum_payload_bytes);
  return out;
}

/** NBD_REP_SERVER data: u32 name length, name, optional description. */
export function encodeServerEntry(name: string, description = ""): Uint8Array {
  const name_utf8 = encodeString(name);
  const description_utf8 = encodeString(description);
  const out = new Uint8Array(4 + name_utf8.byteLength + description_utf8.byteLength);
  viewOf(out).setUint32(0, name_utf8.byteLength);
  out.set(name_utf8, 4);
  out.set(description_utf8, 4 + name_utf8.byteLength);
  return out;
}

/** Answer to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, then 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(size_bytes: number, transmission_flags: number, no_zeroes: boolean): Uint8Array {
  const out = new Uint8Array(10 + (no_zeroes ? 0 : EXPORT_NAME_PADDING_BYTES));
  const view = viewOf(out);
  writeU64(view, 0, size_bytes);
  view.setUint16(8, transmission_flags);
  return out;
}

function withInfoType(info_type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + payload.byteLength);
  viewOf(out).setUint16(0, info_type);
  out.set(payload, 2);
  return out;
}

function encodeString(text: string): Uint8Array {
  const bytes = utf8.encode(text);
  if (bytes.byteLength > STRING_BYTES_MAX) throw new Error(`nbd: string of ${bytes.byteLength} bytes exceeds ${STRING_BYTES_MAX}`);
  return bytes;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && Number.isInteger(Math.log2(n));
}

function hex(n: number, digits: number): string {
  return n.toString(16).padStart(digits, "0");
}
