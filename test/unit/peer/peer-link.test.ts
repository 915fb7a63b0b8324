// PeerLink's sending side over a recording stream: small frames are one write each (or, corked,
// one write per tick), bulk data is written as the caller's buffer, order is kept, and a close
// sends what is still corked first.
import { describe, expect, test } from "bun:test";
import type { ByteStream, StreamHandlers } from "../../../src/io/byte-stream.ts";
import { HEADER_BYTES } from "../../../src/wire/peer/constants.ts";
import { CORK_REPLIES_BYTES, CORK_REQUESTS_BYTES, PeerLink, type PeerLinkOptions } from "../../../src/io/peer-link.ts";
import type { Frame } from "../../../src/wire/peer/types.ts";
import { decodeAll, encode, patterned, prims, RAW } from "./helpers.ts";

interface Recorder {
  /** What the stream was given, copied at write() time as a real stream does with what it keeps. */
  writes: Uint8Array[];
  /** The buffers themselves, to tell a copy from the caller's own buffer. */
  given: Uint8Array[];
  closed: boolean;
}

async function recordingLink(opts: PeerLinkOptions): Promise<{ link: PeerLink; rec: Recorder }> {
  const rec: Recorder = { writes: [], given: [], closed: false };
  const stream: ByteStream = {
    write: (bytes) => {
      rec.writes.push(bytes.slice());
      rec.given.push(bytes);
    },
    queued_bytes: 0,
    remote: "test",
    close: () => (rec.closed = true),
  };
  const link = await PeerLink.over(async () => stream, prims, RAW, opts);
  link.start(() => {}, () => {});
  return { link, rec };
}

const reply = (seq: number): Frame => ({ kind: "reply", seq, error: "OK", received: false, data: new Uint8Array(0) });

function framesOf(writes: Uint8Array[]): Frame[] {
  const all = new Uint8Array(writes.reduce((n, w) => n + w.length, 0));
  let at = 0;
  for (const w of writes) {
    all.set(w, at);
    at += w.length;
  }
  return decodeAll(all).map((r) => {
    if (r.kind !== "frame") throw new Error(`undecodable output: ${JSON.stringify(r)}`);
    return r.frame;
  });
}

describe("PeerLink sending", () => {
  test("without cork, each small frame is one write of header and body", async () => {
    const { link, rec } = await recordingLink({});
    const data = patterned(4096);
    link.send({ kind: "write", seq: 1, offset: 0, length: data.length, memsync: false, sync: false, data });
    link.send(reply(2));
    expect(rec.writes.length).toBe(2);
    const frames = framesOf(rec.writes);
    expect(frames.map((f) => f.kind)).toEqual(["write", "reply"]);
    expect((frames[0] as Extract<Frame, { kind: "write" }>).data).toEqual(data);
  });

  test("with cork, the frames of one tick go out in one write at its end, in order", async () => {
    const { link, rec } = await recordingLink({ cork_bytes: CORK_REPLIES_BYTES });
    for (let seq = 1; seq <= 32; seq++) link.send(reply(seq));
    expect(rec.writes.length).toBe(0);
    expect(link.queued_bytes).toBeGreaterThan(0);
    await Promise.resolve();
    expect(rec.writes.length).toBe(1);
    expect(framesOf(rec.writes).map((f) => (f as Extract<Frame, { kind: "reply" }>).seq)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
  });

  test("a request cork writes a burst out as each 48 KiB gathers, the rest at the end of the tick", async () => {
    const { link, rec } = await recordingLink({ cork_bytes: CORK_REQUESTS_BYTES });
    const data = patterned(4096, 5);
    for (let seq = 1; seq <= 32; seq++) link.send({ kind: "write", seq, offset: seq * 4096, length: 4096, memsync: true, sync: false, data });
    const in_tick = rec.writes.length;
    expect(in_tick).toBeGreaterThanOrEqual(2); // the secondary gets the first ones before the tick ends
    expect(rec.writes.every((w) => w.length <= CORK_REQUESTS_BYTES)).toBe(true);
    await Promise.resolve();
    expect(rec.writes.length).toBe(in_tick + 1);
    const frames = framesOf(rec.writes) as Extract<Frame, { kind: "write" }>[];
    expect(frames.map((f) => f.seq)).toEqual(Array.from({ length: 32 }, (_, i) => i + 1));
    expect(frames.every((f) => f.data.every((b, i) => b === data[i]))).toBe(true);
  });

  test("bulk data is written as the caller's buffer, after what was corked before it", async () => {
    const { link, rec } = await recordingLink({ cork_bytes: CORK_REPLIES_BYTES });
    const big = patterned(1 << 20, 7);
    link.send(reply(1));
    link.send({ kind: "reply", seq: 2, error: "OK", received: false, data: big });
    link.send(reply(3));
    await Promise.resolve();
    expect(rec.given.some((w) => w === big)).toBe(true);
    const frames = framesOf(rec.writes) as Extract<Frame, { kind: "reply" }>[];
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3]);
    expect(frames[1]!.data).toEqual(big);
  });

  test("more than a cork's worth in one tick is written as it fills, nothing lost", async () => {
    const { link, rec } = await recordingLink({ cork_bytes: CORK_REPLIES_BYTES });
    const data = patterned(16 * 1024 - 100, 3);
    for (let seq = 1; seq <= 40; seq++) link.send({ kind: "reply", seq, error: "OK", received: false, data });
    await Promise.resolve();
    expect(rec.writes.length).toBeGreaterThan(1);
    expect(framesOf(rec.writes).map((f) => (f as Extract<Frame, { kind: "reply" }>).seq)).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });

  test("a link closed before a later start reports it to the new handlers, after the caller's turn", async () => {
    const { link } = await recordingLink({});
    link.close("the peer reset");
    const heard: string[] = [];
    link.start(() => {}, (reason) => heard.push(reason));
    expect(heard).toEqual([]);
    await Promise.resolve();
    expect(heard).toEqual(["the peer reset"]);
  });

  test("close sends what is corked before closing the stream", async () => {
    const { link, rec } = await recordingLink({ cork_bytes: CORK_REPLIES_BYTES });
    link.send({ kind: "error", code: "SPLIT_BRAIN", busy: false, message: "both changed" });
    link.close("refused");
    expect(rec.closed).toBe(true);
    expect(framesOf(rec.writes).map((f) => f.kind)).toEqual(["error"]);
    link.send(reply(9));
    await Promise.resolve();
    expect(rec.writes.length).toBe(1);
  });
});

