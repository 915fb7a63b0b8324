import { describe, expect, test } from "bun:test";
import { QUEUED_READ_MIN_BYTES, QUEUED_WAIT_US, QUEUED_WAITS_MAX, ReceiveBuffer, type MessageSink } from "../../../src/wire/receive-buffer.ts";

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

  test("fill takes held bytes first, then reads what is queued behind them, in order", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2]));
    rx.push(new Uint8Array([3, 4, 5]));
    const queued = [new Uint8Array([6, 7]), new Uint8Array([8, 9, 10, 11])];
    const reads: number[] = [];
    const read = (into: Uint8Array) => {
      expect(rx.bytes).toBe(0); // never while held bytes would come first
      reads.push(into.byteLength);
      const next = queued.shift();
      if (next === undefined) return 0;
      const n = Math.min(next.byteLength, into.byteLength);
      into.set(next.subarray(0, n));
      if (n < next.byteLength) queued.unshift(next.subarray(n));
      return n;
    };
    const out = new Uint8Array(10);
    expect(rx.fill(out, 1, read)).toBe(10);
    expect([...out]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(reads).toEqual([4, 2]); // stops once full: 10 and 11 stay queued
    expect(queued.map((q) => [...q])).toEqual([[10, 11]]);
  });

  test("fill stops when nothing is queued and resumes from held bytes later", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2, 3]));
    const out = new Uint8Array(6);
    expect(rx.fill(out, 0, () => 0)).toBe(3);
    rx.push(new Uint8Array([4, 5, 6, 7]));
    expect(rx.fill(out, 3)).toBe(6);
    expect([...out]).toEqual([1, 2, 3, 4, 5, 6]);
    expect([...rx.take(1)]).toEqual([7]);
  });

  test("copy_messages: takeMessage copies into the caller's buffer and frees every consumed chunk, small ones too, never one lent", () => {
    const rx = new ReceiveBuffer({ free_consumed: true, copy_messages: true });
    const a = new Uint8Array(100).fill(1);
    const b = new Uint8Array(50).fill(2);
    rx.push(a);
    rx.push(b);
    const given: Uint8Array[] = [];
    const alloc = (n: number) => {
      const out = new Uint8Array(n);
      given.push(out);
      return out;
    };
    const inside = rx.takeMessage(40, alloc)!; // lies inside a: still a copy, not a view
    expect(inside).toBe(given[0]!);
    expect(inside.buffer).not.toBe(a.buffer);
    expect(inside.every((x) => x === 1)).toBe(true);
    expect(a.byteLength).toBe(100); // not yet consumed
    const spanning = rx.takeMessage(80, alloc)!; // the rest of a, then part of b
    expect(spanning).toBe(given[1]!);
    expect([spanning[59], spanning[60]]).toEqual([1, 2]);
    expect(a.byteLength).toBe(0); // consumed: freed although small
    expect(rx.takeMessage(31, alloc)).toBeNull(); // only 30 bytes held
    expect(rx.peek(10).buffer).toBe(b.buffer); // a view: b is lent from now on
    expect(rx.takeMessage(30, alloc)!.every((x) => x === 2)).toBe(true);
    expect(b.byteLength).toBe(50); // consumed, but a view of it is out
  });

  test("free_consumed frees large chunks once consumed, never one a view was taken of, nor a view of a larger buffer", () => {
    const K = 64 * 1024;
    const rx = new ReceiveBuffer({ free_consumed: true });
    const a = new Uint8Array(K).fill(1);
    const b = new Uint8Array(K).fill(2);
    rx.push(a);
    rx.push(b);
    const spanning = rx.take(K + 10); // assembled: a is consumed and no view of it is out
    expect(spanning.byteLength).toBe(K + 10);
    expect(spanning[0]).toBe(1);
    expect(a.byteLength).toBe(0); // freed (detached)
    const view = rx.take(100); // a view of b
    expect(view.buffer).toBe(b.buffer);
    rx.take(K - 110); // b consumed, but a view of it is out
    expect(b.byteLength).toBe(K);
    expect(view.every((x) => x === 2)).toBe(true);

    const slab = new Uint8Array(4 * K).fill(3);
    const part = slab.subarray(K, 3 * K); // a view into a larger buffer: not ours to free
    const small = new Uint8Array(1000).fill(4);
    rx.push(small);
    rx.push(part);
    rx.take(1000 + 2 * K - 1, (n) => new Uint8Array(n));
    rx.take(1);
    expect(small.byteLength).toBe(1000);
    expect(slab.byteLength).toBe(4 * K);

    const keep = new ReceiveBuffer();
    const c = new Uint8Array(2 * K);
    keep.push(c);
    keep.push(new Uint8Array(10));
    keep.take(2 * K + 5);
    expect(c.byteLength).toBe(2 * K); // without the option nothing is freed
  });

  test("pull reads what is queued (waiting only when nothing is), holds it, and refuses while bytes are held", () => {
    const rx = new ReceiveBuffer();
    const waits: number[] = [];
    let queued: number[] = [];
    const read = (into: Uint8Array, wait_us: number) => {
      waits.push(wait_us);
      if (queued.length === 0 && wait_us > 0) queued = [9, 8, 7];
      const k = Math.min(into.byteLength, queued.length);
      into.set(queued.slice(0, k));
      queued = queued.slice(k);
      return k;
    };
    queued = [1, 2, 3, 4, 5];
    expect(rx.pull(4, read, 250)).toBe(4);
    expect(waits).toEqual([0]); // bytes were there: no wait
    expect(() => rx.pull(4, read)).toThrow("bytes still held");
    expect([...rx.take(4)]).toEqual([1, 2, 3, 4]);
    expect(rx.pull(4, read, 250)).toBe(1);
    expect([...rx.take(1)]).toEqual([5]);
    expect(rx.pull(4, read, 0)).toBe(0); // nothing queued, no wait allowed
    expect(rx.bytes).toBe(0);
    waits.length = 0;
    expect(rx.pull(4, read, 250)).toBe(3);
    expect(waits).toEqual([0, 250]);
    expect([...rx.take(3)]).toEqual([9, 8, 7]);
  });

  test("takeMessage fills a large message across pushes and queued reads; clear forgets it", () => {
    const n = 64 * 1024;
    const wire = new Uint8Array(n + 3).map((_, i) => i % 251);
    const rx = new ReceiveBuffer();
    rx.push(wire.slice(0, 1000));
    let queued = wire.subarray(1000, 5000);
    const read = (into: Uint8Array) => {
      const k = Math.min(into.byteLength, queued.byteLength);
      into.set(queued.subarray(0, k));
      queued = queued.subarray(k);
      return k;
    };
    expect(rx.takeMessage(n, (k) => new Uint8Array(k), read)).toBeNull();
    expect(rx.bytes).toBe(0);
    expect(rx.partial_bytes).toBe(5000);
    rx.push(wire.slice(5000));
    const message = rx.takeMessage(n, () => { throw new Error("allocated twice"); }, read);
    expect(message).toEqual(wire.subarray(0, n));
    expect([...rx.take(3)]).toEqual([...wire.subarray(n)]);
    expect(rx.partial_bytes).toBe(0);

    let once = 10;
    expect(rx.takeMessage(n, (k) => new Uint8Array(k), () => [once, once = 0][0]!)).toBeNull();
    expect(rx.partial_bytes).toBe(10);
    rx.clear();
    expect(rx.partial_bytes).toBe(0);
    expect(rx.takeMessage(4, (k) => new Uint8Array(k), read)).toBeNull(); // small: waits for a push
  });

  test("takeMessage waits for the rest of a large message a bounded number of times", () => {
    const n = QUEUED_READ_MIN_BYTES;
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array(100).fill(1));
    // Each call without a wait finds nothing; each wait brings 1000 bytes (the sender refilling).
    const waited: number[] = [];
    const read = (into: Uint8Array, wait_us: number) => {
      if (wait_us === 0) return 0;
      waited.push(wait_us);
      const k = Math.min(1000, into.byteLength);
      into.fill(2, 0, k);
      return k;
    };
    expect(rx.takeMessage(n, (k) => new Uint8Array(k), read)).toBeNull();
    expect(waited).toEqual(Array(QUEUED_WAITS_MAX).fill(QUEUED_WAIT_US));
    expect(rx.partial_bytes).toBe(100 + QUEUED_WAITS_MAX * 1000);
    // The budget is per message: later data for the same message comes without waiting.
    expect(rx.takeMessage(n, (k) => new Uint8Array(k), read)).toBeNull();
    expect(waited.length).toBe(QUEUED_WAITS_MAX);

    // A wait that brings nothing ends the waiting for that message; the next message waits again.
    const quiet = new ReceiveBuffer();
    let waits = 0;
    const silent = (_into: Uint8Array, wait_us: number) => {
      if (wait_us > 0) waits++;
      return 0;
    };
    quiet.push(new Uint8Array(10));
    expect(quiet.takeMessage(n, (k) => new Uint8Array(k), silent)).toBeNull();
    expect(quiet.takeMessage(n, (k) => new Uint8Array(k), silent)).toBeNull();
    expect(waits).toBe(1);
    quiet.push(new Uint8Array(n - 10));
    expect(quiet.takeMessage(n, (k) => new Uint8Array(k), silent)?.byteLength).toBe(n);
    quiet.push(new Uint8Array(10));
    expect(quiet.takeMessage(n, (k) => new Uint8Array(k), silent)).toBeNull();
    expect(waits).toBe(2);
  });
});

