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
