// The peer link's byte stream over a real loopback connection: what the kernel does not take at
// once is queued as a copy, so a caller that reuses its buffer right after write() (the NBD
// frontend recycling a payload) cannot change bytes still waiting to be sent. Payloads are often
// Node Buffers, whose slice() is a view: that once let queued WRITE data change before it left.
// A caller that vouches its bytes stay as they are until answered (`stable`) gets no copy.
import { expect, test } from "bun:test";
import type { Socket } from "bun";
import { connectTcp, type ByteStream } from "../../../src/io/byte-stream.ts";

const MiB = 1024 * 1024;
const ROUNDS = 32; // MiB written: far more than loopback socket buffers hold, so the last ones queue

/**
 * A stream to a listener that reads nothing until `receive()`, which then collects all ROUNDS MiB
 * in one array. `source`: through node:net with a bound source address, else Bun.connect.
 */
async function toPausedPeer(source: boolean, body: (stream: ByteStream, receive: () => Promise<Uint8Array>) => Promise<void>): Promise<void> {
  const received: Uint8Array[] = [];
  let peer: Socket<undefined> | null = null;
  const server = Bun.listen({
    hostname: "127.0.0.1", port: 0,
    socket: {
      binaryType: "uint8array",
      open: (s) => {
        peer = s;
        s.pause(); // let the sender's kernel buffers fill up
      },
      data: (_s, chunk) => {
        received.push(chunk);
      },
    },
  });
  let stream: ByteStream | null = null;
  const receive = async (): Promise<Uint8Array> => {
    const deadline = Date.now() + 10_000;
    while (!peer && Date.now() < deadline) await Bun.sleep(5);
    (peer as unknown as Socket<undefined>).resume();
    const total = () => received.reduce((n, c) => n + c.length, 0);
    while (total() < ROUNDS * MiB && Date.now() < deadline) await Bun.sleep(5);
    expect(total()).toBe(ROUNDS * MiB);
    const all = new Uint8Array(ROUNDS * MiB);
    let at = 0;
    for (const c of received) {
      all.set(c, at);
      at += c.length;
    }
    return all;
  };
  try {
    stream = await connectTcp(
      { host: "127.0.0.1", port: server.port, family: 4, source: source ? { host: "127.0.0.1", port: 0 } : null },
      { data: () => {}, close: () => {} }, 5_000,
    );
    await body(stream, receive);
  } finally {
    stream?.close();
    server.stop(true);
  }
}

const api = (source: boolean) => (source ? "node:net (source address)" : "Bun.connect");

for (const source of [false, true]) for (const kind of ["Uint8Array", "Buffer"] as const) {
  test(`${api(source)}: ${kind}s reused after write() arrive as they were written`, async () => {
    await toPausedPeer(source, async (stream, receive) => {
      // Bun's sockets expose their descriptor for reads of queued bytes; node:net's may buffer.
      expect(stream.read_queued !== undefined).toBe(!source);
      const buf = kind === "Buffer" ? Buffer.allocUnsafeSlow(MiB) : new Uint8Array(MiB);
      for (let i = 0; i < ROUNDS; i++) {
        buf.fill(i + 1);
        stream.write(buf);
      }
      buf.fill(0xff);
      const all = await receive();
      for (let i = 0; i < ROUNDS; i++) {
        const part = all.subarray(i * MiB, (i + 1) * MiB);
        expect(part.every((b) => b === i + 1)).toBe(true);
      }
    });
  }, 20_000);
}

for (const source of [false, true]) {
  test(`${api(source)}: stable writes are queued as they are, not copied`, async () => {
    await toPausedPeer(source, async (stream, receive) => {
      const bufs = Array.from({ length: ROUNDS }, (_, i) => new Uint8Array(MiB).fill(i + 1));
      for (const b of bufs) stream.write(b, true);
      bufs[ROUNDS - 1]!.fill(0xee); // still queued: what leaves is the buffer itself
      const all = await receive();
      expect(all[0]).toBe(1);
      expect(all[all.length - 1]).toBe(0xee);
      // The stream frees its own copies once written, never the caller's buffers.
      expect(bufs.map((b) => b.byteLength)).toEqual(bufs.map(() => MiB));
    });
  }, 20_000);
}
