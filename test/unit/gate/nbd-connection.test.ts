// NbdConnection over a stand-in socket: how replies leave. Writes the backend answers within the
// call (hastd's unreplicated writes) are answered in one socket write per batch of requests read,
// as replies completed in one tick are; not one write per request.
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { MemoryBackend } from "../../../src/gate/memory-backend.ts";
import { NbdConnection } from "../../../src/gate/nbd-connection.ts";
import { exportContext } from "../../../src/gate/nbd-server.ts";
import { NBD_CMD, REQUEST_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES } from "../../../src/wire/nbd.ts";
import { encodeRequestHeader, parseReplyHeader } from "../../../src/wire/nbd-transmission.ts";

/** A socket that takes everything and keeps each write apart. */
function standInSocket(): { socket: Socket<unknown>; writes: Uint8Array[] } {
  const writes: Uint8Array[] = [];
  const socket = {
    write(bytes: Uint8Array) {
      writes.push(bytes.slice());
      return bytes.byteLength;
    },
    timeout() {}, end() {}, pause() {}, resume() {}, flush() {},
  };
  return { socket: socket as unknown as Socket<unknown>, writes };
}

/** `count` 4 KiB WRITE requests with their payloads, in one buffer as a socket read brings them. */
function writeRequests(count: number): Uint8Array {
  const one = REQUEST_HEADER_BYTES + 4096;
  const out = new Uint8Array(count * one);
  for (let i = 0; i < count; i++) {
    out.set(encodeRequestHeader({ command: NBD_CMD.WRITE, flags: 0, cookie: BigInt(i + 1), offset: i * 4096, length: 4096 }), i * one);
    out.fill(i + 1, i * one + REQUEST_HEADER_BYTES, (i + 1) * one);
  }
  return out;
}

/** The cookie of each simple reply in `bytes`, negative for an error reply. */
function cookies(bytes: Uint8Array): bigint[] {
  const out: bigint[] = [];
  for (let at = 0; at < bytes.byteLength; at += SIMPLE_REPLY_HEADER_BYTES) {
    const parsed = parseReplyHeader(bytes.subarray(at, at + SIMPLE_REPLY_HEADER_BYTES));
    if (parsed.kind !== "ok" || parsed.value.kind !== "simple") throw new Error(`not a simple reply at ${at}`);
    out.push(parsed.value.error === 0 ? parsed.value.cookie : -parsed.value.cookie);
  }
  return out;
}

describe("NbdConnection replies", () => {
  test("writes answered within the call: one socket write for the batch read, in request order", () => {
    const backend = new MemoryBackend({ size_bytes: 1 << 20 });
    const { socket, writes } = standInSocket();
    const connection = new NbdConnection(socket, exportContext({ backend, export_name: "r0" }), "test");
    connection.openInTransmission();
    connection.onData(writeRequests(12));
    expect(writes.length).toBe(1);
    expect(cookies(writes[0]!)).toEqual(Array.from({ length: 12 }, (_, i) => BigInt(i + 1)));
    expect(backend.counts.write).toBe(12);
    for (let i = 0; i < 12; i++) expect(backend.bytes[i * 4096 + 4095]).toBe(i + 1);
  });

  test("with a write answered later, the tick's replies leave together once it is answered", async () => {
    const backend = new MemoryBackend({ size_bytes: 1 << 20 });
    backend.failNext("write", "EIO"); // the first write goes the promise way (and fails)
    const { socket, writes } = standInSocket();
    const connection = new NbdConnection(socket, exportContext({ backend, export_name: "r0" }), "test");
    connection.openInTransmission();
    connection.onData(writeRequests(4));
    // Three answered within the call; their replies wait for the end of the tick, with the fourth.
    expect(writes.length).toBe(0);
    await connection.settled();
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes.length).toBe(1);
    expect(cookies(writes[0]!)).toEqual([2n, 3n, 4n, -1n]);
  });
});
