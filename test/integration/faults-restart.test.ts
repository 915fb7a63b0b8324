// Crashes around a resynchronization (issue 6 item 3): the primary's or the secondary's hastd is
// SIGKILLed in the middle of a sync pass (slowed by a throttling proxy) and restarted; and a
// primary that wrote while its secondary was away is restarted (SIGTERM and SIGKILL) before the
// secondary comes back. Afterwards the pass completes, every acknowledged write (AckedWriter) is
// on both components, and the data areas are identical (sha256). After a restart with dirty
// extents, only those extents are copied.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { nbdFlush, nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { AckedWriter, faultSeed, Harness, MiB, Pair, waitFor } from "./harness.ts";
import { TcpProxy } from "./tcp-proxy.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("faults-restart");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const EXTENT_BYTES = 2 * MiB;
/** The degraded writes: extents 2..(2 + DIRTY_BYTES / EXTENT_BYTES). */
const DIRTY_OFFSET = 4 * MiB;

function count(log: string, re: RegExp): number {
  return [...log.matchAll(re)].length;
}

/**
 * A pair in sync whose secondary then stops (SIGTERM) while `dirty_bytes` are written from
 * DIRTY_OFFSET on; returns the writer (stopped) to check its acknowledged writes later.
 * Before the outage a flushed write to the first dirty extent leaves the secondary's own map
 * holding that extent only, so the resync is exactly the primary's dirty set.
 */
async function degradedPair(pair: Pair, dirty_bytes: number, label: string): Promise<AckedWriter> {
  const { a, b } = pair;
  await pair.up();
  await pair.waitSynced(a);
  const client = await RawNbdClient.connect({ unix: pair.nbd(a) });
  try {
    await client.handshake({ export_name: pair.name });
    await nbdWrite(client, DIRTY_OFFSET, new Uint8Array(64 * 1024)); // zeroes: what the writer's record starts from
    await nbdFlush(client);
  } finally {
    client.close();
  }
  await pair.stop(b);
  const writer = AckedWriter.start({ socket: pair.nbd(a), offset_bytes: DIRTY_OFFSET, region_bytes: dirty_bytes, seed: faultSeed(label) });
  h.onCleanup(() => writer.stop(1_000).catch(() => undefined));
  await writer.waitAcked(Math.max(200, (dirty_bytes / (64 * 1024)) * 2));
  await writer.stop();
  const s = await pair.status(a);
  expect(s.status).toBe("degraded");
  expect(s.dirty).toBe(dirty_bytes);
  return writer;
}

async function checkIdentical(pair: Pair, writer: AckedWriter): Promise<void> {
  await pair.waitSynced(pair.a);
  const { localoff } = await pair.region(pair.a);
  await writer.verifyFile(pair.disk(pair.a), localoff);
  await writer.verifyFile(pair.disk(pair.b), localoff);
  expect(await pair.dataSha256(pair.b)).toBe(await pair.dataSha256(pair.a));
}

describe("crash during a resync", () => {
  for (const victim of ["primary", "secondary"] as const) {
    test(`${victim} hastd SIGKILLed mid-pass: restarted, the pass completes, replicas identical`, async () => {
      const pair = Pair.create(h, { data_bytes: 64 * MiB, settings: { timeout: 4 } });
      const { a, b } = pair;
      const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
      h.onCleanup(() => proxy.stop());
      pair.reconfigure({ remote: { [a.name]: proxy.address } });
      const writer = await degradedPair(pair, 28 * MiB, `resync crash of the ${victim}`);
      proxy.throttle(4 * MiB);
      await pair.start(b);
      await pair.role(b, "secondary");
      await waitFor("the pass to be under way", async () => ((await pair.status(a)).sync?.done ?? 0) >= 4 * MiB, 30_000);
      const node = victim === "primary" ? a : b;
      await pair.kill(node);
      if (victim === "primary") {
        await pair.daemon(b).waitLog("Disconnected from the primary: ");
        await pair.start(a);
        await pair.role(a, "primary");
      } else {
        await pair.daemon(a).waitLog(/Synchronization interrupted\. \d+ bytes synchronized so far\./);
        await pair.start(b);
        await pair.role(b, "secondary");
      }
      await waitFor("the pass to start again", () => count(pair.daemon(a).log, /Synchronization started\./g) >= (victim === "primary" ? 1 : 3), 20_000);
      proxy.throttle(0);
      await checkIdentical(pair, writer);
      await pair.daemon(a).waitLog(/Synchronization complete\. \d+ bytes synchronized\./);
    }, 120_000);
  }
});

describe("hastd restart with dirty extents", () => {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    test(`${signal}: the restarted primary keeps its dirty extents, and only those are copied when the secondary comes`, async () => {
      const pair = Pair.create(h, { data_bytes: 64 * MiB, settings: { timeout: 4 } });
      const { a, b } = pair;
      const dirty_bytes = 4 * EXTENT_BYTES;
      const writer = await degradedPair(pair, dirty_bytes, `restart with dirty extents (${signal})`);
      if (signal === "SIGTERM") {
        const daemon = pair.daemon(a);
        await pair.stop(a);
        expect(daemon.log).toContain("Termination signal received, exiting.");
      } else {
        await pair.kill(a);
      }
      await pair.start(a);
      await pair.role(a, "primary");
      const restarted = await pair.status(a);
      expect(restarted.status).toBe("degraded");
      expect(restarted.dirty).toBe(dirty_bytes);
      expect((await pair.dump(a)).dirty_extents).toBe(dirty_bytes / EXTENT_BYTES);

      await pair.start(b);
      await pair.role(b, "secondary");
      await checkIdentical(pair, writer);
      await pair.daemon(b).waitLog(/Connected to the primary at .* \(decision row 5, sync source primary\)\./);
      await pair.daemon(a).waitLog(`Synchronization started. ${dirty_bytes} bytes to go.`);
      await pair.daemon(a).waitLog(`Synchronization complete. ${dirty_bytes} bytes synchronized.`);
    }, 90_000);
  }
});
