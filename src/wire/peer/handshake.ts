// Bodies of the control frames exchanged while a connection is set up (HELLO, CHALLENGE, AUTH,
// HANDSHAKE, HANDSHAKE_REPLY, ERROR), version negotiation and the bitmap size rule.
import {
  AuthState,
  CACHE_EPOCH_BYTES,
  MAX_BITMAP_BYTES,
  MAX_CONTROL_PAYLOAD_BYTES,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_EXTENT_BYTES,
  MAX_WIRE_INTEGER,
  MIN_EXTENT_BYTES,
  NONCE_BYTES,
  PeerErrorCode,
  PROOF_BYTES,
  ReplicationCode,
  SyncSourceCode,
} from "./constants.ts";
import { BodyReader, BodyWriter, decodeUtf8, encodeUtf8, hasControlCharacter } from "./body.ts";
import { fail, peerErrorName } from "./errors.ts";
import type { AuthBlock, Challenge, Frame, Handshake, HandshakeReply, Hello, PeerError, ReplicationMode, SyncSource } from "./types.ts";

/** Highest version both ranges contain, or null when they do not overlap. */
export function negotiateVersion(peer_min: number, peer_max: number, local_min: number, local_max: number): number | null {
  const version = Math.min(peer_max, local_max);
  return version >= Math.max(peer_min, local_min) ? version : null;
}

/** One bit per extent, extent n at bit (n % 8) of byte floor(n / 8); padding bits are zero. */
export function expectedBitmapBytes(datasize_bytes: number, extentsize_bytes: number): number {
  return Math.ceil(Math.ceil(datasize_bytes / extentsize_bytes) / 8);
}

export function encodeHelloBody(hello: Hello): Uint8Array {
  const w = new BodyWriter(MAX_CONTROL_PAYLOAD_BYTES);
  w.u16(hello.version_min);
  w.u16(hello.version_max);
  w.raw(nonce(hello.client_nonce));
  w.name(hello.resource, "resource name");
  w.name(hello.node, "node name");
  return w.bytes.subarray(0, w.length);
}

export function decodeHelloBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "HELLO");
  const version_min = r.u16();
  const version_max = r.u16();
  if (version_min === 0 || version_min > version_max) fail("BAD_BODY", `HELLO: bad version range ${version_min}..${version_max}`);
  const client_nonce = r.raw(NONCE_BYTES, "client nonce");
  const resource = r.name("resource name");
  const node = r.name("node name");
  r.end();
  return { kind: "hello", version_min, version_max, client_nonce, resource, node };
}

export function encodeChallengeBody(challenge: Challenge): Uint8Array {
  if (challenge.auth.state === "withheld") throw new Error("CHALLENGE cannot withhold a proof");
  const w = new BodyWriter(MAX_CONTROL_PAYLOAD_BYTES);
  w.u16(challenge.version);
  w.raw(nonce(challenge.server_nonce));
  writeAuthBlock(w, challenge.auth);
  return w.bytes.subarray(0, w.length);
}

export function decodeChallengeBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "CHALLENGE");
  const version = r.u16();
  if (version === 0) fail("BAD_BODY", "CHALLENGE: version 0");
  const server_nonce = r.raw(NONCE_BYTES, "server nonce");
  const auth = readAuthBlock(r, "CHALLENGE");
  if (auth.state === "withheld") fail("BAD_BODY", "CHALLENGE: auth state 'withheld' is not allowed");
  r.end();
  return { kind: "challenge", version, server_nonce, auth };
}

export function encodeAuthBody(auth: AuthBlock): Uint8Array {
  const w = new BodyWriter(1 + PROOF_BYTES);
  writeAuthBlock(w, auth);
  return w.bytes.subarray(0, w.length);
}

export function decodeAuthBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "AUTH");
  const auth = readAuthBlock(r, "AUTH");
  r.end();
  return { kind: "auth", auth };
}

