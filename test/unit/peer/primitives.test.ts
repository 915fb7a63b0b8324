import { describe, expect, test } from "bun:test";
import { bunPeerPrimitives as prims } from "../../../src/io/peer-primitives.ts";
import { inspectZstdFrame } from "../../../src/wire/peer/zstd-frame.ts";
import { zstdRleFrame } from "./craft.ts";
import { patterned, repetitive } from "./helpers.ts";

const text = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("Bun peer primitives", () => {
  test("crc32 is zlib's CRC-32", () => expect(prims.crc32(text("123456789"))).toBe(0xcbf43926));

  test("sha256 and HMAC-SHA256 match published vectors", () => {
    expect(hex(prims.sha256(text("abc")))).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    // RFC 4231 test case 2.
    expect(hex(prims.hmacSha256(text("Jefe"), text("what do ya want for nothing?")))).toBe(
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
  });

  test("zstd round trip declares its content size", () => {
    const data = repetitive(100_000);
    const compressed = prims.zstdCompress(data);
    expect(inspectZstdFrame(compressed)).toEqual({ ok: true, content_bytes: 100_000 });
    expect(Buffer.from(prims.zstdDecompress(compressed, 100_000)).equals(data)).toBe(true);
  });

  test("zstd decompression is bounded", () => {
    const compressed = prims.zstdCompress(repetitive(100_000));
    expect(() => prims.zstdDecompress(compressed, 99_999)).toThrow("exceeds 99999");
    expect(() => prims.zstdDecompress(zstdRleFrame(1000, null), 1 << 20)).toThrow("does not declare its content size");
    expect(() => prims.zstdDecompress(zstdRleFrame(2, 1000), 1 << 20)).toThrow("exceed the declared content size");
    expect(() => prims.zstdDecompress(patterned(64), 1 << 20)).toThrow();
  });

  test("randomBytes", () => {
    const a = prims.randomBytes(32);
    expect(a.length).toBe(32);
    expect(hex(a)).not.toBe(hex(prims.randomBytes(32)));
  });
});

describe("zstd frame inspection", () => {
  test("every prefix of a valid frame is refused, never thrown", () => {
    const frame = prims.zstdCompress(patterned(5000));
    for (let n = 0; n < frame.length; n++) expect(inspectZstdFrame(frame.subarray(0, n)).ok).toBe(false);
    expect(inspectZstdFrame(frame).ok).toBe(true);
  });

  test("dictionaries, reserved bits and reserved block types are refused", () => {
    const frame = prims.zstdCompress(repetitive(5000));
    const dict = frame.slice();
    dict[4]! |= 0x01;
    expect(inspectZstdFrame(dict)).toEqual({ ok: false, reason: "zstd frame uses a dictionary" });
    const reserved = frame.slice();
    reserved[4]! |= 0x08;
    expect(inspectZstdFrame(reserved)).toEqual({ ok: false, reason: "zstd frame descriptor reserved bit set" });
    const block = zstdRleFrame(1, 128 * 1024);
    block[9]! |= 0x06;
    expect(inspectZstdFrame(block)).toEqual({ ok: false, reason: "zstd reserved block type" });
  });
});
