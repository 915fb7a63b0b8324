// Peer protocol versions against a real secondary: a primary that speaks version 1 only is served
// version 1 frames (no cache epoch in HANDSHAKE_REPLY), one that speaks 2 gets the secondary's
// cache epoch, its boot id, after the secondary flushed its component (docs/protocol.md).
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import type { Socket } from "bun";
import { bootId } from "../../src/io/cache-epoch.ts";
import { bunPeerPrimitives } from "../../src/io/peer-primitives.ts";
import { type Frame, FrameDecoder, FrameEncoder } from "../../src/wire/peer/index.ts";
import { Harness, MiB, Pair } from "./harness.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("repl-protocol");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const FRAME_WAIT_MS = 10_000;

/** A hand-driven primary: sends frames, takes the secondary's frames in order. */
async function rawPrimary(port: number): Promise<{ send(f: Frame): void; next(kind: Frame["kind"]): Promise<Frame>; close(): void }> {
  const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });
  const decoder = new FrameDecoder(bunPeerPrimitives);
  const frames: Frame[] = [];
  let wake: (() => void) | null = null;
  const socket: Socket<undefined> = await Bun.connect({
    hostname: "127.0.0.1", port,
    socket: {
      data(_s, chunk) {
        decoder.push(chunk);
        for (let r = decoder.next(); r.kind !== "need-more"; r = decoder.next()) {
          if (r.kind === "error") throw new Error(`secondary sent bad bytes: ${r.reason}`);
          frames.push(r.frame);
        }
        wake?.();
      },
    },
  });
  return {
    send(f) {
      const parts = encoder.encode(f);
      socket.write(parts.head);
      if (parts.body.length > 0) socket.write(parts.body);
    },
    async next(kind) {
      const deadline = Date.now() + FRAME_WAIT_MS;
      while (frames.length === 0) {
        if (Date.now() > deadline) throw new Error(`no ${kind} frame from the secondary within ${FRAME_WAIT_MS} ms`);
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 100);
        });
      }
      const f = frames.shift()!;
      if (f.kind !== kind) throw new Error(`expected ${kind}, got ${JSON.stringify(f)}`);
      return f;
    },
    close: () => socket.end(),
  };
}

describe("peer protocol versions", () => {
  test("a version 1 primary gets no cache epoch; a version 2 primary gets the boot id", async () => {
    const pair = Pair.create(h, { data_bytes: 4 * MiB });
    await pair.createOn(pair.b);
    await pair.start(pair.b);
    await pair.role(pair.b, "secondary");
    const meta = await pair.dump(pair.b);
    const resuid = BigInt(`0x${randomBytes(8).toString("hex")}`) | 1n;
    for (const version_max of [1, 2]) {
      const p = await rawPrimary(pair.b.port);
      try {
        p.send({ kind: "hello", version_min: 1, version_max, client_nonce: randomBytes(32), resource: pair.name, node: pair.a.name });
        const challenge = await p.next("challenge");
        expect(challenge.kind === "challenge" && challenge.version).toBe(version_max);
        p.send({ kind: "auth", auth: { state: "no-secret" } });
        p.send({
          kind: "handshake", resuid, localcnt: 0n, remotecnt: 0n, virgin: false,
          datasize_bytes: meta.datasize, extentsize_bytes: meta.extentsize, replication: "fullsync",
        });
        const reply = await p.next("handshake-reply");
        if (reply.kind !== "handshake-reply") throw new Error("unreachable");
        expect(reply.cache_epoch).toEqual(version_max === 1 ? null : bootId());
      } finally {
        p.close();
      }
      await pair.daemon(pair.b).waitLog("Disconnected from the primary");
    }
  }, 60_000);
});
