#!/usr/bin/env bun
// The far end of the loopback floor (bench/lib/loopback.ts): a second Bun process on 127.0.0.1.
// A connection's first byte picks what it does: "p" answers every PING_BYTES received with
// PONG_BYTES (a round trip, as a replicated write's is), "s" swallows STREAM_BYTES and then
// answers one byte (a one-way stream, as a resync's is). Prints its port, then runs until killed.
export const PING_BYTES = 4096;
export const PONG_BYTES = 32;
export const STREAM_BYTES = 1 << 30;

interface Conn {
  mode: "p" | "s" | null;
  got: number;
}

if (import.meta.main) {
  const pong = new Uint8Array(PONG_BYTES);
  const server = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.setNoDelay(true);
        s.data = { mode: null, got: 0 };
      },
      data(s, chunk) {
        const c = s.data;
        let n = chunk.length;
        if (c.mode === null) {
          c.mode = chunk[0] === 0x70 ? "p" : "s";
          n--;
        }
        c.got += n;
        if (c.mode === "p") {
          for (; c.got >= PING_BYTES; c.got -= PING_BYTES) s.write(pong);
        } else if (c.got >= STREAM_BYTES) {
          s.write(pong.subarray(0, 1));
          s.flush();
        }
      },
    },
  });
  console.log(server.port);
}
