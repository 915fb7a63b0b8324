import { describe, expect, test } from "bun:test";
import { FrameDecoder } from "../../../src/wire/peer/decoder.ts";
import { Flag, FrameType, HEADER_BYTES, MAX_DATA_BYTES } from "../../../src/wire/peer/constants.ts";
import type { DecodeErrorCode, Frame } from "../../../src/wire/peer/types.ts";
import { bodyOf, editHeader, OFF, withBody, zstdRleFrame } from "./craft.ts";
import { decodeOne, encode, nonce, patterned, prims, repetitive } from "./helpers.ts";

const HELLO: Frame = { kind: "hello", version_min: 1, version_max: 1, client_nonce: nonce(1), resource: "r0", node: "a" };
const HANDSHAKE: Frame = {
  kind: "handshake",
  resuid: 5n,
  localcnt: 1n,
  remotecnt: 1n,
  virgin: false,
  datasize_bytes: 1 << 30,
  extentsize_bytes: 1 << 21,
  replication: "fullsync",
};
const REPLY: Frame = {
  kind: "handshake-reply",
  datasize_bytes: 1 << 30,
  extentsize_bytes: 1 << 21,
  localcnt: 1n,
  remotecnt: 1n,
  syncsrc: "primary",
  virgin: false,
  bitmap_bytes: 64,
  cache_epoch: null,
};
const READ: Frame = { kind: "read", seq: 1, offset: 0, length: 4096, sync: false };
const data = patterned(4096);
const WRITE: Frame = { kind: "write", seq: 2, offset: 0, length: 4096, memsync: false, sync: false, data };

function expectError(bytes: Uint8Array, code: DecodeErrorCode, reason_part: string): void {
  const result = decodeOne(bytes);
  if (result.kind !== "error") throw new Error(`expected ${code}, got ${JSON.stringify(result.kind)}`);
  expect(result.code).toBe(code);
  expect(result.reason).toContain(reason_part);
  expect(result.reason).not.toContain("\n");
}

