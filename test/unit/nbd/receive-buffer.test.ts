import { describe, expect, test } from "bun:test";
import { ReceiveBuffer } from "../../../src/wire/receive-buffer.ts";

describe("ReceiveBuffer", () => {
  test("a message inside one chunk is a view, not a copy", () => {
    const rx = new ReceiveBuffer();
    const chunk = new Uint8Array([1, 2, 3, 4, 5]);
    rx.push(chunk);
    const view = rx.take(3);
    expect(view.buffer).toBe(chunk.buffer);
    expect([...view]).toEqual([1, 2, 3]);
    expect(rx.bytes).toBe(2);
    expect(rx.peek(2).buffer).toBe(chunk.buffer);
  });

  test("a message spanning chunks is assembled in order", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2]));
    rx.push(new Uint8Array([]));
    rx.push(new Uint8Array([3]));
    rx.push(new Uint8Array([4, 5, 6]));
    expect([...rx.peek(5)]).toEqual([1, 2, 3, 4, 5]);
    expect([...rx.take(4)]).toEqual([1, 2, 3, 4]);
    expect([...rx.take(2)]).toEqual([5, 6]);
    expect(rx.bytes).toBe(0);
  });

  test("discard drops at most what is held", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array(10));
    expect(rx.discard(4)).toBe(4);
    expect(rx.discard(100)).toBe(6);
    expect(rx.bytes).toBe(0);
  });

  test("peeking more than held is a bug and throws", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array(3));
    expect(() => rx.peek(4)).toThrow("peek of 4 bytes with only 3 held");
  });
});
