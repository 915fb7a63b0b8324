// Promotion of a secondary whose copy is incomplete (docs/operations.md, "A secondary whose copy is
// incomplete"): the secondary marks its copy incomplete while the primary synchronizes it and
// complete once the primary's IN_SYNC says the pass is done. The primary dies mid-resync: `hastctl
// role primary` there is refused (the node stays secondary), `--force` takes the copy as it is and
// owes the next secondary a full copy, and the old primary rejoining brings back every byte it had.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { $ } from "bun";
import { controlRequest } from "../../src/ctl/client.ts";
import { nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { FLAG_COPY_INCOMPLETE, FLAG_SYNC_FULL_ON_CONNECT } from "../../src/core/metadata.ts";
import { LocalDisk } from "../../src/io/disk.ts";
import { MetadataStore } from "../../src/io/metadata-store.ts";
import { Harness, MiB, Pair, waitFor } from "./harness.ts";
import { TcpProxy } from "./tcp-proxy.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("promotion");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const DATA_BYTES = 32 * MiB;
const DEGRADED_BYTES = 12 * MiB;
/** Slow enough that the resync of DEGRADED_BYTES lasts seconds. */
const LINK_BYTES_PER_S = 2 * MiB;

describe("promotion of an incomplete copy", () => {
  test("refused mid-resync, forced on request; the old primary rejoining restores every byte", async () => {
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
    h.onCleanup(() => proxy.stop());
    pair.reconfigure({ remote: { [a.name]: proxy.address } });
    await pair.up();
    await pair.waitSynced(a);
    // The first pass's IN_SYNC reaches the secondary: its copy is complete.
    await waitFor("b's copy complete", async () => (await pair.status(b)).copy_incomplete === false, 10_000);
    expect((await pair.dump(b)).flags & FLAG_COPY_INCOMPLETE).toBe(0);

    await pair.kill(b);
    const client = await RawNbdClient.connect({ unix: pair.nbd(a) });
    await client.handshake({ export_name: pair.name });
    for (let done = 0; done < DEGRADED_BYTES; done += MiB) await nbdWrite(client, 2 * done, randomBytes(MiB));
    client.close();
    const primary_data = await pair.dataSha256(a);

    proxy.throttle(LINK_BYTES_PER_S);
    const passes = () => pair.daemon(a).log.split("Synchronization started.").length;
    const before = passes();
    await pair.start(b);
    await pair.role(b, "secondary");
    await waitFor("the resync to start", () => passes() > before, 15_000);
    expect((await pair.status(b)).copy_incomplete).toBe(true);
    expect(await pair.h.hastctlOk(b, pair.confOf(b), ["list", pair.name])).toContain("copy: incomplete");
    expect(await pair.h.hastctlOk(b, pair.confOf(b), ["metrics", pair.name])).toContain(`hast_copy_incomplete{resource="${pair.name}"} 1`);
    await pair.kill(a);
    await pair.daemon(b).waitLog("Disconnected from the primary", 15_000);
    // The secondary's worker has ended with the link; hastd still says what it last reported.
    await waitFor("b's secondary worker to end", async () => (await pair.status(b)).workerpid === 0, 10_000);
    expect((await pair.status(b)).copy_incomplete).toBe(true);
    expect(await pair.h.hastctlOk(b, pair.confOf(b), ["metrics", pair.name])).toContain(`hast_copy_incomplete{resource="${pair.name}"} 1`);

    // Refused: the node stays secondary, hastctl names why and exits non-zero.
    const refused = await h.hastctl(b, pair.confOf(b), ["role", "primary", pair.name]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("not promoted: this node's copy is incomplete");
    await pair.daemon(b).waitLog("Not promoted: this node's copy is incomplete: a synchronization toward it did not finish");
    await pair.daemon(b).waitLog("The primary worker refused this node's copy. Role changed back to secondary.");
    expect((await pair.status(b)).role).toBe("secondary");
    expect((await pair.dump(b)).flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
    expect(await pair.h.hastctlOk(b, pair.confOf(b), ["dump", pair.name])).toContain("flags: copy incomplete (not promotable)");
    expect(await pair.dataSha256(b)).not.toBe(primary_data); // what the refusal protected

    // Forced: served as it is; the next secondary is owed the whole device.
    await pair.h.hastctlOk(b, pair.confOf(b), ["role", "--force", "primary", pair.name]);
    await pair.daemon(b).waitLog("Promoted by force although this node's copy is incomplete");
    expect((await pair.status(b)).role).toBe("primary");
    const flags = (await pair.dump(b)).flags;
    expect(flags & FLAG_COPY_INCOMPLETE).toBe(0);
    expect(flags & FLAG_SYNC_FULL_ON_CONNECT).toBe(FLAG_SYNC_FULL_ON_CONNECT);

    // The old primary rejoins as secondary. Nothing was written on b since, so a's copy is the
    // newer one (decision row 3) and comes back whole: all of it, as the flag asks.
    proxy.throttle(0);
    await pair.start(a);
    await pair.role(a, "secondary");
    await pair.daemon(b).waitLog(`Synchronization started. ${DATA_BYTES} bytes to go.`, 15_000);
    await pair.waitSynced(b);
    expect(await pair.dataSha256(b)).toBe(primary_data);
    expect(await pair.dataSha256(a)).toBe(primary_data);
  }, 120_000);

  test("a primary worker hastd restarts on a copy marked incomplete is refused: the role goes back to init", async () => {
    // The mark a primary writes when more extents are stale than its metadata lists (docs/format.md):
    // set here behind the running worker, which is then killed.
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a } = pair;
    await pair.up();
    await pair.waitSynced(a);
    const disk = LocalDisk.open(pair.disk(a), { write: true });
    try {
      const store = new MetadataStore(disk);
      const { meta } = store.read();
      store.write({ ...meta, flags: meta.flags | FLAG_COPY_INCOMPLETE });
    } finally {
      disk.close();
    }
    const worker = (await pair.status(a)).workerpid;
    process.kill(worker, "SIGKILL");
    await pair.daemon(a).waitLog("The restarted primary worker refused this node's copy (the log says why). Changing resource role back to init.", 15_000);
    expect(pair.daemon(a).log).toContain("(primary) error: Not promoted: this node's copy is incomplete");
    expect(await pair.status(a)).toMatchObject({ role: "init", workerpid: 0, copy_incomplete: true });
    expect(await pair.h.hastctlOk(a, pair.confOf(a), ["list", pair.name])).toContain("copy: incomplete");
  }, 60_000);
});

describe("role changes that overlap", () => {
  test("a promotion and a demotion sent together to a connected secondary end in a role its worker matches", async () => {
    // Without one-at-a-time role changes, the promotion stopped the secondary worker, the demotion
    // found no worker and returned, then the promotion started a primary worker under role init:
    // serving, replicating, and beyond `hastctl role` (it stops only the worker hastd tracks).
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 } });
    const { a, b } = pair;
    await pair.up();
    await pair.waitSynced(a);
    const address = { kind: "uds" as const, path: b.control };
    for (const [first, second] of [["primary", "init"], ["init", "primary"]] as const) {
      if ((await pair.status(b)).role !== "secondary") await pair.role(b, "secondary");
      await waitFor("B's secondary worker", async () => (await pair.status(b)).workerpid > 0, 15_000);
      const replies = await Promise.all([first, second].map((role) => controlRequest(address, { cmd: "role", role, resources: ["r0"] })));
      for (const r of replies) expect(r.error).toBe(0);
      // Either may have come first; the worker is what the role left has: B's hastd has a primary
      // worker (whatever it tracks) only if B is primary.
      const settled = async () => {
        const s = await pair.status(b);
        const workers = (await $`pgrep -P ${pair.daemon(b).pid} -f ${"hastd: r0 \\(primary\\)"}`.nothrow().quiet()).stdout.toString();
        return { role: s.role, tracked: s.workerpid > 0, running: workers.split("\n").filter(Boolean).length };
      };
      const consistent = (x: Awaited<ReturnType<typeof settled>>) =>
        (x.role === first || x.role === second) && x.tracked === (x.role === "primary") && x.running === (x.role === "primary" ? 1 : 0);
      await waitFor("B's role and worker to agree", async () => consistent(await settled()), 10_000).catch(() => undefined);
      const end = await settled();
      expect(end, JSON.stringify(end)).toSatisfy(consistent);
      if (end.role === "primary") await pair.role(b, "init");
    }
  }, 90_000);
});