describe("header errors", () => {
  test("bad magic", () => expectError(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + " ".repeat(20)), "BAD_MAGIC", "bad frame magic"));
  test("bad format version", () => expectError(editHeader(encode(READ), (v) => v.setUint8(OFF.format, 2)), "BAD_FORMAT_VERSION", "version 2"));
  test("bad header crc", () => {
    const bytes = encode(READ);
    bytes[OFF.length] = 0xff;
    expectError(bytes, "BAD_HEADER_CRC", "header CRC32C");
  });
  test("unknown type", () => expectError(editHeader(encode(READ), (v) => v.setUint8(OFF.type, 99)), "UNKNOWN_TYPE", "99"));
  test("reserved bytes", () => expectError(editHeader(encode(READ), (v) => v.setUint16(OFF.reserved, 1, true)), "BAD_HEADER", "reserved"));
  test("u64 above 2^53-1", () => expectError(editHeader(encode(READ), (v) => v.setUint32(OFF.offset + 4, 0x0020_0000, true)), "BAD_HEADER", "2^53-1"));
  test("READ length over MAX_DATA_BYTES", () => {
    expectError(editHeader(encode(READ), (v) => v.setUint32(OFF.length, MAX_DATA_BYTES + 1, true)), "TOO_LARGE", "exceeds");
  });
  test("WRITE length over MAX_DATA_BYTES before any payload arrives", () => {
    const head = editHeader(encode(WRITE).subarray(0, HEADER_BYTES), (v) => {
      v.setUint32(OFF.length, MAX_DATA_BYTES + 512, true);
      v.setUint32(OFF.payload, MAX_DATA_BYTES + 512, true);
    });
    expectError(head, "TOO_LARGE", "exceeds");
  });
  test("control body over its bound", () => expectError(editHeader(encode(HELLO), (v) => v.setUint32(OFF.payload, 1 << 20, true)), "TOO_LARGE", "exceeds 2048"));
  test("BITMAP chunk over its bound", () => {
    const bytes = encode({ kind: "bitmap", offset: 0, data: new Uint8Array([1]) });
    expectError(editHeader(bytes, (v) => v.setUint32(OFF.length, (1 << 20) + 1, true)), "TOO_LARGE", "chunk");
  });
  test("payload length disagreeing with the data length", () => {
    expectError(editHeader(encode(WRITE), (v) => v.setUint32(OFF.payload, 4095, true)), "BAD_HEADER", "expected 4096");
  });
  test("IN_SYNC with a seq, a length or a flag", () => {
    const in_sync = encode({ kind: "in-sync", replies_failed: 1 });
    expectError(editHeader(in_sync, (v) => v.setUint32(OFF.seq, 1, true)), "BAD_HEADER", "seq must be zero");
    expectError(editHeader(in_sync, (v) => v.setUint32(OFF.length, 1, true)), "BAD_HEADER", "length must be zero");
    expectError(editHeader(in_sync, (v) => v.setUint16(OFF.flags, Flag.SYNC, true)), "BAD_HEADER", "flags");
  });
  test("seq 0 on a request", () => expectError(editHeader(encode(READ), (v) => v.setUint32(OFF.seq, 0, true)), "BAD_HEADER", "seq must be non-zero"));
  test("flag not allowed for the type", () => expectError(editHeader(encode(READ), (v) => v.setUint16(OFF.flags, Flag.MEMSYNC, true)), "BAD_HEADER", "flags"));
  test("DIGEST is a READ's flag only", () => {
    expectError(editHeader(encode(WRITE), (v) => v.setUint16(OFF.flags, Flag.DIGEST, true)), "BAD_HEADER", "flags");
    const reply = encode({ kind: "reply", seq: 1, error: "OK", received: false, data: new Uint8Array(32) });
    expectError(editHeader(reply, (v) => v.setUint16(OFF.flags, Flag.DIGEST, true)), "BAD_HEADER", "flags");
  });
  test("two checksums announced", () => {
    const bytes = encode(WRITE, { checksum: "crc32", compression: "none" });
    expectError(editHeader(bytes, (v) => v.setUint16(OFF.flags, Flag.CRC32 | Flag.SHA256, true)), "BAD_HEADER", "both CRC32 and SHA256");
  });
  test("HOLE with payload bytes", () => {
    expectError(editHeader(encode(WRITE), (v) => v.setUint16(OFF.flags, Flag.HOLE, true)), "BAD_HEADER", "HOLE with 4096");
  });
  test("error code on a non-reply", () => expectError(editHeader(encode(READ), (v) => v.setUint16(OFF.error, 1, true)), "BAD_HEADER", "error field"));
  test("unknown reply error code", () => {
    const bytes = encode({ kind: "reply", seq: 1, error: "EIO", received: false, data: new Uint8Array(0) });
    expectError(editHeader(bytes, (v) => v.setUint16(OFF.error, 999, true)), "BAD_HEADER", "unknown error code 999");
  });
  test("error reply carrying data", () => {
    const bytes = encode({ kind: "reply", seq: 1, error: "OK", received: false, data });
    expectError(editHeader(bytes, (v) => v.setUint16(OFF.error, 1, true)), "BAD_HEADER", "data with EIO");
  });
});

