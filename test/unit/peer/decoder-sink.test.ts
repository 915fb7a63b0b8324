// FrameDecoder sink_for (a large plain WRITE's payload handed to the consumer's sink) and
// FrameEncoder.plainWriteHead (the head of a WRITE whose data the sender sends itself).
import { describe, expect, test } from "bun:test";
import { FrameDecoder } from "../../../src/wire/peer/decoder.ts";
import { Flag, HEADER_BYTES } from "../../../src/wire/peer/constants.ts";
import { FrameEncoder, frameBytes } from "../../../src/wire/peer/frame.ts";
import type { DecodeResult, Frame, PayloadEncoding, WriteHead } from "../../../src/wire/peer/types.ts";
import type { MessageSink, QueuedRead } from "../../../src/wire/receive-buffer.ts";
import { QUEUED_READ_MIN_BYTES, QUEUED_WAIT_US } from "../../../src/wire/receive-buffer.ts";
import { decodeAll, decodeOne, encode, patterned, prims, RAW } from "./helpers.ts";

const K128 = 128 * 1024;
const EMPTY = new Uint8Array(0);

function write(data: Uint8Array, fields: Partial<WriteHead> = {}): Extract<Frame, { kind: "write" }> {
  return { kind: "write", seq: 5, offset: 1 << 20, length: data.length, memsync: false, sync: true, ...fields, data };
}

