import { describe, expect, test } from "bun:test";
import { AssertionError } from "../../../src/core/assert.ts";
import { Bitmap } from "../../../src/core/bitmap.ts";

describe("Bitmap", () => {
  test("bit n is byte n/8, bit n%8, least significant first", () => {
    const map = new Bitmap(20);
    map.set(0);
    map.set(9);
    map.set(19);
    expect([...map.bytes]).toEqual([0b1, 0b10, 0b1000]);
    expect(map.count).toBe(3);
  });
  test("set/clear report changes and keep the count", () => {
    const map = new Bitmap(8);
    expect(map.set(3)).toBe(true);
    expect(map.set(3)).toBe(false);
    expect(map.clear(3)).toBe(true);
    expect(map.clear(3)).toBe(false);
    expect(map.count).toBe(0);
  });
  test("findNextSet skips zero bytes and stops at nbits", () => {
    const map = new Bitmap(100);
    map.set(3);
    map.set(64);
    map.set(99);
    expect(map.findNextSet(0)).toBe(3);
    expect(map.findNextSet(4)).toBe(64);
    expect(map.findNextSet(65)).toBe(99);
    expect(map.findNextSet(100)).toBe(-1);
    map.clear(99);
    expect(map.findNextSet(65)).toBe(-1);
  });
  test("load masks bits past nbits and recounts", () => {
    const map = new Bitmap(10);
    map.load(new Uint8Array([0xff, 0xff, 0xff]));
    expect([...map.bytes]).toEqual([0xff, 0x03]);
    expect(map.count).toBe(10);
    expect(map.findNextSet(9)).toBe(9);
  });
  test("out of range bits are assertion failures", () => {
    const map = new Bitmap(8);
    expect(() => map.test(8)).toThrow(AssertionError);
    expect(() => map.set(-1)).toThrow(AssertionError);
  });
});