describe("control body errors", () => {
  test("body CRC mismatch", () => {
    const bytes = encode(HANDSHAKE);
    bytes[HEADER_BYTES + 9]! ^= 1;
    expectError(bytes, "BAD_BODY_CRC", "HANDSHAKE");
  });
  test("truncated handshake fields", () => {
    const body = bodyOf(encode(HANDSHAKE));
    for (let cut = 1; cut < body.length; cut++) {
      expectError(withBody(encode(HANDSHAKE), body.subarray(0, cut)), "BAD_BODY", "HANDSHAKE: truncated");
    }
  });
  test("trailing bytes", () => {
    const body = bodyOf(encode(HELLO));
    expectError(withBody(encode(HELLO), new Uint8Array([...body, 0])), "BAD_BODY", "1 trailing bytes");
  });
  test("bad UTF-8 in a name", () => {
    const body = bodyOf(encode(HELLO));
    body[2 + 2 + 32 + 1] = 0xff; // first byte of the resource name
    expectError(withBody(encode(HELLO), body), "BAD_UTF8", "resource name");
  });
  test("control character in a name", () => {
    const body = bodyOf(encode(HELLO));
    body[2 + 2 + 32 + 1] = 0x0a;
    expectError(withBody(encode(HELLO), body), "BAD_BODY", "control character");
  });
  test("empty name", () => {
    const body = bodyOf(encode(HELLO));
    const empty = new Uint8Array([...body.subarray(0, 36), 0, ...body.subarray(39)]);
    expectError(withBody(encode(HELLO), empty), "BAD_BODY", "is empty");
  });
  test("inverted version range", () => {
    const body = bodyOf(encode(HELLO));
    body[0] = 3;
    expectError(withBody(encode(HELLO), body), "BAD_BODY", "version range 3..1");
  });
  test("resuid 0 in HANDSHAKE", () => {
    const body = bodyOf(encode(HANDSHAKE));
    body[0] = 0;
    expectError(withBody(encode(HANDSHAKE), body), "BAD_BODY", "resuid is 0");
  });
  test("extent size not a power of two", () => {
    const body = bodyOf(encode(HANDSHAKE));
    new DataView(body.buffer).setUint32(32, 3000, true);
    expectError(withBody(encode(HANDSHAKE), body), "BAD_BODY", "extentsize 3000");
  });
  test("bitmap length that does not match datasize/extentsize", () => {
    const body = bodyOf(encode(REPLY));
    new DataView(body.buffer).setUint32(30, 65, true);
    expectError(withBody(encode(REPLY), body), "BAD_BODY", "expected 0 or 64");
  });
  test("HANDSHAKE_REPLY cache epoch: absent (version 1) or exactly 16 bytes", () => {
    const v1 = bodyOf(encode(REPLY));
    expect(v1.length).toBe(34);
    const epoch = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
    const v2 = bodyOf(encode({ ...REPLY, cache_epoch: epoch } as Frame));
    expect(v2.subarray(34)).toEqual(epoch);
    const decoded = decodeOne(withBody(encode(REPLY), v2));
    expect(decoded.kind === "frame" && decoded.frame.kind === "handshake-reply" && decoded.frame.cache_epoch).toEqual(epoch);
    expectError(withBody(encode(REPLY), v2.subarray(0, 40)), "BAD_BODY", "truncated at cache_epoch");
    const longer = new Uint8Array(51);
    longer.set(v2);
    expectError(withBody(encode(REPLY), longer), "BAD_BODY", "1 trailing bytes");
  });
  test("unknown syncsrc and replication", () => {
    const reply = bodyOf(encode(REPLY));
    reply[28] = 3;
    expectError(withBody(encode(REPLY), reply), "BAD_BODY", "unknown syncsrc 3");
    const handshake = bodyOf(encode(HANDSHAKE));
    handshake[37] = 7;
    expectError(withBody(encode(HANDSHAKE), handshake), "BAD_BODY", "unknown replication 7");
  });
  test("unknown auth state, and CHALLENGE withholding", () => {
    const auth = encode({ kind: "auth", auth: { state: "no-secret" } });
    expectError(withBody(auth, new Uint8Array([9])), "BAD_BODY", "unknown auth state 9");
    const challenge = encode({ kind: "challenge", version: 1, server_nonce: nonce(1), auth: { state: "no-secret" } });
    const body = bodyOf(challenge);
    body[34] = 2;
    expectError(withBody(challenge, body), "BAD_BODY", "withheld");
  });
  test("ERROR frame: unknown code, busy on the wrong code, oversized message", () => {
    const frame = encode({ kind: "error", code: "PROTOCOL", busy: false, message: "x" });
    const body = bodyOf(frame);
    expectError(withBody(frame, new Uint8Array([42, ...body.subarray(1)])), "BAD_BODY", "unknown error code 42");
    expectError(withBody(frame, new Uint8Array([body[0]!, 1, ...body.subarray(2)])), "BAD_BODY", "busy set with PROTOCOL");
    const long = new Uint8Array(4 + 1025).fill(0x61);
    long.set([body[0]!, 0, 1025 & 0xff, 1025 >> 8]);
    expectError(withBody(frame, long), "TOO_LARGE", "exceeds 1024");
  });
});

