// Decoded peer frames and the primitives the codec needs. Frames are plain data; see docs/protocol.md.
import type { ReplicationMode } from "../../core/request-legs.ts";
import type { PeerErrorName, ReplyErrorName } from "./constants.ts";

export type { ReplicationMode };
export type ChecksumKind = "none" | "crc32" | "sha256";
export type CompressionKind = "none" | "hole" | "zstd";
export type SyncSource = "none" | "primary" | "secondary";

/** How the sender encodes data payloads; the receiver honours whatever each frame announces. */
export interface PayloadEncoding {
  checksum: ChecksumKind;
  compression: CompressionKind;
}

/**
 * Hashing, compression and randomness, injected so the codec stays pure (src/io/peer-primitives.ts
 * is the Bun implementation). zstdDecompress must throw rather than produce more than max_bytes.
 */
export interface PeerPrimitives {
  crc32(data: Uint8Array): number;
  sha256(data: Uint8Array): Uint8Array;
  hmacSha256(key: Uint8Array, data: Uint8Array): Uint8Array;
  zstdCompress(data: Uint8Array): Uint8Array;
  zstdDecompress(data: Uint8Array, max_bytes: number): Uint8Array;
  randomBytes(n: number): Uint8Array;
  /** Whether every byte is zero (the hole check; isAllZero in payload.ts is the portable one). */
  isZero(data: Uint8Array): boolean;
}

/** A side's answer to "do you know the secret": none configured, a proof, or refused to prove. */
export type AuthBlock =
  | { state: "no-secret" }
  | { state: "proof"; proof: Uint8Array }
  | { state: "withheld" };

export interface Hello {
  version_min: number;
  version_max: number;
  client_nonce: Uint8Array;
  resource: string;
  node: string;
}

export interface Challenge {
  version: number;
  server_nonce: Uint8Array;
  auth: AuthBlock;
}

export interface Handshake {
  resuid: bigint;
  localcnt: bigint;
  remotecnt: bigint;
  virgin: boolean;
  datasize_bytes: number;
  extentsize_bytes: number;
  replication: ReplicationMode;
}

export interface HandshakeReply {
  datasize_bytes: number;
  extentsize_bytes: number;
  localcnt: bigint;
  remotecnt: bigint;
  syncsrc: SyncSource;
  virgin: boolean;
  bitmap_bytes: number;
  /** CACHE_EPOCH_BYTES naming the secondary's disk cache lifetime, after it flushed that cache;
   * null when it cannot tell (and always below VERSION_CACHE_EPOCH). */
  cache_epoch: Uint8Array | null;
}

export interface PeerError {
  code: PeerErrorName;
  /** With NOT_SECONDARY: the peer is primary right now; retry shortly (HAST's wait=1). */
  busy: boolean;
  message: string;
}

export type Frame =
  | ({ kind: "hello" } & Hello)
  | ({ kind: "challenge" } & Challenge)
  | { kind: "auth"; auth: AuthBlock }
  | ({ kind: "handshake" } & Handshake)
  | ({ kind: "handshake-reply" } & HandshakeReply)
  | { kind: "bitmap"; offset: number; data: Uint8Array }
  | ({ kind: "error" } & PeerError)
  /** digest: answered with the SHA-256 of the range (DIGEST_BYTES), not the range (version >= 4). */
  | { kind: "read"; seq: number; offset: number; length: number; sync: boolean; digest?: true }
  /** hole (decoded frames): the data is all zeroes and was not sent (compression), `data` is empty
   * and the receiver zeroes `length` bytes; no buffer of zeroes is made. */
  /** landed: the data went where the receiver's sink put it (FrameDecoder sink_for); `data` is empty. */
  | { kind: "write"; seq: number; offset: number; length: number; memsync: boolean; sync: boolean; data: Uint8Array; hole?: true; landed?: true }
  | { kind: "delete"; seq: number; offset: number; length: number }
  | { kind: "flush"; seq: number }
  | { kind: "keepalive" }
  /** A pass completed: the secondary's copy is whole, given `replies_failed` (the error replies the
   * primary had received on this connection) is every error it sent. Carried in the offset field. */
  | { kind: "in-sync"; replies_failed: number }
  /** data is empty unless this answers a READ successfully. */
  | { kind: "reply"; seq: number; error: ReplyErrorName; received: boolean; data: Uint8Array };

export type FrameKind = Frame["kind"];

/** A WRITE's fields but its data. */
export type WriteHead = Omit<Extract<Frame, { kind: "write" }>, "data" | "hole" | "landed">;

/** An encoded frame: write head then body (body is the caller's data, or its compressed form; may be empty). */
export interface FrameParts {
  head: Uint8Array;
  body: Uint8Array;
}

export type DecodeErrorCode =
  | "BAD_MAGIC"
  | "BAD_FORMAT_VERSION"
  | "BAD_HEADER_CRC"
  | "UNKNOWN_TYPE"
  | "BAD_HEADER"
  | "TOO_LARGE"
  | "BAD_BODY"
  | "BAD_BODY_CRC"
  | "BAD_UTF8"
  | "BAD_COMPRESSION"
  | "CHECKSUM_MISMATCH";

export type DecodeResult =
  | { kind: "frame"; frame: Frame }
  | { kind: "need-more" }
  | { kind: "error"; code: DecodeErrorCode; reason: string };
