// Frame encoder, and the body decoder the streaming FrameDecoder calls once a payload is complete.
import {
  BODY_CRC_BYTES,
  Flag,
  FrameType,
  HEADER_BYTES,
  MAX_DATA_BYTES,
  PAYLOAD_FLAGS,
  ReplyErrorCode,
} from "./constants.ts";
import { crc32c } from "../../core/crc32c.ts";
import { DecodeFailure, fail, replyErrorName } from "./errors.ts";
import {
  decodeAuthBody,
  decodeChallengeBody,
  decodeErrorBody,
  decodeHandshakeBody,
  decodeHandshakeReplyBody,
  decodeHelloBody,
  encodeAuthBody,
  encodeChallengeBody,
  encodeErrorBody,
  encodeHandshakeBody,
  encodeHandshakeReplyBody,
  encodeHelloBody,
} from "./handshake.ts";
import { encodeHeaderInto, typeName, validateHeader, type Header } from "./header.ts";
import { getU32, putU32 } from "./little-endian.ts";
import { decodePayload, encodePayload } from "./payload.ts";
import type { Frame, FrameParts, PayloadEncoding, PeerPrimitives, WriteHead } from "./types.ts";

const EMPTY = new Uint8Array(0);

/** Encodes frames; data payloads go through the pipeline chosen by `encoding`. */
export class FrameEncoder {
  constructor(
    private readonly prims: PeerPrimitives,
    private readonly encoding: PayloadEncoding,
  ) {}

  /** The caller writes `head` then `body`; data is never copied (body is the data or its zstd frame). */
  encode(frame: Frame): FrameParts {
    switch (frame.kind) {
      case "hello":
        return control(FrameType.HELLO, encodeHelloBody(frame));
      case "challenge":
        return control(FrameType.CHALLENGE, encodeChallengeBody(frame));
      case "auth":
        return control(FrameType.AUTH, encodeAuthBody(frame.auth));
      case "handshake":
        return control(FrameType.HANDSHAKE, encodeHandshakeBody(frame));
      case "handshake-reply":
        return control(FrameType.HANDSHAKE_REPLY, encodeHandshakeReplyBody(frame));
      case "error":
        return control(FrameType.ERROR, encodeErrorBody(frame));
      case "bitmap":
        return this.#withData(header(FrameType.BITMAP, { offset: frame.offset }), frame.data);
      case "read":
        return headerOnly(header(FrameType.READ, {
          seq: frame.seq, offset: frame.offset, length: frame.length,
          flags: (frame.sync ? Flag.SYNC : 0) | (frame.digest === true ? Flag.DIGEST : 0),
        }));
      case "write": {
        const flags = (frame.memsync ? Flag.MEMSYNC : 0) | (frame.sync ? Flag.SYNC : 0);
        if (frame.hole === true) {
          if (frame.data.length !== 0) throw new Error(`WRITE hole with ${frame.data.length} data bytes`);
          return headerOnly(header(FrameType.WRITE, { seq: frame.seq, offset: frame.offset, length: frame.length, flags: flags | Flag.HOLE }));
        }
        if (frame.length !== frame.data.length) throw new Error(`WRITE length ${frame.length} != data ${frame.data.length} bytes`);
        return this.#withData(header(FrameType.WRITE, { seq: frame.seq, offset: frame.offset, flags }), frame.data);
      }
      case "delete":
        return headerOnly(header(FrameType.DELETE, { seq: frame.seq, offset: frame.offset, length: frame.length }));
      case "flush":
        return headerOnly(header(FrameType.FLUSH, { seq: frame.seq }));
      case "keepalive":
        return headerOnly(header(FrameType.KEEPALIVE, {}));
      case "in-sync":
        return headerOnly(header(FrameType.IN_SYNC, { offset: frame.replies_failed }));
      case "reply": {
        const reply = header(FrameType.REPLY, { seq: frame.seq, error: ReplyErrorCode[frame.error], flags: frame.received ? Flag.RECEIVED : 0 });
        return frame.data.length === 0 ? headerOnly(reply) : this.#withData(reply, frame.data);
      }
    }
  }

