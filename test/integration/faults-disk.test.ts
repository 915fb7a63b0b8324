// Disk faults on the local component (issue 6 item 3), through src/native.ts's fault hook: each
// hastd gets HAST_FAULT_INJECT_FILE=<temp dir>/faults-<node>, and a test starts a fault by
// replacing that file with rules such as "pwrite:nodea.img:EIO:1" (the next pwrite on the
// primary's component fails with EIO) and ends it by removing the file. Checked: the answer the
// NBD client gets (spec 6.8: a write succeeds when either component took it, a failed local
// read is retried on the peer), the local error counters, the log line naming the path, offset
// and errno, and the bytes on both components (sha256).
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { closeSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { SYNC_RESUME_S } from "../../src/core/primary-engine.ts";
import { nbdFlush, nbdRead, nbdWrite, RawNbdClient, type Reply } from "../../src/io/nbd-client.ts";
import { NBD_CMD } from "../../src/wire/nbd.ts";
import { Harness, MiB, Pair, sha256FileRange, waitFor, type NodeInfo } from "./harness.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("faults-disk");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const DATA_BYTES = 32 * MiB;
const BLOCK_BYTES = 64 * 1024;
/** A block inside extent 4 (8 MiB), away from the activemap and metadata. */
const OFFSET = 8 * MiB + 3 * BLOCK_BYTES;
/** Data put on the primary before the first connect (extents 8..11). */
const PREFILL_OFFSET = 16 * MiB;
const PREFILL_BYTES = 8 * MiB;
const sha256 = (data: Uint8Array) => new Bun.CryptoHasher("sha256").update(data).digest("hex");

interface Faulty {
  pair: Pair;
  a: NodeInfo;
  b: NodeInfo;
  client: RawNbdClient;
  /** Starts faults on a node (rules as in src/native.ts), or ends them (null). */
  faults: (node: NodeInfo, rules: string | null) => void;
}

/** A pair whose hastds read fault rules from files; [PREFILL_OFFSET, +PREFILL_BYTES) of the primary holds
 * random data before the first connect, so the initial full sync puts it on both (and leaves it clean). */
async function faultyPair(): Promise<Faulty & { prefill: Uint8Array }> {
  const rulesFile = (node: NodeInfo) => h.path(`faults-${node.name}`);
  const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
  const { a, b } = pair;
  pair.reconfigure({ env: Object.fromEntries(pair.nodes.map((n) => [n.name, { HAST_FAULT_INJECT_FILE: rulesFile(n) }])) });
  for (const node of pair.nodes) await pair.createOn(node);
  const prefill = randomBytes(PREFILL_BYTES);
  const fd = openSync(pair.disk(a), "r+");
  writeSync(fd, prefill, 0, prefill.length, (await pair.region(a)).localoff + PREFILL_OFFSET);
  closeSync(fd);
  await pair.up({ create_args: ["--initial-sync", "full"] });
  await pair.waitSynced(a);
  // The status says in sync once the pass's last chunk is copied; its end (a flush of both nodes,
  // then the metadata) follows, and a fault injected before that hits the metadata write. The log
  // line comes just before that write, in the same run of the worker.
  await pair.daemon(a).waitLog("Synchronization complete.");
  const client = await RawNbdClient.connect({ unix: pair.nbd(a) });
  h.onCleanup(() => client.close());
  await client.handshake({ export_name: pair.name });
  let serial = 0;
  const faults = (node: NodeInfo, rules: string | null) => {
    if (rules === null) return rmSync(rulesFile(node), { force: true });
    const tmp = h.path(`faults-${node.name}.${serial++}`);
    writeFileSync(tmp, rules);
    renameSync(tmp, rulesFile(node)); // a new inode: the worker sees the change at its next call
  };
  return { pair, a, b, client, faults, prefill };
}

/** The extent of OFFSET, stale on the primary after staleExtent(). */
const STALE_EXTENT = Math.floor(OFFSET / (2 * MiB));
/** How long the copy back's first read waits on the secondary's disk: the extent stays stale that
 * long (and the secondary's worker holds its component, refusing new connections, until then). */
const COPY_BACK_HOLD_MS = 8_000;

/**
 * A masked write: EIO on the primary's pwrite, the secondary took it, so its extent is stale on the
 * primary, and the copy back's first read waits on the secondary's disk (COPY_BACK_HOLD_MS). The
 * primary's fault is over on return; the secondary's rule stays until the caller ends it (faults(b,
 * null)) once that read has started, for every new worker there reads the rules afresh.
 */
async function staleExtent(): Promise<Faulty & { before: Uint8Array; data: Uint8Array }> {
  const f = await faultyPair();
  const before = randomBytes(BLOCK_BYTES);
  await nbdWrite(f.client, OFFSET, before);
  await nbdFlush(f.client);
  f.faults(f.b, `pread:${f.b.name}.img:delay=${COPY_BACK_HOLD_MS}:1`);
  f.faults(f.a, `pwrite:${f.a.name}.img:EIO:1`);
  const data = randomBytes(BLOCK_BYTES);
  await nbdWrite(f.client, OFFSET, data);
  f.faults(f.a, null);
  expect((await f.pair.status(f.a)).stale_extents).toBe(1);
  await waitFor("the copy back to start", () => f.pair.daemon(f.a).log.includes(`Synchronization started. ${2 * MiB} bytes to go.`), 10_000);
  await Bun.sleep(300); // its read has reached the secondary's disk (it follows at once)
  return { ...f, before, data };
}

async function blockSha(pair: Pair, node: NodeInfo, offset = OFFSET): Promise<string> {
  const { localoff } = await pair.region(node);
  return await sha256FileRange(pair.disk(node), localoff + offset, BLOCK_BYTES);
}

const injected = (op: string, path: string, offset: number, length: number) =>
  `${op} ${path} at offset ${offset} (${length} bytes): Input/output error (EIO, injected by HAST_FAULT_INJECT)`;

describe("disk errors on the primary's component", () => {
  test("EIO on pwrite: the write succeeds through the secondary; counted and logged", async () => {
    const { pair, a, b, client, faults } = await faultyPair();
    const before = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, before); // the extent is dirty in the map now: the next write needs no map update
    faults(a, `pwrite:${a.name}.img:EIO:1`);
    const data = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, data);
    // A flush right after it succeeds: while the extent is still to be copied back, its answer waits
    // for the copy and a flush of it here (docs/operations.md, "A failed cache flush").
    await nbdFlush(client);
    expect((await pair.status(a)).statistics.local_errors.write).toBe(1);
    const { localoff } = await pair.region(a);
    await pair.daemon(a).waitLog(`(primary) error: Local write failed: ${injected("pwrite", pair.disk(a), localoff + OFFSET, BLOCK_BYTES)}`);
    // The acknowledged write is on the secondary's disk; the sync copies it back to the primary.
    expect(await blockSha(pair, b)).toBe(sha256(data));
    await pair.waitSynced(a);
    expect(await blockSha(pair, a)).toBe(sha256(data));
  }, 60_000);

  test("after a masked local write error the primary reads the peer's copy and the sync repairs its own", async () => {
    // Spec 6.8 answers the write from the peer; the primary also marks its own copy of the extent
    // stale: reads go to the peer and the sync copies the extent back from it.
    const { pair, a, b, client, faults } = await faultyPair();
    const before = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, before);
    faults(a, `pwrite:${a.name}.img:EIO:1`);
    const data = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, data);
    expect(sha256(await nbdRead(client, OFFSET, BLOCK_BYTES))).toBe(sha256(data));
    await pair.waitSynced(a);
    expect(sha256(await nbdRead(client, OFFSET, BLOCK_BYTES))).toBe(sha256(data));
    expect(await blockSha(pair, b)).toBe(sha256(data));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 60_000);

  test("a masked write's extent stays stale across a restart of the primary's worker, which copies it back from the secondary", async () => {
    // Without the list in the metadata, the restarted worker would take its own copy (the write
    // before) as the good one and copy it over the secondary's.
    const { pair, a, b, faults, data } = await staleExtent();
    expect(await h.hastctlOk(a, pair.confOf(a), ["status", pair.name])).toContain("\t1 extents stale\n");
    expect(await h.hastctlOk(a, pair.confOf(a), ["list", pair.name])).toContain("stale: 1 extents (a write or flush failed here that the secondary took; copied back from it)");
    // The metadata lists it (read while the worker runs: hastctl dump reads the slots as they are).
    expect((await pair.dump(a)).stale_extents).toEqual([STALE_EXTENT]);
    expect(await h.hastctlOk(a, pair.confOf(a), ["dump", pair.name])).toMatch(
      new RegExp(`\\n    stale extents: 1 \\(${STALE_EXTENT}\\), to be copied back from the peer \\(its cache epoch then: [0-9a-f]{32}\\)\\n`));
    process.kill((await pair.status(a)).workerpid, "SIGKILL");
    faults(b, null);
    await pair.daemon(a).waitLog("(primary) warn: 1 extents of this node's copy are stale (a write or flush failed here that the secondary took): " +
      "reads of them go to the secondary, and they are copied back from it once it connects.", 20_000);
    await pair.waitSynced(a);
    expect((await pair.status(a)).stale_extents).toBeUndefined();
    expect(await blockSha(pair, a)).toBe(sha256(data));
    expect(await blockSha(pair, b)).toBe(sha256(data));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 90_000);

  test("a primary demoted with stale extents comes back as a secondary whose copy is incomplete; the new primary copies them to it", async () => {
    const { pair, a, b, client, faults, data } = await staleExtent();
    faults(b, null);
    client.close();
    await pair.role(a, "init");
    expect((await pair.dump(a)).stale_extents).toEqual([STALE_EXTENT]);
    await pair.role(b, "primary"); // its copy is complete: it took the write
    await pair.role(a, "secondary");
    await pair.daemon(a).waitLog("(secondary) Connected to the primary");
    await pair.waitSynced(b);
    // The list became the incomplete mark at the handshake, and the new primary's IN_SYNC cleared it.
    await waitFor("a's copy to be complete", async () => (await pair.status(a)).copy_incomplete === false, 20_000);
    const dumped = await pair.dump(a);
    expect(dumped.stale_extents).toBeUndefined();
    expect(dumped.flags & 4).toBe(0);
    expect(await blockSha(pair, a)).toBe(sha256(data));
    expect(await pair.dataSha256(a)).toBe(await pair.dataSha256(b));
  }, 90_000);

  test("role --force primary takes a copy with stale extents as it is: the list goes, the next secondary gets a full copy", async () => {
    const { pair, a, client, before } = await staleExtent();
    client.close();
    await pair.role(a, "init");
    await h.hastctlOk(a, pair.confOf(a), ["role", "--force", "primary", pair.name]);
    await pair.daemon(a).waitLog("Promoted by force although 1 extents of this node's copy are stale: a write or flush failed here that the other node took: " +
      "its data is kept as it is, and the next secondary gets a full copy of it.");
    expect((await pair.status(a)).stale_extents).toBeUndefined();
    const dumped = await pair.dump(a);
    expect(dumped.stale_extents).toBeUndefined();
    expect(dumped.flags & 1).toBe(1); // SYNC_FULL_ON_CONNECT
    expect(await blockSha(pair, a)).toBe(sha256(before)); // its own copy, as it was
  }, 60_000);

  test("EIO on pread falls back to the secondary; EIO on flush fails the flush though the peer's succeeded", async () => {
    const { pair, a, b, client, faults, prefill } = await faultyPair();
    const { localoff } = await pair.region(a);
    // A clean extent (copied by the initial sync, not written since): the peer has the same bytes.
    faults(a, `pread:${a.name}.img:EIO:1`);
    const got = await nbdRead(client, PREFILL_OFFSET, BLOCK_BYTES);
    expect(sha256(got)).toBe(sha256(prefill.subarray(0, BLOCK_BYTES)));
    await pair.daemon(a).waitLog(`(primary) error: Local read failed: ${injected("pread", pair.disk(a), localoff + PREFILL_OFFSET, BLOCK_BYTES)}`);
    await pair.daemon(a).waitLog(`(primary) warn: Local read at ${PREFILL_OFFSET} (${BLOCK_BYTES} bytes) failed, trying remote node.`);
    expect((await pair.status(b)).statistics.reads).toBe(1);
    // A block just written and replicated: once the peer's write is done (the flush answer follows
    // it) the peer holds the same bytes, so the read falls back too. (While the peer's leg is still
    // running, the engine fails such a read rather than risk older bytes.)
    const data = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, data);
    await nbdFlush(client);
    faults(a, `pread:${a.name}.img:EIO:1`);
    expect(sha256(await nbdRead(client, OFFSET, BLOCK_BYTES))).toBe(sha256(data));
    await pair.daemon(a).waitLog(`(primary) warn: Local read at ${OFFSET} (${BLOCK_BYTES} bytes) failed, trying remote node.`);
    expect((await pair.status(a)).statistics.local_errors.read).toBe(2);
    expect((await pair.status(b)).statistics.reads).toBe(2);
    expect(sha256(await nbdRead(client, OFFSET, BLOCK_BYTES))).toBe(sha256(data)); // the fault is over: read locally
    expect((await pair.status(b)).statistics.reads).toBe(2);
    // fdatasync fails locally: the flush fails although the secondary's succeeded (HAST answers ok),
    // for what it covers may not be on this disk (simulator seed 139401).
    // What it covered may be gone from this disk (Linux drops pages after a write-back error): the
    // extent written since the last good flush is copied back from the secondary.
    const again = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, again);
    faults(a, `fdatasync:${a.name}.img:EIO:1`);
    await expect(nbdFlush(client)).rejects.toThrow("NBD flush failed with error 5");
    await pair.daemon(a).waitLog("After a failed local flush, 1 extents will be copied back from the peer; 0 hold changes only this node had.");
    expect((await pair.status(a)).statistics.local_errors.flush).toBe(1);
    await pair.daemon(a).waitLog(`(primary) error: Local flush failed: fdatasync ${pair.disk(a)}: Input/output error (EIO, injected by HAST_FAULT_INJECT)`);
    await pair.daemon(a).waitLog("answered with an error although the peer's flush succeeded");
    faults(a, null);
    await pair.waitSynced(a); // copied back: flushes succeed again
    await nbdFlush(client);
    expect(sha256(await nbdRead(client, OFFSET, BLOCK_BYTES))).toBe(sha256(again));
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 60_000);
});