describe("PeerLink receiving", () => {
  const large = (seq: number): Frame => {
    const data = patterned(128 * 1024, seq);
    return { kind: "write", seq, offset: 0, length: data.length, memsync: false, sync: true, data };
  };

  /** A link over a stream whose "kernel" holds `wire` behind the bytes delivered so far; it logs
   * frames, idle calls, reads (with their waits) and writes in the order they happen. */
  async function receivingLink(wire: Uint8Array, opts: PeerLinkOptions) {
    let handlers: StreamHandlers | null = null;
    let at = 0;
    const events: string[] = [];
    const stream: ByteStream = {
      write: () => events.push("write"),
      queued_bytes: 0,
      remote: "test",
      close: () => events.push("close"),
      read_queued: (into, wait_us) => {
        const n = Math.min(into.byteLength, wire.length - at);
        into.set(wire.subarray(at, at + n));
        at += n;
        if (into.byteLength === HEADER_BYTES) events.push(`pull ${wait_us}${n === 0 ? " (none)" : ""}`);
        return n;
      },
    };
    const link = await PeerLink.over(async (h) => ((handlers = h), stream), prims, RAW, opts);
    link.start((frame) => {
      events.push(`frame ${"seq" in frame ? frame.seq : frame.kind}`);
      if ("seq" in frame) link.send(reply(frame.seq)); // corked: out at onIdle's end at the latest
    }, (reason) => events.push(`closed: ${reason}`), () => events.push("idle"));
    /** One data event: the first `bytes` of what is left, as the event loop would deliver them. */
    const deliver = (bytes: number) => {
      const chunk = wire.slice(at, at + bytes);
      at += chunk.length;
      handlers!.data(chunk);
    };
    return { link, events, deliver, left: () => wire.length - at };
  }

  const wireOf = (frames: Frame[]) => Buffer.concat(frames.map((f) => encode(f)));

  test("without pull_streams, frames queued behind a data event wait for the next one; idle ends each event", async () => {
    const wire = wireOf([large(1), large(2)]);
    const { events, deliver, left } = await receivingLink(wire, { cork_bytes: CORK_REPLIES_BYTES });
    deliver(encode(large(1)).length);
    expect(events).toEqual(["frame 1", "idle"]);
    expect(left()).toBe(encode(large(2)).length);
  });

  test("with pull_streams, after a large frame the answers go out, then the next frame is read from the socket", async () => {
    const wire = wireOf([large(1), large(2), large(3), { kind: "keepalive" }]);
    const { events, deliver, left } = await receivingLink(wire, { cork_bytes: CORK_REPLIES_BYTES, pull_streams: true });
    deliver(encode(large(1)).length);
    // Each pull comes after the idle call and the write of its answers, and finds its header queued
    // (no wait); after the keepalive (no payload) the event loop takes over.
    expect(events).toEqual([
      "frame 1", "idle", "write", "pull 0",
      "frame 2", "idle", "write", "pull 0",
      "frame 3", "idle", "write", "pull 0",
      "frame keepalive", "idle",
    ]);
    expect(left()).toBe(0);
  });

  test("a pull that finds nothing hands over to the event loop; pulls per data event are bounded", async () => {
    const frames = Array.from({ length: 40 }, (_, i) => large(i + 1));
    const wire = wireOf(frames);
    const { events, deliver, left } = await receivingLink(wire, { cork_bytes: CORK_REPLIES_BYTES, pull_streams: true });
    deliver(encode(frames[0]!).length);
    const pulled = events.filter((e) => e.startsWith("pull")).length;
    expect(pulled).toBe(16);
    expect(events.filter((e) => e.startsWith("frame")).length).toBe(17);
    expect(events.at(-1)).toBe("idle");
    expect(left()).toBe(wire.length - 17 * encode(frames[0]!).length);

    const single = wireOf([large(1)]);
    const one = await receivingLink(single, { cork_bytes: CORK_REPLIES_BYTES, pull_streams: true });
    one.deliver(single.length);
    // Nothing queued: one wait of 250 µs, then the event loop.
    expect(one.events).toEqual(["frame 1", "idle", "write", "pull 0 (none)", "pull 250 (none)", "idle"]);
  });
});
