// The floor under every replicated figure on this machine: what two Bun processes get from TCP on
// loopback with nothing else to do, measured in the same run as the targets. A replicated write
// waits for one round trip more than an unreplicated one; a resync is a one-way stream between two
// such processes with a disk read before it and a disk write after it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { PING_BYTES, PONG_BYTES, STREAM_BYTES } from "../loopback-peer.ts";
import { waitFor } from "./procs.ts";
import type { Context } from "./suite.ts";

export interface LoopbackResult {
  /** A PING_BYTES message and a PONG_BYTES answer, one at a time. */
  rtt_p50_us: number;
  rtt_p99_us: number;
  /** STREAM_BYTES sent in 1 MiB writes, until the far end has them all. */
  stream_mib_s: number;
}

const ROUND_TRIPS = 5000;
const WARMUP_ROUND_TRIPS = 500;
const WRITE_BYTES = 1 << 20;
const MEASURE_TIMEOUT_MS = 60_000;
const PEER = new URL("../loopback-peer.ts", import.meta.url).pathname;

export async function measureLoopback(ctx: Context, dir: string): Promise<LoopbackResult> {
  const log_path = join(dir, "loopback-peer.log");
  const peer = ctx.procs.start("loopback peer", [process.execPath, PEER], { log_path });
  try {
    const port = await waitFor("the loopback peer's port", () => Number(readFileSync(`${log_path}.out`, "utf8").trim()) || 0, 10_000);
    const rtt = await roundTrips(port);
    const stream_mib_s = await stream(port);
    const r = { rtt_p50_us: rtt.p50, rtt_p99_us: rtt.p99, stream_mib_s };
    ctx.log(`  loopback floor (two Bun processes): round trip p50 ${r.rtt_p50_us.toFixed(0)} us, p99 ${r.rtt_p99_us.toFixed(0)} us; ` +
      `stream ${r.stream_mib_s.toFixed(0)} MiB/s`);
    return r;
  } finally {
    await ctx.procs.stop(peer);
  }
}

/** Connects, sends the mode byte, and resolves with what `run` resolves, or rejects after the timeout. */
async function session<T>(port: number, mode: "p" | "s", run: (s: Socket<undefined>, on: Handlers) => Promise<T>): Promise<T> {
  const on: Handlers = { data: () => undefined, drain: () => undefined, closed: () => undefined };
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data: (_s, chunk) => on.data(chunk.length),
      drain: () => on.drain(),
      close: () => on.closed(),
      error: () => on.closed(),
    },
  });
  socket.setNoDelay(true);
  socket.write(mode);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`loopback ${mode === "p" ? "round trips" : "stream"}: no answer within ${MEASURE_TIMEOUT_MS} ms`)), MEASURE_TIMEOUT_MS);
  });
  const closed = new Promise<never>((_, reject) => {
    on.closed = () => reject(new Error("loopback peer closed the connection"));
  });
  try {
    return await Promise.race([run(socket, on), timeout, closed]);
  } finally {
    clearTimeout(timer);
    on.closed = () => undefined;
    socket.end();
  }
}

interface Handlers {
  data(bytes: number): void;
  drain(): void;
  closed(): void;
}

function roundTrips(port: number): Promise<{ p50: number; p99: number }> {
  return session(port, "p", (socket, on) => new Promise((resolve) => {
    const ping = new Uint8Array(PING_BYTES);
    const times: number[] = [];
    let got = 0;
    let sent_at = 0;
    const send = () => {
      sent_at = performance.now();
      socket.write(ping);
    };
    on.data = (bytes) => {
      got += bytes;
      if (got < PONG_BYTES) return;
      got -= PONG_BYTES;
      times.push(performance.now() - sent_at);
      if (times.length < WARMUP_ROUND_TRIPS + ROUND_TRIPS) return send();
      const measured = times.slice(WARMUP_ROUND_TRIPS).sort((a, b) => a - b);
      resolve({ p50: measured[Math.floor(ROUND_TRIPS * 0.5)]! * 1000, p99: measured[Math.floor(ROUND_TRIPS * 0.99)]! * 1000 });
    };
    send();
  }));
}

function stream(port: number): Promise<number> {
  return session(port, "s", (socket, on) => new Promise((resolve) => {
    const chunk = crypto.getRandomValues(new Uint8Array(65536));
    const buf = new Uint8Array(WRITE_BYTES);
    for (let at = 0; at < WRITE_BYTES; at += chunk.length) buf.set(chunk, at);
    const started = performance.now();
    let sent = 0;
    let at = 0;
    on.drain = () => {
      while (sent < STREAM_BYTES) {
        const n = socket.write(buf.subarray(at));
        if (n <= 0) return; // the rest when the socket drains
        at += n;
        if (at === WRITE_BYTES) {
          at = 0;
          sent += WRITE_BYTES;
        }
      }
    };
    on.data = () => resolve(STREAM_BYTES / 2 ** 20 / ((performance.now() - started) / 1000));
    on.drain();
  }));
}