describe("the primary's reads for a sync pass", () => {
  test("one that fails leaves its extent to the next pass; a slow one holds up no request", async () => {
    const { pair, a, b, client, faults } = await faultyPair();
    const { localoff } = await pair.region(a);
    const completed = () => [...pair.daemon(a).log.matchAll(/Synchronization complete\./g)].length;
    // A write the secondary fails marks its extent, and the pass that starts at once reads it here.
    faults(a, `pread:${a.name}.img:EIO:1`);
    faults(b, `pwrite:${b.name}.img:EIO:1`);
    const first = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, first);
    const chunk_at = localoff + OFFSET - (OFFSET % MiB);
    await pair.daemon(a).waitLog(`(primary) error: Unable to read synchronization data: ${injected("pread", pair.disk(a), chunk_at, MiB)}`);
    await pair.waitSynced(a);
    expect(await blockSha(pair, b)).toBe(sha256(first));
    expect((await pair.status(a)).statistics.local_errors.read).toBe(1);

    // The pass's read waits for a slow disk on a helper thread: a write elsewhere is answered
    // before that pass ends (a read on the event loop would hold it until then).
    const SLOW_READ_MS = 1500;
    faults(a, `pread:${a.name}.img:delay=${SLOW_READ_MS}:1`);
    faults(b, `pwrite:${b.name}.img:EIO:1`);
    const before = completed();
    const second = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, second);
    await Bun.sleep(SLOW_READ_MS / 5); // the pass has started and its read waits
    await nbdWrite(client, PREFILL_OFFSET + PREFILL_BYTES, randomBytes(BLOCK_BYTES));
    expect(completed()).toBe(before);
    await waitFor("the slow pass to complete", () => completed() > before, 20_000);
    await pair.waitSynced(a);
    expect(await blockSha(pair, b)).toBe(sha256(second));
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 60_000);
});