export function encodeHandshakeBody(h: Handshake): Uint8Array {
  checkSizes(h.datasize_bytes, h.extentsize_bytes, (reason) => new Error(`cannot encode HANDSHAKE: ${reason}`));
  const w = new BodyWriter(64);
  w.u64n(h.resuid);
  w.u64n(h.localcnt);
  w.u64n(h.remotecnt);
  w.u64(h.datasize_bytes);
  w.u32(h.extentsize_bytes);
  w.u8(h.virgin ? 1 : 0);
  w.u8(ReplicationCode[h.replication]);
  return w.bytes.subarray(0, w.length);
}

export function decodeHandshakeBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "HANDSHAKE");
  const resuid = r.u64n("resuid");
  if (resuid === 0n) fail("BAD_BODY", "HANDSHAKE: resuid is 0");
  const localcnt = r.u64n("localcnt");
  const remotecnt = r.u64n("remotecnt");
  const datasize_bytes = r.u64("datasize");
  const extentsize_bytes = r.u32();
  checkSizes(datasize_bytes, extentsize_bytes, (reason) => fail("BAD_BODY", `HANDSHAKE: ${reason}`));
  const virgin = r.bool("virgin");
  const replication = enumName<ReplicationMode>(ReplicationCode, r.u8(), "HANDSHAKE", "replication");
  r.end();
  return { kind: "handshake", resuid, localcnt, remotecnt, virgin, datasize_bytes, extentsize_bytes, replication };
}

export function encodeHandshakeReplyBody(h: HandshakeReply): Uint8Array {
  const problem = (reason: string) => new Error(`cannot encode HANDSHAKE_REPLY: ${reason}`);
  checkSizes(h.datasize_bytes, h.extentsize_bytes, problem);
  checkBitmapBytes(h.bitmap_bytes, h.datasize_bytes, h.extentsize_bytes, problem);
  const w = new BodyWriter(64);
  w.u64(h.datasize_bytes);
  w.u32(h.extentsize_bytes);
  w.u64n(h.localcnt);
  w.u64n(h.remotecnt);
  w.u8(SyncSourceCode[h.syncsrc]);
  w.u8(h.virgin ? 1 : 0);
  w.u32(h.bitmap_bytes);
  if (h.cache_epoch !== null) {
    if (h.cache_epoch.length !== CACHE_EPOCH_BYTES) throw problem(`cache_epoch is ${h.cache_epoch.length} bytes, not ${CACHE_EPOCH_BYTES}`);
    w.raw(h.cache_epoch);
  }
  return w.bytes.subarray(0, w.length);
}

export function decodeHandshakeReplyBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "HANDSHAKE_REPLY");
  const datasize_bytes = r.u64("datasize");
  const extentsize_bytes = r.u32();
  const problem = (reason: string) => fail("BAD_BODY", `HANDSHAKE_REPLY: ${reason}`);
  checkSizes(datasize_bytes, extentsize_bytes, problem);
  const localcnt = r.u64n("localcnt");
  const remotecnt = r.u64n("remotecnt");
  const syncsrc = enumName<SyncSource>(SyncSourceCode, r.u8(), "HANDSHAKE_REPLY", "syncsrc");
  const virgin = r.bool("virgin");
  const bitmap_bytes = r.u32();
  checkBitmapBytes(bitmap_bytes, datasize_bytes, extentsize_bytes, problem);
  // Optional since VERSION_CACHE_EPOCH: a version 1 secondary ends the body here.
  const cache_epoch = r.remaining === 0 ? null : r.raw(CACHE_EPOCH_BYTES, "cache_epoch").slice();
  r.end();
  return { kind: "handshake-reply", datasize_bytes, extentsize_bytes, localcnt, remotecnt, syncsrc, virgin, bitmap_bytes, cache_epoch };
}

/**
 * Messages are diagnostics: control characters become spaces and anything over
 * MAX_ERROR_MESSAGE_BYTES is cut at a character boundary, so any string can be sent.
 */
export function encodeErrorBody(e: PeerError): Uint8Array {
  if (e.busy && e.code !== "NOT_SECONDARY") throw new Error(`ERROR: busy is only meaningful with NOT_SECONDARY, not ${e.code}`);
  const message = truncateUtf8(e.message.replace(/[\u0000-\u001f\u007f-\u009f]/g, " "), MAX_ERROR_MESSAGE_BYTES);
  const w = new BodyWriter(4 + MAX_ERROR_MESSAGE_BYTES);
  w.u8(PeerErrorCode[e.code]);
  w.u8(e.busy ? 1 : 0);
  w.u16(message.length);
  w.raw(message);
  return w.bytes.subarray(0, w.length);
}

