// BufferPool: exact-size reuse of whole buffers, bounded, never a view into something larger.
import { expect, test } from "bun:test";
import { BufferPool } from "../../../src/gate/buffer-pool.ts";

const KiB = 1024;

test("a buffer handed back is taken again for the same size, and only for it", () => {
  const pool = new BufferPool(64 * KiB, 4 * 1024 * KiB);
  const a = pool.take(1024 * KiB);
  expect(a.byteLength).toBe(1024 * KiB);
  pool.give(a);
  expect(pool.bytes_free).toBe(1024 * KiB);
  const other = pool.take(512 * KiB);
  expect(other).not.toBe(a);
  expect(pool.take(1024 * KiB)).toBe(a);
  expect(pool.bytes_free).toBe(0);
});

test("small buffers, views and anything past the bound are left to the allocator", () => {
  const pool = new BufferPool(64 * KiB, 2 * 1024 * KiB);
  pool.give(new Uint8Array(4 * KiB));
  const big = new Uint8Array(1024 * KiB);
  pool.give(big.subarray(0, 512 * KiB));
  pool.give(big.subarray(512 * KiB));
  expect(pool.bytes_free).toBe(0);
  pool.give(new Uint8Array(1024 * KiB));
  pool.give(new Uint8Array(1024 * KiB));
  pool.give(new Uint8Array(1024 * KiB));
  expect(pool.bytes_free).toBe(2 * 1024 * KiB);
});

test("buffers of many sizes: each size gets its own back, last in first out", () => {
  const pool = new BufferPool(4 * KiB, 4 * 1024 * KiB);
  const bufs = [4, 8, 12, 4, 8].map((k) => pool.take(k * KiB));
  for (const b of bufs) pool.give(b);
  expect(pool.bytes_free).toBe(36 * KiB);
  expect(pool.take(8 * KiB)).toBe(bufs[4]!);
  expect(pool.take(8 * KiB)).toBe(bufs[1]!);
  expect(pool.take(8 * KiB)).not.toBe(bufs[1]!); // none of that size left: a new one
  expect(pool.take(12 * KiB)).toBe(bufs[2]!);
  expect(pool.take(4 * KiB)).toBe(bufs[3]!);
  expect(pool.bytes_free).toBe(4 * KiB);
});