describe("disk errors on the secondary's component", () => {
  test("EIO on pwrite: the write is answered from the primary, its extent resynced once the fault clears", async () => {
    const { pair, a, b, client, faults } = await faultyPair();
    await nbdWrite(client, OFFSET, randomBytes(BLOCK_BYTES));
    await nbdFlush(client);
    await pair.waitSynced(a);
    // One failed write (the secondary's map update or its data write, whichever pwrite comes first):
    // the primary marks the extent and the pass it starts at once repairs it.
    faults(b, `pwrite:${b.name}.img:EIO:1`);
    const first = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, first);
    await pair.daemon(b).waitLog(new RegExp(`\\(secondary\\) error: (Local write failed|Unable to update the activemap): pwrite ${pair.disk(b).replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} .*injected by HAST_FAULT_INJECT`));
    await pair.daemon(a).waitLog(/Synchronization complete\. 2097152 bytes synchronized\./);
    await pair.waitSynced(a);
    expect(await blockSha(pair, b)).toBe(sha256(first));
    // Meanwhile the secondary's copy was marked incomplete (not promotable), and complete again
    // once the primary's IN_SYNC counted the failure.
    await pair.daemon(b).waitLog("This node's copy is incomplete until the primary has copied to it again");
    await waitFor("b's copy complete again", async () => (await pair.status(b)).copy_incomplete === false, 10_000);
    expect(pair.daemon(b).log.indexOf("This node's copy is complete", pair.daemon(b).log.indexOf("This node's copy is incomplete"))).toBeGreaterThan(0);

    // A lasting fault: the passes fail too and leave the extent dirty; once the fault is gone the
    // worker's timer (every SYNC_RESUME_S) starts a new pass on the same connection.
    faults(b, `pwrite:${b.name}.img:EIO`);
    const second = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, second);
    await pair.daemon(a).waitLog(/Synchronization left 1 extents dirty after errors; giving up after 3 retries/);
    expect((await pair.status(a)).dirty).toBeGreaterThanOrEqual(2 * MiB);
    expect((await pair.status(b)).statistics.local_errors.write).toBeGreaterThanOrEqual(2);
    expect(await blockSha(pair, a)).toBe(sha256(second));
    expect(await blockSha(pair, b)).not.toBe(sha256(second));
    const completed = () => [...pair.daemon(a).log.matchAll(/Synchronization complete\./g)].length;
    const completed_before = completed();
    faults(b, null);
    await pair.daemon(a).waitLog(/Synchronization resumed: 1 extents still differ\./, (SYNC_RESUME_S + 5) * 1000);
    await waitFor("the retried extent to be copied", () => completed() > completed_before, 20_000);
    await pair.waitSynced(a);
    expect(await blockSha(pair, b)).toBe(sha256(second));
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
    expect(pair.daemon(a).log).not.toMatch(/Disconnected from the peer/); // the same connection
  }, 60_000 + SYNC_RESUME_S * 1000);
});

