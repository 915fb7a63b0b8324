import { describe, expect, test } from "bun:test";
import { Flag, HEADER_BYTES, MAX_DATA_BYTES, ZSTD_MIN_INPUT_BYTES } from "../../../src/wire/peer/constants.ts";
import { FrameEncoder, frameBytes } from "../../../src/wire/peer/frame.ts";
import { encodePayload, isAllZero } from "../../../src/wire/peer/payload.ts";
import type { Frame, PayloadEncoding } from "../../../src/wire/peer/types.ts";
import { decodeOne, patterned, prims, repetitive } from "./helpers.ts";

function write(data: Uint8Array): Frame {
  return { kind: "write", seq: 1, offset: 0, length: data.length, memsync: false, sync: false, data };
}

function roundTrip(data: Uint8Array, encoding: PayloadEncoding): { flags: number; wire_bytes: number } {
  const bytes = frameBytes(new FrameEncoder(prims, encoding).encode(write(data)));
  const result = decodeOne(bytes);
  if (result.kind !== "frame" || result.frame.kind !== "write") throw new Error(`decode failed: ${JSON.stringify(result)}`);
  // A hole arrives as its length alone (the receiver zeroes it).
  const got = result.frame.hole ? new Uint8Array(result.frame.length) : result.frame.data;
  expect(Buffer.from(got).equals(data)).toBe(true);
  return { flags: new DataView(bytes.buffer).getUint16(6, true), wire_bytes: bytes.length };
}

describe("payload pipeline", () => {
  test("hole: all-zero data sends no data bytes and no checksum", () => {
    for (const compression of ["hole", "zstd"] as const) {
      const { flags, wire_bytes } = roundTrip(new Uint8Array(1 << 20), { checksum: "sha256", compression });
      expect(flags).toBe(Flag.HOLE);
      expect(wire_bytes).toBe(HEADER_BYTES);
    }
  });

  test("compression none sends zeros as they are", () => {
    const { flags, wire_bytes } = roundTrip(new Uint8Array(4096), { checksum: "none", compression: "none" });
    expect(flags).toBe(0);
    expect(wire_bytes).toBe(HEADER_BYTES + 4096);
  });

  test("hole compression leaves non-zero data raw", () => {
    const data = new Uint8Array(4096);
    data[4095] = 1;
    expect(roundTrip(data, { checksum: "crc32", compression: "hole" })).toEqual({ flags: Flag.CRC32, wire_bytes: HEADER_BYTES + 4 + 4096 });
  });

  test("zstd: compressible data is sent compressed and restored exactly", () => {
    const data = repetitive(1 << 20);
    const { flags, wire_bytes } = roundTrip(data, { checksum: "sha256", compression: "zstd" });
    expect(flags).toBe(Flag.ZSTD | Flag.SHA256);
    expect(wire_bytes).toBeLessThan(HEADER_BYTES + 32 + data.length / 8);
  });

  test("zstd: incompressible data, and data under the minimum size, go raw", () => {
    expect(roundTrip(patterned(1 << 16), { checksum: "none", compression: "zstd" }).flags).toBe(0);
    expect(roundTrip(repetitive(ZSTD_MIN_INPUT_BYTES - 1), { checksum: "none", compression: "zstd" }).flags).toBe(0);
    expect(roundTrip(repetitive(ZSTD_MIN_INPUT_BYTES), { checksum: "none", compression: "zstd" }).flags).toBe(Flag.ZSTD);
  });

  test("zstd output is kept only if it saves at least 1/8", () => {
    const compressor = (saved_bytes: number) => ({ ...prims, zstdCompress: (d: Uint8Array) => new Uint8Array(d.length - saved_bytes) });
    const data = patterned(8192);
    const encoding: PayloadEncoding = { checksum: "none", compression: "zstd" };
    expect(encodePayload(data, encoding, compressor(1024)).flags).toBe(Flag.ZSTD);
    expect(encodePayload(data, encoding, compressor(1023)).flags).toBe(0);
  });

  test("the largest allowed write round trips with every encoding", () => {
    const data = patterned(MAX_DATA_BYTES);
    roundTrip(data, { checksum: "sha256", compression: "zstd" });
    roundTrip(data, { checksum: "crc32", compression: "none" });
  });

  test("the hole check is exact on both sides of the native threshold (64 KiB)", () => {
    for (const bytes of [4096, 65536 - 512, 65536, 1 << 20]) {
      const data = new Uint8Array(bytes);
      expect(roundTrip(data, { checksum: "none", compression: "hole" }).flags).toBe(Flag.HOLE);
      data[bytes - 1] = 1;
      expect(roundTrip(data, { checksum: "none", compression: "hole" }).flags).toBe(0);
      data[bytes - 1] = 0;
      data[0] = 0x80;
      expect(roundTrip(data, { checksum: "none", compression: "hole" }).flags).toBe(0);
    }
  });

  test("isAllZero at every alignment and edge, in the leading bytes and in the words after them", () => {
    const buffer = new Uint8Array(256);
    for (let start = 0; start < 8; start++) {
      for (let end = start; end < 200; end++) {
        const view = buffer.subarray(start, end);
        expect(isAllZero(view)).toBe(true);
        for (const at of [0, 63, 64, 65, 100, view.length - 1]) {
          if (at < 0 || at >= view.length) continue;
          view[at] = 1;
          expect(isAllZero(view)).toBe(false);
          view[at] = 0;
        }
      }
    }
  });
});
