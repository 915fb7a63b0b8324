// NBD protocol constants (docs/nbd.md; wire numbers from the NBD spec, proto.md).
// The handshake codec lives in nbd-handshake.ts, the transmission codec in nbd-transmission.ts.

/** "NBDMAGIC": first 8 bytes of the server greeting. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": second 8 bytes of the greeting, and the magic of every option request. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
export const NBD_OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export const GREETING_BYTES = 18;
export const CLIENT_FLAGS_BYTES = 4;
export const OPTION_HEADER_BYTES = 16;
export const OPTION_REPLY_HEADER_BYTES = 20;
export const REQUEST_HEADER_BYTES = 28;
export const SIMPLE_REPLY_HEADER_BYTES = 16;
export const STRUCTURED_REPLY_HEADER_BYTES = 20;
/** An OFFSET_DATA chunk carries a u64 offset before its data. */
export const OFFSET_DATA_PREFIX_BYTES = 8;
/** Zero padding after the EXPORT_NAME reply unless both sides set NO_ZEROES. */
export const EXPORT_NAME_PADDING_BYTES = 124;

/** Spec: strings SHOULD be <= 256 bytes and MUST be <= 4096 bytes. */
export const STRING_BYTES_MAX = 4096;
/** Default and advertised maximum payload of one READ/WRITE (2^25). */
export const PAYLOAD_BYTES_MAX = 32 * 1024 * 1024;
export const PREFERRED_BLOCK_BYTES = 4096;

// Handshake flags (server → client, u16) and client flags (u32).
export const NBD_FLAG_FIXED_NEWSTYLE = 0x1;
export const NBD_FLAG_NO_ZEROES = 0x2;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 0x1;
export const NBD_FLAG_C_NO_ZEROES = 0x2;

export const NBD_OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

export const NBD_REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
} as const;

export const NBD_INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

/** Transmission flags (u16), sent in NBD_INFO_EXPORT and the EXPORT_NAME reply. */
export const NBD_FLAG = {
  HAS_FLAGS: 0x0001,
  READ_ONLY: 0x0002,
  SEND_FLUSH: 0x0004,
  SEND_FUA: 0x0008,
  ROTATIONAL: 0x0010,
  SEND_TRIM: 0x0020,
  SEND_WRITE_ZEROES: 0x0040,
  SEND_DF: 0x0080,
  CAN_MULTI_CONN: 0x0100,
  SEND_RESIZE: 0x0200,
  SEND_CACHE: 0x0400,
  SEND_FAST_ZERO: 0x0800,
} as const;

export const NBD_CMD = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
  RESIZE: 8,
} as const;

export const NBD_CMD_FLAG = {
  FUA: 0x01,
  NO_HOLE: 0x02,
  DF: 0x04,
  REQ_ONE: 0x08,
  FAST_ZERO: 0x10,
  PAYLOAD_LEN: 0x20,
} as const;

export const NBD_REPLY_FLAG_DONE = 0x1;

export const NBD_REPLY_TYPE = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Wire error numbers: Linux errno values by name, whatever the host's errno numbering. */
export const NBD_ERR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;
export type NbdErrorName = keyof typeof NBD_ERR;

/** Host errno names (from `.code` of a thrown error) that map to something other than EIO. */
const ERRNO_NAME_TO_NBD: Record<string, NbdErrorName> = {
  EPERM: "EPERM",
  EACCES: "EPERM",
  EROFS: "EPERM",
  EIO: "EIO",
  ENOMEM: "ENOMEM",
  EINVAL: "EINVAL",
  ENOSPC: "ENOSPC",
  EDQUOT: "ENOSPC",
  EFBIG: "ENOSPC",
  EOVERFLOW: "EOVERFLOW",
  ENOTSUP: "ENOTSUP",
  EOPNOTSUPP: "ENOTSUP",
  ESHUTDOWN: "ESHUTDOWN",
};

/** Maps an errno name ("ENOSPC", "EDQUOT", ...) to the NBD error to send; anything else is EIO. */
export function nbdErrorForErrnoName(name: unknown): NbdErrorName {
  // Own keys only: an inherited one ("constructor") would be written as error 0, a success.
  return typeof name === "string" && Object.hasOwn(ERRNO_NAME_TO_NBD, name) ? ERRNO_NAME_TO_NBD[name]! : "EIO";
}

/** Name of an NBD command number, for log lines. */
export function commandName(command: number): string {
  for (const [name, value] of Object.entries(NBD_CMD)) if (value === command) return name;
  return `cmd#${command}`;
}

/** Name of an NBD option number, for log lines. */
export function optionName(option: number): string {
  for (const [name, value] of Object.entries(NBD_OPT)) if (value === option) return name;
  return `opt#${option}`;
}

/**
 * Result of parsing a message from a byte buffer that may hold only part of it:
 * `ok` with the bytes consumed, `need` with the total bytes required before it can be parsed,
 * or `error` with a one-line reason (the peer broke the protocol).
 */
export type ParseResult<T> =
  | { kind: "ok"; value: T; bytes: number }
  | { kind: "need"; bytes: number }
  | { kind: "error"; reason: string };

/** Reads a u64 as a number: exact below 2^53, above that merely larger than any export size. */
export function readU64(view: DataView, offset: number): number {
  return view.getUint32(offset) * 0x1_0000_0000 + view.getUint32(offset + 4);
}

/** Writes a non-negative safe integer as a big-endian u64. */
export function writeU64(view: DataView, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`nbd: u64 value ${value} is not a safe non-negative integer`);
  view.setUint32(offset, Math.floor(value / 0x1_0000_0000));
  view.setUint32(offset + 4, value >>> 0);
}

/** A message for the client, as UTF-8 cut to the protocol's string limit: an error text may
 * quote what the client sent (an export name of up to 4096 bytes), and must still go out. */
export function messageBytes(message: string): Uint8Array {
  const bytes = new TextEncoder().encode(message);
  if (bytes.byteLength <= STRING_BYTES_MAX) return bytes;
  // Cut on a character boundary: the message may quote a client's export name.
  let end = STRING_BYTES_MAX;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