describe("ReceiveBuffer.sinkMessage", () => {
  type Call = ["write", number, number[]] | ["take", number, number, number];
  /** A sink that logs every call; take answers with `take` (default: a bug to call it). */
  function logged(rx: ReceiveBuffer, take: (at: number, max: number, wait_us: number) => number = () => { throw new Error("take called"); }) {
    const calls: Call[] = [];
    const buffers: ArrayBufferLike[] = [];
    const sink: MessageSink = {
      write: (bytes, at) => {
        calls.push(["write", at, [...bytes]]);
        buffers.push(bytes.buffer);
      },
      take: (at, max, wait_us) => {
        expect(rx.bytes).toBe(0); // the socket is read only once nothing is held (stream order)
        calls.push(["take", at, max, wait_us]);
        return take(at, max, wait_us);
      },
    };
    return { sink, calls, buffers };
  }

  test("held bytes across chunks go to the sink in order, as views at their offsets; the next message's bytes stay held", () => {
    const rx = new ReceiveBuffer();
    const chunks = [new Uint8Array([0, 1, 2, 3]), new Uint8Array([4, 5, 6, 7]), new Uint8Array([8, 9, 10, 11, 12])];
    for (const c of chunks) rx.push(c);
    rx.take(1); // the message starts inside the first chunk
    const { sink, calls, buffers } = logged(rx);
    expect(rx.sinkMessage(10, sink, true)).toBe(true); // all held: no take, even with direct
    expect(calls).toEqual([["write", 0, [1, 2, 3]], ["write", 3, [4, 5, 6, 7]], ["write", 7, [8, 9, 10]]]);
    expect(buffers).toEqual(chunks.map((c) => c.buffer)); // views, not copies
    expect(rx.partial_bytes).toBe(0);
    expect(rx.bytes).toBe(2);
    expect([...rx.take(2)]).toEqual([11, 12]);
  });

  test("direct: takes the rest from the socket, waits once when nothing is queued, gives up after an empty wait; a later push completes it", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2, 3]));
    const answers = [2, 0, 0]; // 2 bytes queued, then none, then a wait that brings none
    const { sink, calls } = logged(rx, () => answers.shift()!);
    expect(rx.sinkMessage(10, sink, true)).toBe(false);
    expect(calls).toEqual([["write", 0, [1, 2, 3]], ["take", 3, 7, 0], ["take", 5, 5, 0], ["take", 5, 5, QUEUED_WAIT_US]]);
    expect(rx.partial_bytes).toBe(5);
    // The empty wait spent the message's budget: asked again, one look without waiting.
    calls.length = 0;
    answers.push(0);
    expect(rx.sinkMessage(10, sink, true)).toBe(false);
    expect(calls).toEqual([["take", 5, 5, 0]]);
    // The event loop delivers the rest and the next message's first byte.
    calls.length = 0;
    rx.push(new Uint8Array([6, 7, 8, 9, 10, 99]));
    expect(rx.sinkMessage(10, sink, true)).toBe(true);
    expect(calls).toEqual([["write", 5, [6, 7, 8, 9, 10]]]);
    expect(rx.partial_bytes).toBe(0);
    expect([...rx.take(1)]).toEqual([99]);
  });

  test("direct: waits that bring bytes go on, at most QUEUED_WAITS_MAX per message", () => {
    const rx = new ReceiveBuffer();
    // Nothing is ever queued at once; each wait brings one byte (a sender refilling slowly).
    const { sink, calls } = logged(rx, (_at, _max, wait_us) => (wait_us > 0 ? 1 : 0));
    expect(rx.sinkMessage(100, sink, true)).toBe(false);
    const expected: Call[] = [];
    for (let i = 0; i < QUEUED_WAITS_MAX; i++) expected.push(["take", i, 100 - i, 0], ["take", i, 100 - i, QUEUED_WAIT_US]);
    expected.push(["take", QUEUED_WAITS_MAX, 100 - QUEUED_WAITS_MAX, 0]);
    expect(calls).toEqual(expected);
    expect(rx.partial_bytes).toBe(QUEUED_WAITS_MAX);
  });

  test("without direct the socket is never read", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2]));
    const { sink, calls } = logged(rx); // take throws
    expect(rx.sinkMessage(5, sink, false)).toBe(false);
    expect(rx.sinkMessage(5, sink, false)).toBe(false); // nothing new: nothing written
    rx.push(new Uint8Array([3]));
    expect(rx.sinkMessage(5, sink, false)).toBe(false);
    rx.push(new Uint8Array([4, 5]));
    expect(rx.sinkMessage(5, sink, false)).toBe(true);
    expect(calls).toEqual([["write", 0, [1, 2]], ["write", 2, [3]], ["write", 3, [4, 5]]]);
  });

  test("another sink, another size, or takeMessage while a message is being sunk throws", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1, 2]));
    const { sink } = logged(rx);
    expect(rx.sinkMessage(5, sink, false)).toBe(false);
    expect(() => rx.sinkMessage(5, logged(rx).sink, false)).toThrow("sunk while another is being filled");
    expect(() => rx.sinkMessage(6, sink, false)).toThrow("sunk while another is being filled");
    expect(() => rx.takeMessage(5, (k) => new Uint8Array(k))).toThrow("asked while another is being filled");
    rx.push(new Uint8Array([3, 4, 5, 6]));
    expect(rx.sinkMessage(5, sink, false)).toBe(true);
    // Done: the next message may go to any sink.
    const other = logged(rx);
    expect(rx.sinkMessage(1, other.sink, false)).toBe(true);
    expect(other.calls).toEqual([["write", 0, [6]]]);
  });

  test("bytes pushed while a message is being sunk go first, and only then is the socket read", () => {
    const rx = new ReceiveBuffer();
    rx.push(new Uint8Array([1]));
    const { sink, calls } = logged(rx, (_at, max) => Math.min(max, 3)); // take checks rx.bytes === 0
    expect(rx.sinkMessage(8, sink, false)).toBe(false);
    rx.push(new Uint8Array([2, 3]));
    rx.push(new Uint8Array([4]));
    expect(rx.sinkMessage(8, sink, true)).toBe(true);
    expect(calls).toEqual([["write", 0, [1]], ["write", 1, [2, 3]], ["write", 3, [4]], ["take", 4, 4, 0], ["take", 7, 1, 0]]);
  });
});
