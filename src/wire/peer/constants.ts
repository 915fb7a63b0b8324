// Peer protocol constants: wire numbers and bounds. docs/protocol.md is the byte-by-byte reference.

/** Bytes "HAST" read as a little-endian u32; first four bytes of every frame. */
export const FRAME_MAGIC = 0x54534148;
/** Layout version of the fixed frame header; a different header layout gets a new number. */
export const FRAME_FORMAT_VERSION = 1;
export const HEADER_BYTES = 44;

/** Protocol versions this build speaks (message set and semantics), negotiated by HELLO/CHALLENGE. */
export const PROTOCOL_VERSION_MIN = 1;
export const PROTOCOL_VERSION_MAX = 4;
/** The first version whose HANDSHAKE_REPLY may carry the secondary's cache epoch. */
export const VERSION_CACHE_EPOCH = 2;
/** The first version with IN_SYNC: the primary tells the secondary its copy is whole again. */
export const VERSION_IN_SYNC = 3;
/** The first version with READ's DIGEST flag: the secondary answers a digest of the range. */
export const VERSION_DIGEST = 4;
export const CACHE_EPOCH_BYTES = 16;

export const NONCE_BYTES = 32;
export const PROOF_BYTES = 32;
export const SERVER_PROOF_LABEL = "hast-server-v1";
export const CLIENT_PROOF_LABEL = "hast-client-v1";

/** Largest logical data length of one READ/WRITE (matches the NBD maximum payload). */
export const MAX_DATA_BYTES = 32 * 1024 * 1024;
export const CRC32_BYTES = 4;
export const SHA256_BYTES = 32;
/** A DIGEST READ's answer: the SHA-256 of the range. */
export const DIGEST_BYTES = SHA256_BYTES;
/** Largest payload of any frame: the decoder never buffers more than this plus one header. */
export const MAX_DATA_PAYLOAD_BYTES = MAX_DATA_BYTES + SHA256_BYTES;
/** Resource and node names: u8 length prefix. */
export const MAX_NAME_BYTES = 255;
export const MAX_ERROR_MESSAGE_BYTES = 1024;
/** Control frame bodies (handshake, auth, error) are small; the trailing CRC32C is included. */
export const MAX_CONTROL_PAYLOAD_BYTES = 2048;
export const BODY_CRC_BYTES = 4;
/** Activemap sent at handshake: at most this many bytes in total, in BITMAP frames of at most one chunk. */
export const MAX_BITMAP_BYTES = 64 * 1024 * 1024;
export const BITMAP_CHUNK_BYTES = 1024 * 1024;

/** Extent sizes accepted in a handshake: powers of two in this range. */
export const MIN_EXTENT_BYTES = 512;
export const MAX_EXTENT_BYTES = 1024 * 1024 * 1024;

/** zstd is tried only from this size, and kept only when it saves at least 1/ZSTD_MIN_SAVING_DIVISOR. */
export const ZSTD_MIN_INPUT_BYTES = 1024;
export const ZSTD_MIN_SAVING_DIVISOR = 8;
/** zstd's Block_Maximum_Size: no block may regenerate more than this. */
export const ZSTD_MAX_BLOCK_BYTES = 128 * 1024;

/** Largest integer carried in a u64 offset/length/seq field; larger values are rejected as malformed. */
export const MAX_WIRE_INTEGER = Number.MAX_SAFE_INTEGER;

export const FrameType = {
  HELLO: 1,
  CHALLENGE: 2,
  AUTH: 3,
  HANDSHAKE: 4,
  HANDSHAKE_REPLY: 5,
  BITMAP: 6,
  ERROR: 7,
  READ: 16,
  WRITE: 17,
  DELETE: 18,
  FLUSH: 19,
  KEEPALIVE: 20,
  IN_SYNC: 21,
  REPLY: 32,
} as const;
export type FrameTypeNumber = (typeof FrameType)[keyof typeof FrameType];

export const Flag = {
  /** WRITE: the secondary sends an early RECEIVED reply once the data is off the network. */
  MEMSYNC: 0x0001,
  /** READ/WRITE: resynchronization traffic (statistics, priority). */
  SYNC: 0x0002,
  /** REPLY: memsync early acknowledgement; a final reply follows. */
  RECEIVED: 0x0004,
  /** READ (version >= 4): answer the SHA-256 of the range (DIGEST_BYTES) instead of its data. */
  DIGEST: 0x0008,
  /** Data is all zero bytes; no data bytes are sent. */
  HOLE: 0x0010,
  /** Data bytes are one zstd frame. */
  ZSTD: 0x0020,
  /** Payload starts with a CRC-32 (zlib) of the logical data, u32 LE. */
  CRC32: 0x0100,
  /** Payload starts with a SHA-256 of the logical data. */
  SHA256: 0x0200,
} as const;
export const PAYLOAD_FLAGS = Flag.HOLE | Flag.ZSTD | Flag.CRC32 | Flag.SHA256;

/** ERROR frame codes (handshake refusals). */
export const PeerErrorCode = {
  UNKNOWN_RESOURCE: 1,
  NO_ACCESS: 2,
  AUTH_FAILED: 3,
  NOT_SECONDARY: 4,
  SPLIT_BRAIN: 5,
  RESUID_MISMATCH: 6,
  SIZE_MISMATCH: 7,
  VERSION_MISMATCH: 8,
  PROTOCOL: 9,
  INTERNAL: 10,
} as const;
export type PeerErrorName = keyof typeof PeerErrorCode;

/** REPLY error codes: portable names, never raw errno numbers (FreeBSD and Linux number them differently). */
export const ReplyErrorCode = {
  OK: 0,
  EIO: 1,
  ENOSPC: 2,
  EINVAL: 3,
  ENOTSUP: 4,
  ENOTCONN: 5,
  ETIMEDOUT: 6,
  ENOMEM: 7,
  EROFS: 8,
} as const;
export type ReplyErrorName = keyof typeof ReplyErrorCode;

export const AuthState = { NO_SECRET: 0, PROOF: 1, WITHHELD: 2 } as const;
export const ReplicationCode = { fullsync: 0, memsync: 1, async: 2 } as const;
export const SyncSourceCode = { none: 0, primary: 1, secondary: 2 } as const;
