// expand_number(3)-style sizes for hastctl -e -k -m.
import { expect, test } from "bun:test";
import { parseSize } from "../../../src/config/index.ts";

test("plain digits and binary suffixes in any case", () => {
  expect(parseSize("0")).toBe(0);
  expect(parseSize("4096")).toBe(4096);
  expect(parseSize("2M")).toBe(2097152);
  expect(parseSize("2m")).toBe(2097152);
  expect(parseSize("64k")).toBe(65536);
  expect(parseSize("1G")).toBe(1 << 30);
  expect(parseSize("3t")).toBe(3 * 2 ** 40);
  expect(parseSize("7P")).toBe(7 * 2 ** 50);
  expect(parseSize("7P")).toBeLessThan(Number.MAX_SAFE_INTEGER);
});

test("negatives, garbage and overflow are rejected with the reason", () => {
  const suffixes = "expected digits with an optional k, M, G, T, P or E suffix";
  for (const text of ["", "-1", "1.5M", "1MB", "M", " 1", "1 k", "0x10", "1e3"]) {
    expect(() => parseSize(text)).toThrow(`invalid size '${text}': ${suffixes}`);
  }
  expect(() => parseSize("1E")).toThrow("invalid size '1E': larger than 9007199254740991 bytes");
  expect(() => parseSize("8P")).toThrow("larger than 9007199254740991 bytes");
  expect(() => parseSize("9007199254740992")).toThrow("larger than");
  expect(() => parseSize("1".repeat(40))).toThrow("too large");
  expect(parseSize("9007199254740991")).toBe(Number.MAX_SAFE_INTEGER);
});
