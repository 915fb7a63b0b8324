// ExtentLru against a reference built on Set's insertion order (what the activemap used before).
import { describe, expect, test } from "bun:test";
import { ExtentLru } from "../../../src/core/extent-lru.ts";
import { prng } from "../../fuzz/prng.ts";

class ReferenceLru {
  readonly set = new Set<number>();
  constructor(private readonly capacity: number) {}
  touch(e: number): number | null {
    if (this.set.delete(e)) {
      this.set.add(e);
      return null;
    }
    this.set.add(e);
    if (this.set.size <= this.capacity) return null;
    const oldest = this.set.values().next().value!;
    this.set.delete(oldest);
    return oldest;
  }
}

describe("ExtentLru", () => {
  test("evicts the least recently touched; a touch of a member makes it the most recent", () => {
    const lru = new ExtentLru(10, 3);
    expect([lru.touch(1), lru.touch(2), lru.touch(3)]).toEqual([null, null, null]);
    expect(lru.touch(1)).toBeNull();
    expect(lru.touch(4)).toBe(2);
    expect([lru.has(1), lru.has(2), lru.has(3), lru.has(4)]).toEqual([true, false, true, true]);
    expect(lru.size).toBe(3);
    expect(lru.drain()).toEqual([3, 1, 4]);
    expect(lru.size).toBe(0);
    expect(lru.has(3)).toBe(false);
  });

  test("matches the reference over random touches and drains", () => {
    const rand = prng(7);
    for (let round = 0; round < 200; round++) {
      const nextents = 1 + Math.floor(rand() * 40);
      const capacity = Math.floor(rand() * 10);
      const lru = new ExtentLru(nextents, capacity);
      let ref = new ReferenceLru(capacity);
      for (let step = 0; step < 300; step++) {
        if (rand() < 0.02) {
          expect(lru.drain()).toEqual([...ref.set]);
          ref = new ReferenceLru(capacity);
          continue;
        }
        const e = Math.floor(rand() * nextents);
        expect(lru.touch(e)).toBe(ref.touch(e));
        expect(lru.size).toBe(ref.set.size);
        for (let x = 0; x < nextents; x++) expect(lru.has(x)).toBe(ref.set.has(x));
      }
      expect(lru.drain()).toEqual([...ref.set]);
    }
  });

  test("its memory follows its capacity, not the device: 2^33 extents (16 PiB of 2 MiB)", () => {
    const nextents = 2 ** 33;
    const lru = new ExtentLru(nextents, 2);
    expect([lru.touch(nextents - 1), lru.touch(0), lru.touch(2 ** 32 + 5)]).toEqual([null, null, nextents - 1]);
    expect(lru.drain()).toEqual([0, 2 ** 32 + 5]);
  });

  test("refuses an extent outside its range", () => {
    expect(() => new ExtentLru(4, 2).touch(4)).toThrow("extent 4 outside the LRU");
  });
});
