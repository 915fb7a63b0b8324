// The connect decision table (spec 7.2), one test per row, with two hastd on 127.0.0.1. Each test
// builds the counters of its row through real role changes (row 7 by editing metadata, since no
// sequence of operations produces it), then asserts the secondary's "decision row N" line, what
// the primary synchronized, and in which direction the data went. Split-brain is followed by the
// recovery runbook of docs/operations.md.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, statSync, truncateSync, writeSync } from "node:fs";
import { LocalDisk } from "../../src/io/disk.ts";
import { MetadataStore } from "../../src/io/metadata-store.ts";
import { FrameType } from "../../src/wire/peer/constants.ts";
import { FLAG_RESUID_UNCONFIRMED } from "../../src/core/metadata.ts";
import { TcpProxy } from "./tcp-proxy.ts";
import { nbdRead, nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { Harness, hookRecorder, MiB, Pair, waitFor, type NodeInfo } from "./harness.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("repl-decision");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const DATA_BYTES = 16 * MiB;

async function withClient<T>(pair: Pair, node: NodeInfo, fn: (c: RawNbdClient) => Promise<T>): Promise<T> {
  const client = await RawNbdClient.connect({ unix: pair.nbd(node) });
  try {
    await client.handshake({ export_name: pair.name });
    return await fn(client);
  } finally {
    client.close();
  }
}

async function writeThrough(pair: Pair, node: NodeInfo, offset: number, data: Uint8Array): Promise<void> {
  await withClient(pair, node, (c) => nbdWrite(c, offset, data));
}

/** Writes bytes into a component's data area directly (as data present before hastd ever ran). */
async function writeComponent(pair: Pair, node: NodeInfo, offset: number, data: Uint8Array): Promise<void> {
  const { localoff } = await pair.region(node);
  const fd = openSync(pair.disk(node), "r+");
  try {
    writeSync(fd, data, 0, data.length, localoff + offset);
  } finally {
    closeSync(fd);
  }
}

const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

/** A connected pair, in sync, with A primary (default create: full initial sync of the empty disks). */
async function syncedPair(settings: Record<string, string | number> = {}, remote?: Record<string, string>): Promise<Pair> {
  const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4, ...settings }, ...(remote ? { remote } : {}) });
  await pair.up();
  await pair.waitSynced(pair.a);
  return pair;
}