  /**
   * The head of a WRITE whose data the caller sends itself, as it is (sendfile); null when this
   * link's encoding needs to see the data (a checksum, zstd). Valid whatever the data: under
   * `hole` compression a chunk of zeroes then travels whole rather than as a hole.
   */
  plainWriteHead(frame: WriteHead): Uint8Array | null {
    if (this.encoding.checksum !== "none" || this.encoding.compression === "zstd") return null;
    if (frame.length > MAX_DATA_BYTES) throw new Error(`WRITE: ${frame.length} data bytes exceed ${MAX_DATA_BYTES}`);
    const flags = (frame.memsync ? Flag.MEMSYNC : 0) | (frame.sync ? Flag.SYNC : 0);
    return headerOnly(header(FrameType.WRITE, { seq: frame.seq, offset: frame.offset, length: frame.length, payload_bytes: frame.length, flags })).head;
  }

  /** `header` is the caller's own, completed here. */
  #withData(header: Header, data: Uint8Array): FrameParts {
    if (data.length > MAX_DATA_BYTES) throw new Error(`${typeName(header.type)}: ${data.length} data bytes exceed ${MAX_DATA_BYTES}`);
    const payload = encodePayload(data, this.encoding, this.prims);
    const head = new Uint8Array(HEADER_BYTES + payload.checksum.length);
    header.flags |= payload.flags;
    header.length = data.length;
    header.payload_bytes = payload.checksum.length + payload.stored.length;
    assertValid(header);
    encodeHeaderInto(head, 0, header);
    head.set(payload.checksum, HEADER_BYTES);
    return { head, body: payload.stored };
  }
}

/** Joins head and body into one buffer (tests, small frames). */
export function frameBytes(parts: FrameParts): Uint8Array {
  if (parts.body.length === 0) return parts.head;
  const out = new Uint8Array(parts.head.length + parts.body.length);
  out.set(parts.head, 0);
  out.set(parts.body, parts.head.length);
  return out;
}

/** A WRITE header's fields. */
export function writeHeadOf(header: Header): WriteHead & { kind: "write" } {
  return {
    kind: "write" as const,
    seq: header.seq,
    offset: header.offset,
    length: header.length,
    memsync: (header.flags & Flag.MEMSYNC) !== 0,
    sync: (header.flags & Flag.SYNC) !== 0,
  };
}

/** A WRITE whose payload is its data as it is: no checksum, no compression, not a hole. */
export function isPlainWrite(header: Header): boolean {
  return header.type === FrameType.WRITE && (header.flags & PAYLOAD_FLAGS) === 0 && header.payload_bytes === header.length;
}

/** A WRITE of plain data whose payload the receiver's sink took (FrameDecoder sink_for). */
export function landedWrite(header: Header): Frame {
  if (!isPlainWrite(header)) {
    throw new Error(`landedWrite: not a WRITE of plain data (type ${header.type}, flags 0x${header.flags.toString(16)})`);
  }
  return { ...writeHeadOf(header), data: EMPTY, landed: true };
}

