// Outage and resynchronization (issue 4, "What it must show" 2): the secondary's hastd is
// killed (SIGKILL, main process and worker) while the primary is being written, the primary
// keeps taking writes (~5% of the device), then the secondary comes back: only the extents
// dirtied meanwhile are copied — the primary's "Synchronization complete. N bytes" equals the
// dirty figure it showed just before the reconnect — and the components end up identical. The
// primary's crash is the mirror case: its on-disk map (in-flight and keepdirty extents) is what
// gets resynchronized when it comes back.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native } from "../../src/native.ts";
import { nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { Harness, MiB, Pair, waitFor } from "./harness.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("repl-outage");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const DATA_BYTES = 128 * MiB;
const EXTENT_BYTES = 2 * MiB;
const WRITE_BYTES = 256 * 1024;

/** Whether this kernel tells what the page cache holds (what the primary's sendfile needs). */
function cachestatWorks(): boolean {
  const path = join(tmpdir(), `hast-cachestat-${process.pid}`);
  writeFileSync(path, new Uint8Array(8192).fill(1));
  const fd = native.open(path, { write: false });
  try {
    return native.rangeCached(fd, path, 0, 8192) === true;
  } finally {
    native.close(fd, path);
    rmSync(path, { force: true });
  }
}

async function nbdClient(socket: string): Promise<RawNbdClient> {
  const client = await RawNbdClient.connect({ unix: socket });
  await client.handshake({ export_name: "r0" });
  return client;
}

describe("outages", () => {
  test("killed mid-write, restarted: only the dirty extents are resynchronized", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    await pair.up();
    await pair.waitSynced(a);
    const client = await nbdClient(pair.nbd(a));
    try {
      // A writer that keeps going across the kill: 256 KiB writes walking the first half.
      let stop = false;
      let written = 0;
      const writer = (async () => {
        for (let off = 0; !stop; off = (off + WRITE_BYTES) % (DATA_BYTES / 2)) {
          await nbdWrite(client, off, randomBytes(WRITE_BYTES));
          written += WRITE_BYTES;
        }
      })();
      await waitFor("some replicated writes", () => written >= 8 * MiB, 30_000);
      await pair.kill(b);
      stop = true;
      await writer;
      await waitFor("the primary to notice the outage", async () => (await pair.status(a)).status === "degraded", 20_000);
      // Degraded writes: ~5% of the device, in the second half, spread over extents.
      const degraded_bytes = Math.round(DATA_BYTES * 0.05 / WRITE_BYTES) * WRITE_BYTES;
      for (let done = 0; done < degraded_bytes; done += WRITE_BYTES) {
        const off = DATA_BYTES / 2 + ((done * 3) % (DATA_BYTES / 2));
        await nbdWrite(client, off - (off % WRITE_BYTES), randomBytes(WRITE_BYTES));
      }
      const before = await pair.status(a);
      expect(before.status).toBe("degraded");
      const dirty = before.dirty as number;
      expect(dirty).toBeGreaterThan(0);
      expect(dirty % EXTENT_BYTES).toBe(0);
      // Dirty: the degraded writes' extents, plus the extents of writes the secondary answered but had
      // not been asked to flush when it died (the primary holds those until a flush; at most the
      // first half the writer walks), never the whole device.
      const bound = DATA_BYTES / 2 + Math.ceil(degraded_bytes / EXTENT_BYTES + 1) * EXTENT_BYTES;
      expect(dirty).toBeLessThanOrEqual(bound);
      // The initial full sync of the fresh pair is the only pass so far.
      expect(await pair.daemon(a).synced(1)).toEqual([DATA_BYTES]);

      // The secondary hands back what it had not yet flushed when it died (its own map): at most
      // its dirty extents come on top of the primary's.
      const b_dirty_bytes = (await pair.dump(b)).dirty_extents * EXTENT_BYTES;
      await pair.start(b);
      await pair.role(b, "secondary");
      await pair.waitSynced(a);
      const [first, resynced] = await pair.daemon(a).synced(2);
      expect(first).toBe(DATA_BYTES);
      // The status reports the pass that just ended, with its duration.
      const last = (await pair.status(a)).last_sync;
      expect(last.bytes).toBe(resynced);
      expect(last.seconds).toBeGreaterThan(0);
      expect(Date.now() - Date.parse(last.finished)).toBeLessThan(60_000);
      expect(resynced).toBeGreaterThanOrEqual(dirty);
      expect(resynced).toBeLessThanOrEqual(dirty + b_dirty_bytes);
      expect(resynced).toBeLessThanOrEqual(bound);
      expect(pair.daemon(b).log).toContain("decision row 5");
      // The resync's data went by the kernel: sendfile from the primary's page cache, splice onto
      // the secondary's disk (docs/performance.md, twelfth round), where the system has them.
      const direct_a = (await pair.status(a)).statistics.direct_bytes;
      const direct_b = (await pair.status(b)).statistics.direct_bytes;
      if (process.platform !== "linux") {
        console.log(`direct transfers not checked: sendfile and splice are used on Linux only (${process.platform})`);
      } else {
        expect(direct_b).toBeGreaterThan(0);
        expect(direct_b).toBeLessThanOrEqual(resynced!);
        if (cachestatWorks()) expect(direct_a).toBeGreaterThan(0);
        else console.log("primary's direct transfers not checked: no cachestat(2) (Linux before 6.5), so sync chunks are copied");
        expect(direct_a).toBeLessThanOrEqual(resynced!);
      }
    } finally {
      client.close();
    }
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 180_000);

  test("primary killed mid-write, restarted: the extents dirty in its on-disk map are resynchronized", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    await pair.up();
    await pair.waitSynced(a);
    const client = await nbdClient(pair.nbd(a));
    let written = 0;
    const writer = (async () => {
      for (let off = 0; ; off = (off + WRITE_BYTES) % DATA_BYTES) {
        await nbdWrite(client, off, randomBytes(WRITE_BYTES));
        written += WRITE_BYTES;
      }
    })().catch(() => undefined); // ends when the primary dies under it
    try {
      await waitFor("some replicated writes", () => written >= 16 * MiB, 30_000);
      await pair.kill(a);
      await writer;
    } finally {
      client.close();
    }
    const dirty_extents = (await pair.dump(a)).dirty_extents as number;
    expect(dirty_extents).toBeGreaterThan(0);
    expect(dirty_extents).toBeLessThan(DATA_BYTES / EXTENT_BYTES);
    await pair.start(a);
    await pair.role(a, "primary");
    await pair.waitSynced(a);
    expect(await pair.daemon(a).synced(1)).toEqual([dirty_extents * EXTENT_BYTES]);
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 120_000);

  test("a resynchronization clears the primary's activemap a few times per pass, and the secondary's in one write", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    // keepdirty 4: the primary's map keeps only the 4 extents written last dirty once synchronized.
    await pair.up({ create_args: ["--initial-sync", "none", "-k", "4"] });
    await pair.waitSynced(a);
    await pair.role(b, "init");
    const extents = 32;
    const client = await nbdClient(pair.nbd(a));
    try {
      for (let e = 0; e < extents; e++) await nbdWrite(client, e * EXTENT_BYTES, randomBytes(WRITE_BYTES));
    } finally {
      client.close();
    }
    expect((await pair.status(a)).dirty).toBe(extents * EXTENT_BYTES);
    const before = (await pair.status(a)).statistics.activemap_updates;
    await pair.role(b, "secondary");
    await pair.waitSynced(a);
    await pair.daemon(a).waitLog(`Synchronization complete. ${extents * EXTENT_BYTES} bytes synchronized.`);
    await Bun.sleep(500); // the primary's clears are held back up to CLEARS_HELD_MS
    // The primary: the clears of the 28 extents past keepdirty, held back and written together (24
    // writes, one per extent, before). The secondary (a new worker, counting from 0): the map's
    // clear at the first request, a mark per extent, one release at the pass's final flush (65
    // before: a release per extent); a background flush during the pass may add a release.
    const primary = (await pair.status(a)).statistics.activemap_updates - before;
    const secondary = (await pair.status(b)).statistics.activemap_updates;
    expect(primary).toBeGreaterThan(0);
    expect(primary).toBeLessThanOrEqual(6);
    expect(secondary).toBeGreaterThanOrEqual(extents + 2);
    expect(secondary).toBeLessThanOrEqual(extents + 5);
    expect(await pair.dump(a)).toMatchObject({ keepdirty: 4, dirty_extents: 4 });
    expect(await pair.dump(b)).toMatchObject({ dirty_extents: 0 });
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 120_000);

  test("sync_rate paces the resynchronization after an outage; a reload lifts it from the pass running", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4, sync_rate: "16M" } });
    const { a, b } = pair;
    await pair.up({ create_args: ["--initial-sync", "none"] });
    await pair.waitSynced(a);
    expect(await h.hastctlOk(a, pair.confOf(a), ["list", pair.name])).toContain("  sync_rate: 16MB/s\n");
    const outage = async (bytes: number) => {
      await pair.role(b, "init");
      const client = await nbdClient(pair.nbd(a));
      try {
        for (let off = 0; off < bytes; off += MiB) await nbdWrite(client, off, randomBytes(MiB));
      } finally {
        client.close();
      }
      await pair.role(b, "secondary");
    };
    // 64 MiB at 16 MiB/s: about 4 s (a quarter of a second's worth may go at once); unpaced, the
    // same pass takes a fraction of a second here.
    await outage(64 * MiB);
    await pair.waitSynced(a, 60_000);
    const paced = (await pair.status(a)).last_sync;
    expect(paced.bytes).toBe(64 * MiB);
    expect(paced.seconds).toBeGreaterThan(3);
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
    // At 1 MiB/s the next pass would take two minutes: a reload without the limit finishes it.
    pair.reconfigure({ settings: { timeout: 4, sync_rate: "1M" } });
    pair.daemon(a).signal("SIGHUP");
    await pair.daemon(a).waitLog("Configuration reloaded.");
    await outage(128 * MiB);
    await waitFor("the paced pass to be under way", async () => ((await pair.status(a)).sync?.done > 0 ? true : null), 30_000);
    pair.reconfigure({ settings: { timeout: 4 } });
    pair.daemon(a).signal("SIGHUP");
    await pair.waitSynced(a, 30_000);
    const lifted = (await pair.status(a)).last_sync;
    expect(lifted.bytes).toBe(128 * MiB);
    expect(lifted.seconds).toBeLessThan(60);
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 180_000);
});
