// Peer protocol versions against a real secondary: a primary that speaks version 1 only is served
// version 1 frames (no cache epoch in HANDSHAKE_REPLY), one that speaks 2 gets the secondary's
// cache epoch after its main process flushed the component (docs/protocol.md): the same id at the
// next connection, none when that flush fails and a new one after. At
// version 3 the secondary marks its copy incomplete at the handshake and clears the mark on an
// IN_SYNC that counts every error reply it sent. At version 4 it answers a DIGEST READ with the
// range's SHA-256. A primary refuses a CHALLENGE naming a version it did not offer.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import type { Socket } from "bun";
import { rmSync, writeFileSync } from "node:fs";
import { bunPeerPrimitives } from "../../src/io/peer-primitives.ts";
import { FLAG_COPY_INCOMPLETE } from "../../src/core/metadata.ts";
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

type RawPrimary = Awaited<ReturnType<typeof rawPrimary>>;

/** A pair whose node b runs as secondary, and b's metadata. */
interface Sizes {
  datasize: number;
  extentsize: number;
}

async function secondaryUp(env: Record<string, string> = {}): Promise<{ pair: Pair; meta: Sizes }> {
  const pair = Pair.create(h, { data_bytes: 4 * MiB });
  pair.reconfigure({ env: { [pair.b.name]: env } });
  await pair.createOn(pair.b);
  await pair.start(pair.b);
  await pair.role(pair.b, "secondary");
  const { datasize, extentsize } = await pair.dump(pair.b);
  return { pair, meta: { datasize, extentsize } };
}

/** HELLO offering versions 1..`version` (the secondary must choose `version`), AUTH without a
 * secret and a HANDSHAKE with these counters; the secondary's HANDSHAKE_REPLY. */
async function handshake(
  p: RawPrimary, pair: Pair, meta: Sizes, version: number, resuid: bigint, localcnt: bigint,
): Promise<Extract<Frame, { kind: "handshake-reply" }>> {
  p.send({ kind: "hello", version_min: 1, version_max: version, client_nonce: randomBytes(32), resource: pair.name, node: pair.a.name });
  expect(await p.next("challenge")).toMatchObject({ version });
  p.send({ kind: "auth", auth: { state: "no-secret" } });
  p.send({
    kind: "handshake", resuid, localcnt, remotecnt: 0n, virgin: false,
    datasize_bytes: meta.datasize, extentsize_bytes: meta.extentsize, replication: "fullsync",
  });
  return (await p.next("handshake-reply")) as Extract<Frame, { kind: "handshake-reply" }>;
}