/**
 * `slow` was just sent, and a delay rule of `slow_ms` holds it at the disk: a WRITE of `data` at
 * OFFSET sent once it waits there (not in its batch) must be answered first, and `slow` after
 * the delay. Returns `slow`'s reply.
 */
async function overtakenBy(client: RawNbdClient, slow: bigint, slow_ms: number, data: Uint8Array): Promise<Reply> {
  const started = performance.now();
  await Bun.sleep(slow_ms / 5);
  const write = client.send({ command: NBD_CMD.WRITE, offset: OFFSET }, data);
  const first = await client.reply();
  const second = await client.reply();
  expect([first.cookie, first.error]).toEqual([write, 0]);
  expect([second.cookie, second.error]).toEqual([slow, 0]);
  expect(performance.now() - started).toBeGreaterThanOrEqual(slow_ms - 100); // the delay did fall on `slow`
  return second;
}

describe("a slow disk read holds up nothing behind it", () => {
  // A read the page cache cannot answer waits for the disk on a helper thread, on both nodes. The
  // delay rule slows the next read of one component (under a live rule the page cache "holds
  // nothing", as a cold disk); a write sent after the READ must be answered first. A read on the
  // event loop answers the READ first: the primary's loop, or the secondary's (memsync's write
  // waits for its "received"), is blocked until the read is done.
  const SLOW_READ_MS = 1500;
  for (const side of ["primary", "secondary"] as const) {
    test(`on the ${side}: a write sent after a READ is answered while the READ waits for the disk`, async () => {
      const { pair, a, b, client, faults, prefill } = await faultyPair();
      // On the secondary: the primary's own read fails, so the read goes to the peer (the extent is
      // clean, copied by the initial sync) and waits there.
      if (side === "primary") faults(a, `pread:${a.name}.img:delay=${SLOW_READ_MS}:1`);
      else {
        faults(a, `pread:${a.name}.img:EIO:1`);
        faults(b, `pread:${b.name}.img:delay=${SLOW_READ_MS}:1`);
      }
      const data = randomBytes(BLOCK_BYTES);
      const read = client.send({ command: NBD_CMD.READ, offset: PREFILL_OFFSET, length: BLOCK_BYTES });
      const reply = await overtakenBy(client, read, SLOW_READ_MS, data);
      expect(sha256(reply.data!)).toBe(sha256(prefill.subarray(0, BLOCK_BYTES)));
      faults(a, null);
      faults(b, null);
      expect((await pair.status(b)).statistics.reads).toBe(side === "primary" ? 0 : 1);
      expect(await blockSha(pair, a)).toBe(sha256(data));
      expect(await blockSha(pair, b)).toBe(sha256(data));
    }, 60_000);
  }

  test("the secondary leaving while a READ waits for its disk waits for it, then closes", async () => {
    const { pair, a, b, client, faults } = await faultyPair();
    faults(a, `pread:${a.name}.img:EIO:1`);
    faults(b, `pread:${b.name}.img:delay=${SLOW_READ_MS}:1`);
    const read = client.send({ command: NBD_CMD.READ, offset: PREFILL_OFFSET, length: BLOCK_BYTES });
    await Bun.sleep(SLOW_READ_MS / 5);
    await pair.role(b, "init"); // the worker stops with that READ still at the disk
    // Neither copy answered it: the read fails rather than return nothing or stale bytes.
    const reply = await client.reply();
    expect(reply.cookie).toBe(read);
    expect(reply.error).not.toBe(0);
    faults(a, null);
    faults(b, null);
    await pair.role(b, "secondary");
    await pair.waitSynced(a);
    // Closing the component under a read in flight, or answering it after the end, would have
    // thrown in the worker (its stderr is in this log).
    expect(pair.daemon(b).log).not.toContain("still in flight");
    expect(pair.daemon(b).log).not.toMatch(/assertion failed|Flush at disconnect failed|error:/i);
    expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
  }, 60_000);
});