describe("payload errors", () => {
  for (const checksum of ["crc32", "sha256"] as const) {
    test(`checksum mismatch with ${checksum} (raw and zstd data)`, () => {
      for (const frame_data of [patterned(4096), repetitive(4096)]) {
        const bytes = encode({ ...WRITE, data: frame_data }, { checksum, compression: "zstd" });
        const corrupted = bytes.slice();
        corrupted[corrupted.length - 1]! ^= 0x10;
        const result = decodeOne(corrupted);
        if (result.kind !== "error") throw new Error("corruption not detected");
        // zstd's own framing may notice first; either way the data is not delivered.
        expect(["CHECKSUM_MISMATCH", "BAD_COMPRESSION"]).toContain(result.code);
      }
      const raw = encode(WRITE, { checksum, compression: "none" });
      raw[raw.length - 100]! ^= 1;
      expectError(raw, "CHECKSUM_MISMATCH", checksum);
    });
  }

  test("checksum mismatch in a READ reply and a BITMAP chunk", () => {
    const reply = encode({ kind: "reply", seq: 4, error: "OK", received: false, data }, { checksum: "sha256", compression: "none" });
    reply[reply.length - 1]! ^= 1;
    expectError(reply, "CHECKSUM_MISMATCH", "REPLY seq 4");
    const bitmap = encode({ kind: "bitmap", offset: 0, data: new Uint8Array([1, 2]) }, { checksum: "crc32", compression: "none" });
    bitmap[bitmap.length - 1]! ^= 1;
    expectError(bitmap, "CHECKSUM_MISMATCH", "BITMAP");
  });

  function zstdWrite(stored: Uint8Array, length: number): Uint8Array {
    const head = editHeader(encode(WRITE).subarray(0, HEADER_BYTES), (v) => {
      v.setUint16(OFF.flags, Flag.ZSTD, true);
      v.setUint32(OFF.length, length, true);
      v.setUint32(OFF.payload, stored.length, true);
    });
    return new Uint8Array([...head, ...stored]);
  }

  test("zstd bomb without a declared size is refused before decompressing", () => {
    expectError(zstdWrite(zstdRleFrame(100, null), 4096), "BAD_COMPRESSION", "does not declare its content size");
  });
  test("zstd frame whose blocks exceed its declared size", () => {
    expectError(zstdWrite(zstdRleFrame(100, 4096), 4096), "BAD_COMPRESSION", "exceed the declared content size");
  });
  test("zstd declared size different from the frame length", () => {
    expectError(zstdWrite(zstdRleFrame(1, 128 * 1024), 4096), "BAD_COMPRESSION", "content size 131072 != frame length 4096");
  });
  test("two concatenated zstd frames", () => {
    const one = zstdRleFrame(1, 128 * 1024);
    expectError(zstdWrite(new Uint8Array([...one, ...one]), 128 * 1024), "BAD_COMPRESSION", "bytes after the zstd frame");
  });
  test("garbage zstd data", () => expectError(zstdWrite(patterned(100), 4096), "BAD_COMPRESSION", "zstd magic"));
});

describe("decoder after an error", () => {
  test("keeps returning the same error and ignores further input", () => {
    const decoder = new FrameDecoder(prims);
    decoder.push(editHeader(encode(READ), (v) => v.setUint8(OFF.type, FrameType.REPLY + 1)));
    const first = decoder.next();
    expect(first.kind).toBe("error");
    decoder.push(encode(READ));
    expect(decoder.next()).toEqual(first);
    expect(decoder.buffered_bytes).toBe(0);
  });
});