function headOf(frame: Extract<Frame, { kind: "write" }>): WriteHead {
  const { data: _, ...head } = frame;
  return head;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** The payload goes through the sink: the socket is never read as a QueuedRead. */
const noRead: QueuedRead = () => {
  throw new Error("QueuedRead used for a sunk payload");
};

describe("FrameDecoder sink_for", () => {
  test("a large plain WRITE arriving in pieces lands in the sink in order; a small frame behind it still decodes", () => {
    const data = patterned(K128, 11);
    const small = write(patterned(4096, 12), { seq: 6, offset: 0, sync: false, memsync: true });
    const wire = concat(encode(write(data)), encode(small));
    const end = HEADER_BYTES + K128; // where the landed frame ends on the wire
    let sent = 1000; // delivered by the event loop or taken by the sink so far
    let limit = 50_000; // what the kernel holds so far
    const landed = new Uint8Array(K128);
    const log: [string, number, number, number?][] = [];
    const sink: MessageSink = {
      write: (bytes, at) => {
        log.push(["write", at, bytes.length]);
        landed.set(bytes, at);
      },
      take: (at, max, wait_us) => {
        log.push(["take", at, max, wait_us]);
        expect(at).toBe(sent - HEADER_BYTES); // the sink's offset is the stream's
        const n = Math.min(max, limit - sent);
        landed.set(wire.subarray(sent, sent + n), at);
        sent += n;
        return n;
      },
    };
    const heads: WriteHead[] = [];
    const decoder = new FrameDecoder(prims, { sink_for: (head) => (heads.push(head), sink) });
    decoder.push(wire.slice(0, sent));
    expect(decoder.next(noRead).kind).toBe("need-more");
    expect(heads).toEqual([{ kind: "write", seq: 5, offset: 1 << 20, length: K128, memsync: false, sync: true }]);
    // Held bytes, everything queued, then one wait that brings nothing ends the waiting.
    expect(log).toEqual([["write", 0, 956], ["take", 956, K128 - 956, 0], ["take", 49_956, K128 - 49_956, 0], ["take", 49_956, K128 - 49_956, QUEUED_WAIT_US]]);
    log.length = 0;
    decoder.push(wire.slice(sent, 90_000)); // the event loop's next read
    sent = 90_000;
    limit = 100_000;
    expect(decoder.next().kind).toBe("need-more"); // no QueuedRead: held bytes only, the socket is left alone
    expect(log).toEqual([["write", 49_956, 40_000]]);
    log.length = 0;
    expect(decoder.next(noRead).kind).toBe("need-more"); // the wait budget is spent: no wait
    expect(log).toEqual([["take", 89_956, K128 - 89_956, 0], ["take", 99_956, K128 - 99_956, 0]]);
    log.length = 0;
    limit = wire.length;
    expect(decoder.next(noRead)).toEqual({ kind: "frame", frame: { ...write(EMPTY), length: K128, landed: true } });
    expect(log).toEqual([["take", 99_956, K128 - 99_956, 0]]);
    expect(sent).toBe(end); // the take stopped at the payload's end
    expect(Buffer.from(landed).equals(data)).toBe(true);
    expect(decoder.streaming).toBe(true);
    decoder.push(wire.slice(end));
    expect(decoder.next(noRead)).toEqual({ kind: "frame", frame: small });
    expect(decoder.next(noRead).kind).toBe("need-more");
    expect(heads.length).toBe(1); // the small WRITE was not offered
  });

  test("sink_for returning null: the WRITE is decoded with its data as usual", () => {
    const frame = write(patterned(K128, 13), { memsync: true, sync: false });
    const wire = encode(frame);
    let sent = 1000;
    const read: QueuedRead = (into) => {
      const n = Math.min(into.length, wire.length - sent);
      into.set(wire.subarray(sent, sent + n));
      sent += n;
      return n;
    };
    const heads: WriteHead[] = [];
    const decoder = new FrameDecoder(prims, { sink_for: (head) => (heads.push(head), null) });
    decoder.push(wire.slice(0, sent));
    expect(decoder.next(read)).toEqual({ kind: "frame", frame });
    expect(heads).toEqual([{ kind: "write", seq: 5, offset: 1 << 20, length: K128, memsync: true, sync: false }]);
  });

  test("sink_for is asked once per frame: a refused payload filled over several calls is not offered again", () => {
    const frame = write(patterned(K128, 14));
    const wire = encode(frame);
    let sent = 1000;
    let limit = 40_000; // what the kernel holds so far
    const read: QueuedRead = (into) => {
      const n = Math.min(into.length, limit - sent);
      into.set(wire.subarray(sent, sent + n));
      sent += n;
      return n;
    };
    let asked = 0;
    // A consumer whose answer would change: a second offer would meet a half-filled buffer.
    const decoder = new FrameDecoder(prims, { sink_for: () => (asked++ === 0 ? null : { write: () => {}, take: () => 0 }) });
    decoder.push(wire.slice(0, sent));
    expect(decoder.next(read).kind).toBe("need-more");
    limit = wire.length;
    expect(decoder.next(read)).toEqual({ kind: "frame", frame });
    expect(asked).toBe(1);
  });

  /** Decodes `wire` (pushed whole) with a sink_for that must not be asked; the result must be the plain decoder's. */
  function notOffered(wire: Uint8Array, with_read = true): void {
    const read = with_read ? noRead : undefined;
    const decoder = new FrameDecoder(prims, {
      sink_for: (head) => {
        throw new Error(`sink_for asked for ${JSON.stringify(head)}`);
      },
    });
    decoder.push(wire);
    const results: DecodeResult[] = [];
    for (let r = decoder.next(read); r.kind !== "need-more"; r = decoder.next(read)) results.push(r);
    expect(results).toEqual([decodeOne(wire)]);
  }

  test("the sink is offered from QUEUED_READ_MIN_BYTES on, not below", () => {
    let asked = 0;
    const decoder = new FrameDecoder(prims, { sink_for: () => (asked++, null) });
    decoder.push(encode(write(patterned(QUEUED_READ_MIN_BYTES))));
    expect(decoder.next(noRead).kind).toBe("frame");
    expect(asked).toBe(1); // the boundary itself is offered
    notOffered(encode(write(patterned(QUEUED_READ_MIN_BYTES - 512))));
  });

  test("not offered for encoded payloads (checksum, zstd, hole), other frames, or without a QueuedRead", () => {
    const data = patterned(K128, 14);
    notOffered(encode(write(data), { checksum: "crc32", compression: "none" }));
    notOffered(encode(write(data), { checksum: "sha256", compression: "none" }));
    // Compresses by half: still over 64 KiB, so only the ZSTD flag keeps it from the sink.
    const half = patterned(2 * K128, 15).map((b) => b & 0x0f);
    const zstd = encode(write(half), { checksum: "none", compression: "zstd" });
    expect(new DataView(zstd.buffer).getUint16(6, true) & Flag.ZSTD).toBe(Flag.ZSTD);
    expect(zstd.length - HEADER_BYTES).toBeGreaterThanOrEqual(QUEUED_READ_MIN_BYTES);
    notOffered(zstd);
    const hole = encode(write(new Uint8Array(K128)), { checksum: "none", compression: "hole" });
    expect(hole.length).toBe(HEADER_BYTES);
    notOffered(hole);
    notOffered(encode({ kind: "reply", seq: 5, error: "OK", received: false, data }));
    notOffered(encode(write(data)), false); // the same frame with a read is offered (above)
  });
});

describe("FrameEncoder.plainWriteHead", () => {
  const head = headOf(write(patterned(K128)));

  test("null where the encoding must see the data: a checksum, or zstd", () => {
    for (const encoding of [
      { checksum: "crc32", compression: "none" },
      { checksum: "sha256", compression: "none" },
      { checksum: "crc32", compression: "hole" },
      { checksum: "none", compression: "zstd" },
    ] as PayloadEncoding[]) {
      expect(new FrameEncoder(prims, encoding).plainWriteHead(head)).toBeNull();
    }
  });

  test("RAW and hole: the head plus the data decodes as the encoder's own frame, and is its head byte for byte", () => {
    const HOLE: PayloadEncoding = { checksum: "none", compression: "hole" };
    for (const encoding of [RAW, HOLE]) {
      for (const fields of [{ memsync: true, sync: false }, { memsync: false, sync: true }]) {
        const frame = write(patterned(K128, 16), fields);
        const encoder = new FrameEncoder(prims, encoding);
        const plain = encoder.plainWriteHead(headOf(frame))!;
        const normal = encoder.encode(frame);
        expect(plain).toEqual(normal.head);
        expect(decodeAll(concat(plain, frame.data), 7919)).toEqual([{ kind: "frame", frame }]);
      }
    }
    // Under hole compression zeroes sent this way travel whole and arrive as data, not a hole.
    const zeroes = write(new Uint8Array(K128));
    const plain = new FrameEncoder(prims, HOLE).plainWriteHead(headOf(zeroes))!;
    expect(plain.length).toBe(HEADER_BYTES);
    expect(new DataView(plain.buffer).getUint16(6, true)).toBe(Flag.SYNC);
    expect(decodeAll(concat(plain, zeroes.data))).toEqual([{ kind: "frame", frame: zeroes }]);
    expect(frameBytes(new FrameEncoder(prims, HOLE).encode(zeroes)).length).toBe(HEADER_BYTES); // the encoder's: a hole
  });
});