export function decodeErrorBody(body: Uint8Array): Frame {
  const r = new BodyReader(body, "ERROR");
  const wire_code = r.u8();
  const code = peerErrorName(wire_code);
  if (code === undefined) fail("BAD_BODY", `ERROR: unknown error code ${wire_code}`);
  const busy = r.bool("busy");
  if (busy && code !== "NOT_SECONDARY") fail("BAD_BODY", `ERROR: busy set with ${code}`);
  const length = r.u16();
  if (length > MAX_ERROR_MESSAGE_BYTES) fail("TOO_LARGE", `ERROR: message of ${length} bytes exceeds ${MAX_ERROR_MESSAGE_BYTES}`);
  const message = decodeUtf8(r.raw(length, "message"), "ERROR message");
  if (hasControlCharacter(message)) fail("BAD_BODY", "ERROR: message contains a control character");
  r.end();
  return { kind: "error", code, busy, message };
}

function writeAuthBlock(w: BodyWriter, auth: AuthBlock): void {
  switch (auth.state) {
    case "no-secret":
      return w.u8(AuthState.NO_SECRET);
    case "withheld":
      return w.u8(AuthState.WITHHELD);
    case "proof":
      if (auth.proof.length !== PROOF_BYTES) throw new Error(`auth proof must be ${PROOF_BYTES} bytes`);
      w.u8(AuthState.PROOF);
      return w.raw(auth.proof);
  }
}

function readAuthBlock(r: BodyReader, what: string): AuthBlock {
  const state = r.u8();
  switch (state) {
    case AuthState.NO_SECRET:
      return { state: "no-secret" };
    case AuthState.WITHHELD:
      return { state: "withheld" };
    case AuthState.PROOF:
      return { state: "proof", proof: r.raw(PROOF_BYTES, "proof") };
    default:
      return fail("BAD_BODY", `${what}: unknown auth state ${state}`);
  }
}

function checkSizes(datasize_bytes: number, extentsize_bytes: number, problem: (reason: string) => unknown): void {
  if (datasize_bytes === 0 || datasize_bytes > MAX_WIRE_INTEGER) throw problem(`datasize ${datasize_bytes} out of range`);
  const power_of_two = (extentsize_bytes & (extentsize_bytes - 1)) === 0;
  if (!power_of_two || extentsize_bytes < MIN_EXTENT_BYTES || extentsize_bytes > MAX_EXTENT_BYTES) {
    throw problem(`extentsize ${extentsize_bytes} is not a power of two in [${MIN_EXTENT_BYTES}, ${MAX_EXTENT_BYTES}]`);
  }
  const bitmap_bytes = expectedBitmapBytes(datasize_bytes, extentsize_bytes);
  if (bitmap_bytes > MAX_BITMAP_BYTES) throw problem(`${bitmap_bytes}-byte bitmap exceeds ${MAX_BITMAP_BYTES} (extents too small)`);
}

function checkBitmapBytes(bitmap_bytes: number, datasize_bytes: number, extentsize_bytes: number, problem: (reason: string) => unknown): void {
  const expected = expectedBitmapBytes(datasize_bytes, extentsize_bytes);
  if (bitmap_bytes !== 0 && bitmap_bytes !== expected) {
    throw problem(`bitmap of ${bitmap_bytes} bytes, expected 0 or ${expected}`);
  }
}

function enumName<T extends string>(table: Record<T, number>, value: number, what: string, field: string): T {
  for (const name in table) if (table[name] === value) return name;
  return fail("BAD_BODY", `${what}: unknown ${field} ${value}`);
}

function nonce(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== NONCE_BYTES) throw new Error(`nonce must be ${NONCE_BYTES} bytes, got ${bytes.length}`);
  return bytes;
}

function truncateUtf8(text: string, max_bytes: number): Uint8Array {
  const bytes = encodeUtf8(text);
  if (bytes.length <= max_bytes) return bytes;
  let end = max_bytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}
