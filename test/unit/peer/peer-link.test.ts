// PeerLink's sending side over a recording stream: small frames are one write each (or, corked,
// one write per tick), bulk data is written as the caller's buffer, order is kept, and a close
// sends what is still corked first.
import { describe, expect, test } from "bun:test";
import type { ByteStream } from "../../../src/io/byte-stream.ts";
import { CORK_REPLIES_BYTES, CORK_REQUESTS_BYTES, PeerLink, type PeerLinkOptions } from "../../../src/io/peer-link.ts";
import type { Frame } from "../../../src/wire/peer/types.ts";
import { decodeAll, patterned, prims, RAW } from "./helpers.ts";

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