describe("a slow disk flush holds up nothing behind it", () => {
  // A FLUSH waits for the disk (milliseconds on real disks), on a helper thread on both nodes. The
  // delay rule slows the next fdatasync on one component; the write sent after the FLUSH must be
  // answered first. A flush done on the event loop answers the FLUSH first on either node: the
  // primary's loop or the secondary's (which memsync waits on for "received") is blocked.
  const SLOW_FLUSH_MS = 1500;
  for (const side of ["primary", "secondary"] as const) {
    test(`on the ${side}: a write sent after a FLUSH is answered while the FLUSH waits for the disk`, async () => {
      const { pair, a, b, client, faults } = await faultyPair();
      const node = side === "primary" ? a : b;
      await nbdWrite(client, OFFSET, randomBytes(BLOCK_BYTES)); // the extent is dirty: no map update (and its fdatasync) next
      await nbdFlush(client); // nothing held: no background flush can take the delay instead
      faults(node, `fdatasync:${node.name}.img:delay=${SLOW_FLUSH_MS}:1`);
      const data = randomBytes(BLOCK_BYTES);
      await overtakenBy(client, client.send({ command: NBD_CMD.FLUSH }), SLOW_FLUSH_MS, data);
      faults(node, null);
      expect(await blockSha(pair, a)).toBe(sha256(data));
      expect(await blockSha(pair, b)).toBe(sha256(data));
      expect((await pair.status(a)).statistics.local_errors.flush).toBe(0);
    }, 60_000);
  }

  test("the secondary leaving while its FLUSH waits for the disk waits for it, then flushes and closes", async () => {
    const { pair, a, b, client, faults } = await faultyPair();
    const data = randomBytes(BLOCK_BYTES);
    await nbdWrite(client, OFFSET, data);
    await nbdFlush(client);
    faults(b, `fdatasync:${b.name}.img:delay=${SLOW_FLUSH_MS}:1`);
    const flush = client.send({ command: NBD_CMD.FLUSH });
    await Bun.sleep(SLOW_FLUSH_MS / 5);
    await pair.role(b, "init"); // the worker stops with that FLUSH still at the disk
    const reply = await client.reply();
    expect(reply.cookie).toBe(flush);
    faults(b, null);
    await pair.role(b, "secondary");
    await pair.waitSynced(a);
    // Closing the component under a flush in flight, or answering it after the end, would have
    // thrown in the worker (its stderr is in this log).
    expect(pair.daemon(b).log).not.toContain("still in flight");
    expect(pair.daemon(b).log).not.toMatch(/assertion failed|Flush at disconnect failed|error:/i);
    expect(await blockSha(pair, b)).toBe(sha256(data));
  }, 60_000);
});