/** Decodes a complete payload for a validated header; throws DecodeFailure. */
export function decodeFrameBody(header: Header, payload: Uint8Array, prims: PeerPrimitives): Frame {
  switch (header.type) {
    case FrameType.HELLO:
      return decodeHelloBody(checkedBody("HELLO", payload));
    case FrameType.CHALLENGE:
      return decodeChallengeBody(checkedBody("CHALLENGE", payload));
    case FrameType.AUTH:
      return decodeAuthBody(checkedBody("AUTH", payload));
    case FrameType.HANDSHAKE:
      return decodeHandshakeBody(checkedBody("HANDSHAKE", payload));
    case FrameType.HANDSHAKE_REPLY:
      return decodeHandshakeReplyBody(checkedBody("HANDSHAKE_REPLY", payload));
    case FrameType.ERROR:
      return decodeErrorBody(checkedBody("ERROR", payload));
    case FrameType.BITMAP:
      return { kind: "bitmap", offset: header.offset, data: decodePayload("BITMAP", header.flags, header.length, payload, prims) };
    case FrameType.READ: {
      const read = { kind: "read" as const, seq: header.seq, offset: header.offset, length: header.length, sync: (header.flags & Flag.SYNC) !== 0 };
      return (header.flags & Flag.DIGEST) !== 0 ? { ...read, digest: true } : read;
    }
    case FrameType.WRITE: {
      const write = writeHeadOf(header);
      // A resync of never-written extents is mostly holes: no megabyte of zeroes made for each.
      if ((header.flags & Flag.HOLE) !== 0) return { ...write, data: EMPTY, hole: true };
      return { ...write, data: decodePayload(`WRITE seq ${header.seq}`, header.flags, header.length, payload, prims) };
    }
    case FrameType.DELETE:
      return { kind: "delete", seq: header.seq, offset: header.offset, length: header.length };
    case FrameType.FLUSH:
      return { kind: "flush", seq: header.seq };
    case FrameType.KEEPALIVE:
      return { kind: "keepalive" };
    case FrameType.IN_SYNC:
      return { kind: "in-sync", replies_failed: header.offset };
    case FrameType.REPLY:
      return {
        kind: "reply",
        seq: header.seq,
        error: replyErrorName(header.error) ?? fail("BAD_HEADER", `REPLY: unknown error code ${header.error}`),
        received: (header.flags & Flag.RECEIVED) !== 0,
        data: header.length === 0 ? EMPTY : decodePayload(`REPLY seq ${header.seq}`, header.flags, header.length, payload, prims),
      };
    default:
      return fail("UNKNOWN_TYPE", `unknown frame type ${header.type}`);
  }
}

/** Control payload = body ‖ CRC32C(body): the handshake decides sync direction, so it is always checked. */
function checkedBody(what: string, payload: Uint8Array): Uint8Array {
  const body = payload.subarray(0, payload.length - BODY_CRC_BYTES);
  const sent = getU32(payload, body.length);
  if (sent !== crc32c(body)) fail("BAD_BODY_CRC", `${what}: body CRC32C mismatch`);
  return body;
}

function control(type: number, body: Uint8Array): FrameParts {
  const head = new Uint8Array(HEADER_BYTES + body.length + BODY_CRC_BYTES);
  const h = header(type, { payload_bytes: body.length + BODY_CRC_BYTES });
  assertValid(h);
  encodeHeaderInto(head, 0, h);
  head.set(body, HEADER_BYTES);
  putU32(head, HEADER_BYTES + body.length, crc32c(body));
  return { head, body: EMPTY };
}

function headerOnly(header: Header): FrameParts {
  assertValid(header);
  const head = new Uint8Array(HEADER_BYTES);
  encodeHeaderInto(head, 0, header);
  return { head, body: EMPTY };
}

/** What we send must pass our own decoder's header rules: a bad frame is our bug, not the peer's.
 * (The rules, not a decode of the bytes: the byte layout is encodeHeaderInto's, round-trip tested.) */
function assertValid(header: Header): void {
  try {
    validateHeader(header);
  } catch (error) {
    if (error instanceof DecodeFailure) throw new Error(`encoder produced an invalid frame: ${error.reason}`);
    throw error;
  }
}

/** A header of `type` with `fields` set and every other field zero, made in one literal (a spread
 * of a blank header cost a cloneObject call per frame). */
function header(type: number, fields: Partial<Omit<Header, "type">>): Header {
  return {
    type,
    flags: fields.flags ?? 0,
    seq: fields.seq ?? 0,
    offset: fields.offset ?? 0,
    length: fields.length ?? 0,
    payload_bytes: fields.payload_bytes ?? 0,
    error: fields.error ?? 0,
  };
}
