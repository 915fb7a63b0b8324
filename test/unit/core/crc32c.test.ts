import { describe, expect, test } from "bun:test";
import { crc32c } from "../../../src/core/crc32c.ts";

describe("crc32c", () => {
  test("standard check value of '123456789'", () => {
    expect(crc32c(new TextEncoder().encode("123456789"))).toBe(0xe3069283);
  });
  test("empty input and 32 zero bytes (RFC 3720 B.4)", () => {
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
  });
  test("a range of a larger array: the check value inside padding", () => {
    const padded = new TextEncoder().encode("xx123456789yyy");
    expect(crc32c(padded, 2, 11)).toBe(0xe3069283);
    expect(crc32c(padded, 5, 5)).toBe(0);
  });
});

describe("crc32c, sliced by 8", () => {
  /** The plain bytewise algorithm, as reference. */
  function reference(bytes: Uint8Array, start: number, end: number): number {
    let crc = 0xffffffff;
    for (let i = start; i < end; i++) {
      crc ^= bytes[i]!;
      for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
    }
    return (crc ^ 0xffffffff) >>> 0;
  }

  test("agrees with the bytewise algorithm on every start and end within 64 random bytes", () => {
    const bytes = new Uint8Array(64);
    let x = 0x9e3779b9;
    for (let i = 0; i < bytes.length; i++) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
      bytes[i] = x >>> 24;
    }
    for (let start = 0; start <= bytes.length; start++) {
      for (let end = start; end <= bytes.length; end++) expect(crc32c(bytes, start, end)).toBe(reference(bytes, start, end));
    }
  });
});