describe("peer protocol versions", () => {
  test("a version 1 primary gets no cache epoch; a version 2 primary gets one, and may not send IN_SYNC", async () => {
    const { pair, meta } = await secondaryUp();
    const resuid = BigInt(`0x${randomBytes(8).toString("hex")}`) | 1n;
    for (const version_max of [1, 2]) {
      const p = await rawPrimary(pair.b.port);
      try {
        const reply = await handshake(p, pair, meta, version_max, resuid, 0n);
        expect(reply.cache_epoch?.length ?? null).toEqual(version_max === 1 ? null : 16);
        // A frame the negotiated version does not define ends the connection (protocol.md §9).
        if (version_max === 2) p.send({ kind: "in-sync", replies_failed: 0 });
      } finally {
        if (version_max === 2) await pair.daemon(pair.b).waitLog("Disconnected from the primary: IN_SYNC at protocol version 2");
        p.close();
      }
      await pair.daemon(pair.b).waitLog("Disconnected from the primary");
    }
  }, 60_000);

  test("the cache epoch: the same at the next connection; none when the main process's flush fails, a new one after", async () => {
    const rules = h.path("faults-b");
    const { pair, meta } = await secondaryUp({ HAST_FAULT_INJECT_FILE: rules });
    const resuid = BigInt(`0x${randomBytes(8).toString("hex")}`) | 1n;
    let connections = 0;
    const connection = async (then: (p: RawPrimary) => Promise<void> = async () => {}): Promise<Uint8Array | null> => {
      const p = await rawPrimary(pair.b.port);
      connections++;
      try {
        const reply = await handshake(p, pair, meta, 4, resuid, 1n);
        if (reply.bitmap_bytes > 0) await p.next("bitmap");
        await then(p);
        return reply.cache_epoch;
      } finally {
        p.close();
        await pair.daemon(pair.b).waitLogTimes("Disconnected from the primary", connections);
      }
    };
    const first = await connection();
    expect(first).toHaveLength(16);
    // A FLUSH failing in the worker is acted on there (what it covered stays marked, the primary
    // is told): the epoch stays.
    const second = await connection(async (p) => {
      p.send({ kind: "write", seq: 1, offset: 0, length: 4096, memsync: false, sync: false, data: randomBytes(4096) });
      expect(await p.next("reply")).toMatchObject({ seq: 1, error: "OK" });
      writeFileSync(rules, `fdatasync:${pair.b.name}.img:EIO:1`);
      p.send({ kind: "flush", seq: 2 });
      expect(await p.next("reply")).toMatchObject({ seq: 2, error: "EIO" });
      rmSync(rules);
    });
    expect(second).toEqual(first);
    // The main process's flush before the next worker fails, as it does on a write-back error a
    // worker took and died with: no epoch. The rule goes before that worker flushes.
    writeFileSync(rules, `fdatasync:${pair.b.name}.img:EIO:1`);
    expect(await connection(async () => rmSync(rules))).toBeNull();
    await pair.daemon(pair.b).waitLog("Flush before the handshake reply failed (fdatasync");
    // The copy the primary completes after that failure acts on it: this node can be promoted
    // without the failure counting against it (else its start would mark it incomplete).
    const inSync = async (p: RawPrimary) => {
      p.send({ kind: "in-sync", replies_failed: 0 });
      p.send({ kind: "flush", seq: 1 });
      expect(await p.next("reply")).toMatchObject({ seq: 1, error: "OK" });
    };
    const fourth = await connection(inSync);
    expect(fourth).toHaveLength(16);
    expect(fourth).not.toEqual(first);
    expect(await connection(inSync)).toEqual(fourth);
    await pair.daemon(pair.b).waitLogTimes("This node's copy is complete: the primary finished synchronizing it.", 2);
    await pair.role(pair.b, "primary");
    expect(pair.daemon(pair.b).log).not.toContain("Flush before the primary worker starts failed");
  }, 60_000);

  test("version 4: a DIGEST READ is answered with the range's SHA-256; at version 3 it ends the connection", async () => {
    const { pair, meta } = await secondaryUp();
    const data = randomBytes(MiB);
    for (const version of [4, 3]) {
      const p = await rawPrimary(pair.b.port);
      try {
        const reply = await handshake(p, pair, meta, version, 77n, 1n);
        if (reply.bitmap_bytes > 0) await p.next("bitmap"); // one frame for 4 MiB
        p.send({ kind: "write", seq: 1, offset: MiB, length: MiB, memsync: false, sync: true, data });
        expect(await p.next("reply")).toMatchObject({ seq: 1, error: "OK" });
        p.send({ kind: "read", seq: 2, offset: MiB, length: MiB, sync: true, digest: true });
        if (version === 3) continue;
        const digest = await p.next("reply");
        expect(digest).toMatchObject({ seq: 2, error: "OK" });
        expect(Buffer.from((digest as Extract<Frame, { kind: "reply" }>).data).toString("hex")).toBe(createHash("sha256").update(data).digest("hex"));
      } finally {
        if (version === 3) await pair.daemon(pair.b).waitLog("Disconnected from the primary: DIGEST READ at protocol version 3");
        p.close();
      }
      await pair.daemon(pair.b).waitLog("Disconnected from the primary");
    }
  }, 60_000);

  test("a primary refuses a CHALLENGE naming a version it did not offer", async () => {
    const pair = Pair.create(h, { data_bytes: 4 * MiB });
    const decoder = new FrameDecoder(bunPeerPrimitives);
    const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });
    const offered: number[] = [];
    const fake = Bun.listen({
      hostname: "127.0.0.1", port: pair.b.port,
      socket: {
        data(socket, chunk) {
          decoder.push(chunk);
          for (let r = decoder.next(); r.kind === "frame"; r = decoder.next()) {
            if (r.frame.kind !== "hello") continue;
            offered.push(r.frame.version_max);
            const parts = encoder.encode({ kind: "challenge", version: r.frame.version_max + 1, server_nonce: randomBytes(32), auth: { state: "no-secret" } });
            socket.write(parts.head);
          }
        },
      },
    });
    try {
      await pair.createOn(pair.a);
      await pair.start(pair.a);
      await pair.role(pair.a, "primary");
      await pair.daemon(pair.a).waitLog("chose protocol version 5, outside the 1-4 offered");
      expect(offered[0]).toBe(4);
    } finally {
      fake.stop(true);
    }
  }, 60_000);

  test("version 3: the copy is incomplete from the handshake until an IN_SYNC counting every error reply", async () => {
    const { pair, meta } = await secondaryUp();
    const incomplete = async () => ((await pair.dump(pair.b)).flags & FLAG_COPY_INCOMPLETE) !== 0;
    expect(await incomplete()).toBe(false);
    const p = await rawPrimary(pair.b.port);
    try {
      expect(await handshake(p, pair, meta, 3, 77n, 1n)).toMatchObject({ syncsrc: "primary" });
      await p.next("bitmap"); // a re-created secondary asks for everything
      expect(await incomplete()).toBe(true);
      // One good write, one the secondary refuses (past the end): one error reply.
      p.send({ kind: "write", seq: 1, offset: 0, length: 4096, memsync: false, sync: true, data: randomBytes(4096) });
      expect(await p.next("reply")).toMatchObject({ seq: 1, error: "OK" });
      p.send({ kind: "write", seq: 2, offset: meta.datasize, length: 4096, memsync: false, sync: false, data: randomBytes(4096) });
      expect(await p.next("reply")).toMatchObject({ seq: 2, error: "EINVAL" });
      // An IN_SYNC that missed that error changes nothing; one that counts it completes the copy.
      // The FLUSH behind each is answered after the IN_SYNC was taken.
      for (const [replies_failed, seq, still] of [[0, 3, true], [1, 4, false]] as const) {
        p.send({ kind: "in-sync", replies_failed });
        p.send({ kind: "flush", seq });
        expect(await p.next("reply")).toMatchObject({ seq, error: "OK" });
        expect(await incomplete()).toBe(still);
      }
    } finally {
      p.close();
    }
    await pair.daemon(pair.b).waitLog("This node's copy is complete: the primary finished synchronizing it.");
  }, 60_000);
});
