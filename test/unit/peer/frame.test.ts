import { describe, expect, test } from "bun:test";
import { FrameDecoder } from "../../../src/wire/peer/decoder.ts";
import { FrameEncoder } from "../../../src/wire/peer/frame.ts";
import { HEADER_BYTES } from "../../../src/wire/peer/constants.ts";
import type { ChecksumKind, CompressionKind, Frame } from "../../../src/wire/peer/types.ts";
import { decodeAll, decodeOne, encode, patterned, prims, sampleFrames } from "./helpers.ts";

const CHECKSUMS: ChecksumKind[] = ["none", "crc32", "sha256"];
const COMPRESSIONS: CompressionKind[] = ["none", "hole", "zstd"];

describe("peer frames round trip", () => {
  for (const checksum of CHECKSUMS) {
    for (const compression of COMPRESSIONS) {
      test(`every frame kind, checksum=${checksum} compression=${compression}`, () => {
        const frames = sampleFrames();
        const kinds = new Set(frames.map((f) => f.kind));
        expect(kinds.size).toBe(14);
        for (const frame of frames) {
          const result = decodeOne(encode(frame, { checksum, compression }));
          expect(result).toEqual({ kind: "frame", frame });
        }
      });
    }
  }

  test("a stream delivered byte by byte yields the same frames as in one chunk", () => {
    const frames = sampleFrames();
    const stream = concat(frames.map((f) => encode(f, { checksum: "crc32", compression: "zstd" })));
    const whole = decodeAll(stream);
    const bytewise = decodeAll(stream, 1);
    const odd = decodeAll(stream, 7919);
    expect(whole.map((r) => r.kind)).toEqual(frames.map(() => "frame"));
    expect(bytewise).toEqual(whole);
    expect(odd).toEqual(whole);
    expect(whole.map((r) => (r.kind === "frame" ? r.frame : null))).toEqual(frames);
  });

  test("an all-zero WRITE goes as a hole and decodes as one: no data, no buffer of zeroes", () => {
    const zero = { kind: "write", seq: 3, offset: 1 << 20, length: 1 << 20, memsync: false, sync: true } as const;
    const bytes = encode({ ...zero, data: new Uint8Array(1 << 20) }, { checksum: "crc32", compression: "hole" });
    expect(bytes.length).toBe(HEADER_BYTES);
    const hole = { ...zero, data: new Uint8Array(0), hole: true } as const;
    expect(decodeOne(bytes)).toEqual({ kind: "frame", frame: hole });
    expect(encode(hole)).toEqual(bytes); // forwarded as it came
    expect(() => encode({ ...hole, data: new Uint8Array(512) })).toThrow("WRITE hole with 512 data bytes");
    // Without hole compression the zeroes are sent, and arrive as data.
    const plain = decodeOne(encode({ ...zero, data: new Uint8Array(1 << 20) }, { checksum: "none", compression: "none" }));
    expect(plain.kind === "frame" && plain.frame.kind === "write" && plain.frame.hole === undefined && plain.frame.data.length === 1 << 20).toBe(true);
  });

  test("a payload inside one pushed chunk is returned without copying", () => {
    const data = patterned(4096);
    const bytes = encode({ kind: "write", seq: 1, offset: 0, length: 4096, memsync: false, sync: false, data });
    const decoder = new FrameDecoder(prims);
    decoder.push(bytes);
    const result = decoder.next();
    if (result.kind !== "frame" || result.frame.kind !== "write") throw new Error("expected a write frame");
    expect(result.frame.data.buffer).toBe(bytes.buffer);
    expect(result.frame.data.byteOffset).toBe(HEADER_BYTES);
    expect(decoder.next()).toEqual({ kind: "need-more" });
    expect(decoder.buffered_bytes).toBe(0);
  });

  test("copy_payloads: every payload lands in the consumer's buffer and each chunk is freed once consumed", () => {
    const data = [patterned(4096, 1), patterned(4096, 2)];
    const frames = data.map((d, i) => encode({ kind: "write", seq: i + 1, offset: i * 4096, length: 4096, memsync: false, sync: false, data: d }));
    const chunk = new Uint8Array(frames[0]!.length + frames[1]!.length);
    chunk.set(frames[0]!);
    chunk.set(frames[1]!, frames[0]!.length);
    const given: Uint8Array[] = [];
    const decoder = new FrameDecoder(prims, { copy_payloads: true, payload_alloc: (n) => (given.push(new Uint8Array(n)), given.at(-1)!) });
    decoder.push(chunk);
    for (let i = 0; i < 2; i++) {
      const result = decoder.next();
      if (result.kind !== "frame" || result.frame.kind !== "write") throw new Error("expected a write frame");
      expect(result.frame.data.buffer).toBe(given[i]!.buffer); // the consumer's buffer, not the chunk
      expect(result.frame.data).toEqual(data[i]!);
      // Headers are copied too: nothing was lent, so the chunk goes once consumed.
      expect(chunk.byteLength).toBe(i === 0 ? frames[0]!.length + frames[1]!.length : 0);
    }
    expect(decoder.next()).toEqual({ kind: "need-more" });
  });

  test("encoder returns head and body separately; body is the caller's data, uncopied", () => {
    const data = patterned(8192);
    const parts = new FrameEncoder(prims, { checksum: "sha256", compression: "none" }).encode({
      kind: "reply",
      seq: 3,
      error: "OK",
      received: false,
      data,
    });
    expect(parts.body).toBe(data);
    expect(parts.head.length).toBe(HEADER_BYTES + 32);
  });

  test("consumed chunks are let go while a frame is always pending (a steady stream)", () => {
    // Each pushed chunk ends inside a frame, so the decoder never runs empty: it once kept
    // every consumed chunk until 1024 had piled up (hundreds of MiB of socket reads on a secondary).
    const frame = encode({ kind: "write", seq: 1, offset: 0, length: 4096, memsync: false, sync: false, data: patterned(4096) });
    const stream = new Uint8Array(frame.length * 201);
    for (let i = 0; i < 201; i++) stream.set(frame, i * frame.length);
    const chunk_bytes = frame.length + 7; // never ends on a frame boundary within this stream
    const decoder = new FrameDecoder(prims);
    const refs: WeakRef<Uint8Array>[] = [];
    const feed = (at: number) => {
      const chunk = stream.slice(at, at + chunk_bytes); // a fresh buffer, like a socket read
      refs.push(new WeakRef(chunk));
      decoder.push(chunk);
      let frames = 0;
      while (decoder.next().kind === "frame") frames++;
      return frames;
    };
    let frames = 0;
    for (let at = 0; at + chunk_bytes < stream.length; at += chunk_bytes) frames += feed(at);
    expect(frames).toBeGreaterThan(100);
    Bun.gc(true);
    const alive = refs.slice(0, -2).filter((r) => r.deref() !== undefined).length;
    // A conservative stack scan may pin one or two; the decoder itself holds only the last chunk.
    expect(alive).toBeLessThan(refs.length / 10);
  });

  for (const pooled of [false, true]) {
    test(`a large payload is filled from queued reads behind the pushed bytes${pooled ? " (in the consumer's buffer)" : ""}`, () => {
      const data = patterned(256 * 1024, 7);
      const wire = new Uint8Array([
        ...encode({ kind: "write", seq: 1, offset: 0, length: data.length, memsync: true, sync: false, data }),
        ...encode({ kind: "keepalive" }),
      ]);
      let sent = 1000; // bytes "delivered by the event loop"; the rest sits "in the kernel"
      let limit = 100_000; // what the kernel holds so far
      const read = (into: Uint8Array) => {
        const n = Math.min(into.byteLength, limit - sent);
        into.set(wire.subarray(sent, sent + n));
        sent += n;
        return n;
      };
      const given: Uint8Array[] = [];
      const decoder = new FrameDecoder(prims, pooled ? { payload_alloc: (n) => (given.push(new Uint8Array(n)), given.at(-1)!) } : {});
      decoder.push(wire.slice(0, sent));
      expect(decoder.next(read).kind).toBe("need-more");
      expect(sent).toBe(limit); // took everything queued, nothing more
      limit = wire.length;
      const result = decoder.next(read);
      if (result.kind !== "frame" || result.frame.kind !== "write") throw new Error(`expected the write, got ${JSON.stringify(result)}`);
      expect(result.frame.data).toEqual(data);
      if (pooled) expect(given.length === 1 && result.frame.data.buffer === given[0]!.buffer).toBe(true);
      // The read stopped at the payload's end: the keepalive is still "in the kernel", next in line.
      expect(sent).toBe(wire.length - encode({ kind: "keepalive" }).length);
      decoder.push(wire.slice(sent));
      expect(decoder.next(read)).toEqual({ kind: "frame", frame: { kind: "keepalive" } });
      expect(decoder.next(read).kind).toBe("need-more");
    });
  }

  test("after a large payload, next(read, wait) reads the next header from the socket; after a small one, or without a wait, it does not", () => {
    const large = patterned(128 * 1024, 3);
    const frames: Frame[] = [
      { kind: "write", seq: 1, offset: 0, length: large.length, memsync: false, sync: true, data: large },
      { kind: "write", seq: 2, offset: 0, length: large.length, memsync: false, sync: true, data: large },
      { kind: "write", seq: 3, offset: 0, length: 4096, memsync: false, sync: false, data: patterned(4096) },
      { kind: "keepalive" },
    ];
    const wire = Buffer.concat(frames.map((f) => encode(f)));
    let at = 0; // the stream up to `at` was delivered or read
    const waits: number[] = [];
    const read = (into: Uint8Array, wait_us: number) => {
      waits.push(wait_us);
      const n = Math.min(into.byteLength, wire.length - at);
      into.set(wire.subarray(at, at + n));
      at += n;
      return n;
    };
    const decoder = new FrameDecoder(prims);
    const first = encode(frames[0]!).length;
    decoder.push(wire.slice(0, first));
    at = first;
    expect(decoder.next(read, 250).kind).toBe("frame"); // the first frame was pushed whole
    expect(decoder.streaming).toBe(true);
    expect(decoder.next(read).kind).toBe("need-more"); // no wait given: no read
    expect(waits).toEqual([]);
    const second = decoder.next(read, 250);
    expect(second.kind === "frame" && second.frame.kind === "write" && second.frame.seq === 2).toBe(true);
    expect(waits[0]).toBe(0); // the header was queued: read without waiting
    // The third header is pulled too, but its small payload waits for the event loop.
    expect(decoder.next(read, 250).kind).toBe("need-more");
    expect(decoder.streaming).toBe(false);
    const reads = waits.length;
    decoder.push(wire.slice(at));
    const third = decoder.next(read, 250);
    expect(third.kind === "frame" && third.frame.kind === "write" && third.frame.seq === 3).toBe(true);
    expect(decoder.next(read, 250)).toEqual({ kind: "frame", frame: { kind: "keepalive" } });
    expect(decoder.next(read, 250).kind).toBe("need-more"); // after small frames: no read
    expect(waits.length).toBe(reads);
  });

  test("small payloads wait for the event loop: no queued read", () => {
    const wire = encode({ kind: "write", seq: 1, offset: 0, length: 4096, memsync: false, sync: false, data: patterned(4096) });
    const decoder = new FrameDecoder(prims);
    decoder.push(wire.slice(0, 100));
    expect(decoder.next(() => { throw new Error("read for a small payload"); }).kind).toBe("need-more");
    decoder.push(wire.slice(100));
    expect(decoder.next().kind).toBe("frame");
  });

  test("push before draining a complete frame is a caller bug and throws", () => {
    const decoder = new FrameDecoder(prims);
    decoder.push(encode({ kind: "keepalive" }));
    expect(() => decoder.push(encode({ kind: "keepalive" }))).toThrow("drain next() first");
  });

  test("encoder refuses frames its own decoder would reject", () => {
    const encoder = new FrameEncoder(prims, { checksum: "none", compression: "none" });
    const bad: Frame[] = [
      { kind: "read", seq: 0, offset: 0, length: 4096, sync: false },
      { kind: "read", seq: 1, offset: 0, length: 0, sync: false },
      { kind: "write", seq: 1, offset: 0, length: 5, memsync: false, sync: false, data: new Uint8Array(4) },
      { kind: "write", seq: 1, offset: 0, length: 4, memsync: true, sync: true, data: new Uint8Array(4) },
      { kind: "reply", seq: 1, error: "EIO", received: true, data: new Uint8Array(0) },
      { kind: "hello", version_min: 1, version_max: 1, client_nonce: new Uint8Array(32), resource: "", node: "a" },
      { kind: "hello", version_min: 1, version_max: 1, client_nonce: new Uint8Array(32), resource: "a\nb", node: "a" },
      { kind: "error", code: "INTERNAL", busy: true, message: "x" },
    ];
    for (const frame of bad) expect(() => encoder.encode(frame)).toThrow();
    // Those breaking a header rule are caught by the encoder's own check of what it sends.
    for (const frame of [bad[0]!, bad[1]!, bad[3]!, bad[4]!]) expect(() => encoder.encode(frame)).toThrow("encoder produced an invalid frame");
  });

  test("error messages are made one line and truncated to 1024 bytes at a character boundary", () => {
    const message = "line one\nline two! " + "é".repeat(600); // 19 ASCII bytes, then 2-byte characters
    const result = decodeOne(encode({ kind: "error", code: "INTERNAL", busy: false, message }));
    if (result.kind !== "frame" || result.frame.kind !== "error") throw new Error("expected an error frame");
    expect(result.frame.message.startsWith("line one line two! é")).toBe(true);
    expect(new TextEncoder().encode(result.frame.message).length).toBe(1023);
  });
});

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