describe("connect decision table", () => {
  test("row 1, --initial-sync none: a brand-new pair copies nothing", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    for (const node of pair.nodes) await pair.createOn(node, ["--initial-sync", "none"]);
    const before = randomBytes(MiB);
    await writeComponent(pair, a, 4 * MiB, before);
    for (const node of pair.nodes) await pair.start(node);
    await pair.role(b, "secondary");
    await pair.role(a, "primary");
    await pair.waitSynced(a);
    await pair.daemon(b).waitLog("decision row 1, sync source primary)");
    expect(pair.daemon(a).log).toContain("Nodes are in sync.");
    expect(pair.daemon(a).log).not.toContain("Synchronization started");
    // The documented sharp edge: what was on the disks before is not reconciled.
    expect(await pair.dataSha256(b, { offset: 4 * MiB, length: MiB })).not.toBe(sha256(before));
    expect((await pair.dump(b)).resuid).toBe((await pair.dump(a)).resuid);
  }, 60_000);

  test("row 1, default create: a brand-new pair copies the primary's whole data area", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    for (const node of pair.nodes) await pair.createOn(node);
    const before = randomBytes(MiB);
    await writeComponent(pair, a, 4 * MiB, before);
    // Where the primary holds zeroes the sync sends holes: the secondary must zero its old bytes.
    await writeComponent(pair, b, 6 * MiB, randomBytes(MiB));
    for (const node of pair.nodes) await pair.start(node);
    await pair.role(b, "secondary");
    await pair.role(a, "primary");
    await pair.waitSynced(a);
    await pair.daemon(b).waitLog("decision row 1, sync source primary, full synchronization)");
    expect(await pair.daemon(a).synced(1)).toEqual([DATA_BYTES]);
    expect(await pair.dataSha256(b, { offset: 4 * MiB, length: MiB })).toBe(sha256(before));
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 60_000);

  test("row 2: a component of another pair (different resuid) is refused, no split-brain", async () => {
    const hook = hookRecorder(h);
    const pair = await syncedPair({ exec: hook.path });
    const { a, b } = pair;
    const b_data = await pair.dataSha256(b);
    // A gets a third component for the same resource: created anew, it makes its own resuid.
    await pair.stop(a);
    h.sparseFile("third.img", DATA_BYTES + 12288);
    pair.reconfigure({ on: { [a.name]: { local: h.path("third.img") } } });
    await pair.createOn(a);
    await pair.start(a);
    await pair.role(a, "primary");
    await pair.daemon(a).waitLog("refused the connection (RESUID_MISMATCH): Resource unique ID mismatch", 15_000);
    await pair.daemon(b).waitLog("Resource unique ID mismatch");
    const s = await pair.status(a);
    expect(s.status).toBe("degraded");
    expect(s.split_brain).toBeFalsy();
    expect((await pair.status(b)).split_brain).toBeFalsy();
    expect(hook.lines().filter((l) => l.includes("split-brain"))).toEqual([]);
    expect(await pair.dataSha256(b)).toBe(b_data);
  }, 60_000);

  /** A pair (A reaches B through a proxy) where B served while A was away and wrote 8 MiB
   * (`fresh`), then became secondary again: A, made primary, is synchronized from B (row 3). */
  async function failedOverWhileAway() {
    const { pair, proxy } = await Pair.proxied(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    await pair.role(pair.a, "init");
    await pair.role(pair.b, "primary");
    const fresh = randomBytes(8 * MiB);
    await writeThrough(pair, pair.b, 0, fresh);
    await pair.role(pair.b, "secondary");
    return { pair, proxy, fresh };
  }

  test("row 3: the secondary is newer; sync goes secondary → primary and the primary reads from the peer meanwhile", async () => {
    // A reaches B through a proxy so the pass can be slowed down enough to read during it.
    const { pair, proxy, fresh } = await failedOverWhileAway();
    const { a, b } = pair;
    // A returns as primary with stale data: B has changes A has not seen.
    proxy.throttle(2 * MiB);
    await pair.role(a, "primary");
    await pair.daemon(b).waitLog("decision row 3, sync source secondary)", 15_000);
    await pair.daemon(a).waitLog("sync source: secondary");
    const during = await withClient(pair, a, async (c) => {
      const before = await pair.status(a);
      const last = await nbdRead(c, 7 * MiB, MiB);
      const after = await pair.status(a);
      return { before, last, after };
    });
    expect(during.before.sync).toBeDefined();
    expect(during.after.sync).toBeDefined();
    expect(sha256(during.last)).toBe(sha256(fresh.subarray(7 * MiB)));
    proxy.throttle(0);
    await pair.waitSynced(a);
    expect((await pair.daemon(a).synced(2)).at(-1)).toBe(8 * MiB);
    expect(await pair.dataSha256(a, { offset: 0, length: 8 * MiB })).toBe(sha256(fresh));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 90_000);

  test("row 3: the primary's copy is marked incomplete until the pass ends; killed meanwhile, its worker is refused, and the secondary promoted instead keeps its data", async () => {
    const { pair, proxy, fresh } = await failedOverWhileAway();
    const { a, b } = pair;
    proxy.throttle(MiB);
    await pair.role(a, "primary");
    await pair.daemon(a).waitLog("sync source: secondary");
    // Restarted unaware, the worker would serve its old copy alone (and a write would split the data).
    process.kill((await pair.status(a)).workerpid, "SIGKILL");
    await pair.daemon(a).waitLog("The restarted primary worker refused this node's copy (the log says why). Changing resource role back to init.", 15_000);
    expect(await pair.status(a)).toMatchObject({ role: "init", copy_incomplete: true });
    // The operator fails over to the node that holds every change.
    proxy.throttle(0);
    await pair.role(b, "primary");
    await pair.role(a, "secondary");
    await pair.waitSynced(b);
    expect(await pair.dataSha256(b, { offset: 0, length: 8 * MiB })).toBe(sha256(fresh));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
    expect((await pair.status(a)).copy_incomplete).toBeFalsy();
  }, 90_000);

  test("row 4: reconnecting an in-sync pair copies nothing", async () => {
    const pair = await syncedPair();
    const { a, b } = pair;
    await writeThrough(pair, a, MiB, randomBytes(MiB));
    await pair.waitSynced(a);
    // The secondary goes away and comes back with nothing written meanwhile. (Restarting the
    // primary's worker instead would resync its keepdirty extents, by design: spec 5.3.)
    await pair.role(b, "init");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    await pair.role(b, "secondary");
    await pair.daemon(b).waitLog("decision row 4, sync source primary)", 15_000);
    await pair.waitSynced(a);
    expect(pair.daemon(a).log.match(/Nodes are in sync\./g)?.length).toBe(1);
    expect(await pair.daemon(a).synced(1)).toEqual([DATA_BYTES]);
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 60_000);

  test("row 5: after a secondary outage only the primary's new writes go to the secondary", async () => {
    const pair = await syncedPair();
    const { a, b } = pair;
    await pair.role(b, "init");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    const data = randomBytes(3 * MiB);
    await writeThrough(pair, a, 5 * MiB, data); // extents 2 and 3
    expect((await pair.status(a)).dirty).toBe(4 * MiB);
    await pair.role(b, "secondary");
    await pair.daemon(b).waitLog("decision row 5, sync source primary)", 15_000);
    await pair.waitSynced(a);
    expect(await pair.daemon(a).synced(2)).toEqual([DATA_BYTES, 4 * MiB]);
    expect(await pair.dataSha256(b, { offset: 5 * MiB, length: 3 * MiB })).toBe(sha256(data));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 60_000);

  test("row 6: split-brain is refused on both sides, hooked, shown; the runbook brings the pair back", async () => {
    const hook = hookRecorder(h);
    const pair = await syncedPair({ exec: hook.path });
    const { a, b } = pair;
    // B is promoted while A is still primary: the link drops, both serve and both write.
    await pair.role(b, "primary");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    const on_a = randomBytes(MiB);
    const on_b = randomBytes(MiB);
    await writeThrough(pair, a, 0, on_a);
    await writeThrough(pair, b, 0, on_b);
    // B is made secondary again: the next connect finds that both changed data.
    await pair.role(b, "secondary");
    await pair.daemon(a).waitLog("Split-brain detected", 15_000);
    await pair.daemon(b).waitLog("Split-brain detected");
    await waitFor("split-brain hooks on both nodes", () => {
      const lines = hook.lines();
      return lines.includes(`${a.name} split-brain r0`) && lines.includes(`${b.name} split-brain r0`);
    }, 10_000);
    const sa = await pair.status(a);
    expect(sa.split_brain).toBe(true);
    expect(sa.status).toBe("degraded");
    expect((await pair.status(b)).split_brain).toBe(true);
    const hastctl_status = await h.hastctlOk(a, pair.conf, ["status", "--json", "r0"]);
    expect(JSON.parse(hastctl_status)[0].split_brain).toBe(true);
    // Nothing was merged: each side still has its own write.
    expect(await pair.dataSha256(a, { offset: 0, length: MiB })).toBe(sha256(on_a));
    expect(await pair.dataSha256(b, { offset: 0, length: MiB })).toBe(sha256(on_b));

    // docs/operations.md, "Recovering from split-brain": keep A, discard B.
    await pair.role(b, "init");
    await pair.createOn(b);
    await pair.role(b, "secondary");
    await pair.daemon(b).waitLog("decision row 1, sync source primary, full synchronization)", 15_000);
    await pair.waitSynced(a);
    expect((await pair.daemon(a).synced(2)).at(-1)).toBe(DATA_BYTES);
    expect((await pair.status(a)).split_brain).toBeFalsy();
    expect(await pair.dataSha256(b, { offset: 0, length: MiB })).toBe(sha256(on_a));
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 90_000);

  // The e2e partition case: the new primary's attempt to reach its old peer starts before its
  // first write and completes after the heal. The secondary must decide on the counters of when
  // the HANDSHAKE leaves, and the primary must not act on a reply to counters it has changed since;
  // else the peer's changes look like the only ones (row 3) and are copied over this node's
  // acknowledged write.
  test.each([
    ["its HELLO is held: the HANDSHAKE carries the counters as they are when it leaves", "hello"],
    ["its HANDSHAKE_REPLY is held: the reply is not acted on, and A connects again at once", "reply"],
  ] as const)("row 6 reached mid-handshake: a write made while A's attempt waits is counted; %s", async (_, held) => {
    const { pair, proxy } = await Pair.proxied(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    await pair.role(b, "primary");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    const on_b = randomBytes(MiB);
    await writeThrough(pair, b, 0, on_b);
    const accepted = proxy.counters.accepted;
    if (held === "hello") proxy.stall("up");
    else proxy.holdRepliesAfter(FrameType.HANDSHAKE);
    const a_log = pair.daemon(a).log.length;
    const b_log = pair.daemon(b).log.length;
    await pair.role(b, "secondary");
    // Held at the HELLO, B has not heard of the attempt; held at the reply, B has decided.
    await waitFor(`an attempt of A held at its ${held}`, () => proxy.counters.accepted > accepted &&
      (held === "hello" || pair.daemon(b).log.includes("Connected to the primary", b_log)), 10_000);
    const on_a = randomBytes(MiB);
    await writeThrough(pair, a, 4 * MiB, on_a);
    proxy.resume();
    await pair.daemon(b).waitLog("Split-brain detected", 15_000);
    await pair.daemon(a).waitLog("Split-brain detected", 15_000);
    const after = pair.daemon(a).log.slice(a_log);
    expect(after).not.toContain("Synchronization started");
    if (held === "reply") expect(after).toContain("This node changed data while connecting");
    expect(await pair.dataSha256(a, { offset: 4 * MiB, length: MiB })).toBe(sha256(on_a));
    expect(await pair.dataSha256(b, { offset: 0, length: MiB })).toBe(sha256(on_b));
  }, 90_000);

  test("a new pair's primary that never reached its peer draws no resuid: the roles can still be swapped (spec 4.4)", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    for (const node of pair.nodes) await pair.createOn(node);
    for (const node of pair.nodes) await pair.start(node);
    await pair.role(a, "primary"); // B stays init: it refuses every attempt
    await pair.daemon(a).waitLog("refused the connection", 15_000);
    await pair.role(a, "init");
    expect((await pair.dump(a)).resuid).toBe("0");
    await pair.role(a, "secondary");
    await pair.role(b, "primary");
    await pair.daemon(a).waitLog("decision row 1", 15_000);
    await pair.waitSynced(b);
    expect(pair.daemon(a).log).not.toContain("RESUID_MISMATCH");
  }, 60_000);

  test("a node whose first answer as primary was lost, secondary since, gives a re-created peer a full copy (review: it claimed a virgin pair)", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
    h.onCleanup(() => proxy.stop());
    pair.reconfigure({ remote: { [a.name]: proxy.address } });
    for (const node of pair.nodes) await pair.createOn(node, ["--initial-sync", "none"]);
    for (const node of pair.nodes) await pair.start(node);
    await pair.role(b, "secondary");
    // A brand-new pair: B adopts A's resuid, the answer is lost, A is demoted before it connects again.
    proxy.holdRepliesAfter(FrameType.HANDSHAKE);
    await pair.role(a, "primary");
    await pair.daemon(b).waitLog("decision row 1", 15_000);
    await pair.role(a, "init");
    proxy.resume();
    expect((await pair.dump(a)).flags & FLAG_RESUID_UNCONFIRMED).toBe(FLAG_RESUID_UNCONFIRMED);
    // B serves (forced: its adoption marked its copy incomplete) with A as its secondary, and writes.
    await pair.role(b, "init");
    await h.hastctlOk(b, pair.confOf(b), ["role", "--force", "primary", pair.name]);
    await pair.role(a, "secondary");
    await pair.waitSynced(b);
    await writeThrough(pair, b, 2 * MiB, randomBytes(4 * MiB));
    await pair.waitSynced(b);
    // B's disk is replaced: A becomes primary, B is created anew and joins as its secondary.
    await pair.role(b, "init");
    await pair.role(a, "primary");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    const size = statSync(pair.disk(b)).size;
    truncateSync(pair.disk(b), 0);
    truncateSync(pair.disk(b), size);
    await pair.createOn(b);
    const b_log = pair.daemon(b).log.length;
    await pair.role(b, "secondary");
    await pair.daemon(b).waitLog("decision row 1", 15_000);
    await pair.waitSynced(a);
    expect(pair.daemon(b).log.slice(b_log)).toContain("full synchronization");
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 120_000);

  test("row 7: counters that contradict each other force a full sync", async () => {
    const pair = await syncedPair();
    const { a, b } = pair;
    await pair.role(b, "init");
    await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 15_000);
    // No operation produces this state (it is HAST's "should never happen"): B claims to know a
    // newer generation of A than A has, with its own generation unchanged.
    const a_meta = await pair.dump(a);
    const disk = LocalDisk.open(pair.disk(b), { write: true, lock: true });
    try {
      const store = new MetadataStore(disk);
      const meta = store.read().meta;
      expect(meta.localcnt).toBe(BigInt(a_meta.remotecnt));
      store.write({ ...meta, remotecnt: BigInt(a_meta.localcnt) + 5n });
    } finally {
      disk.close();
    }
    await pair.role(b, "secondary");
    await pair.daemon(b).waitLog("decision row 7, sync source primary, full synchronization)", 15_000);
    expect(pair.daemon(b).log).toContain("Generation counters disagree");
    await pair.waitSynced(a);
    expect(await pair.daemon(a).synced(2)).toEqual([DATA_BYTES, DATA_BYTES]);
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 60_000);
});
