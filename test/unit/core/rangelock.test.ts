import { describe, expect, test } from "bun:test";
import { AssertionError } from "../../../src/core/assert.ts";
import { RangeLock } from "../../../src/core/rangelock.ts";

describe("RangeLock", () => {
  test("overlapping ranges exclude each other, adjacent ones do not", () => {
    const locks = new RangeLock();
    const a = locks.tryLock(100, 100)!;
    expect(a).not.toBeNull();
    expect(locks.tryLock(150, 10)).toBeNull();
    expect(locks.tryLock(0, 101)).toBeNull();
    expect(locks.tryLock(199, 1)).toBeNull();
    expect(locks.tryLock(200, 50)).not.toBeNull();
    expect(locks.tryLock(0, 100)).not.toBeNull();
    expect(locks.isLocked(120, 1)).toBe(true);
    locks.unlock(a);
    expect(locks.isLocked(100, 100)).toBe(false);
    expect(locks.tryLock(150, 10)).not.toBeNull();
    expect(locks.size).toBe(3);
  });
  test("unlocking an unknown or released token is an assertion failure", () => {
    const locks = new RangeLock();
    const token = locks.tryLock(0, 1)!;
    locks.unlock(token);
    expect(() => locks.unlock(token)).toThrow(AssertionError);
  });
  test("bad ranges and the lock bound are assertion failures", () => {
    const locks = new RangeLock(2);
    expect(() => locks.tryLock(0, 0)).toThrow(AssertionError);
    expect(() => locks.tryLock(-1, 5)).toThrow(AssertionError);
    locks.tryLock(0, 1);
    locks.tryLock(1, 1);
    expect(() => locks.tryLock(2, 1)).toThrow(AssertionError);
  });
});
