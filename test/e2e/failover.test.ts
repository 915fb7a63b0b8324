// End-to-end failover (issue 5): two network namespaces behind a switch namespace, in each a
// compiled hastd and ucarp calling ops/ucarp/vip-up.sh / vip-down.sh → ops/switch/hast-switch.
// A third case crashes A while it resynchronizes B: B's promotion is refused, and the
// docs/operations.md §8 runbook brings A back. A fourth runs that crash with keepalived instead,
// `hast-switch check` as its track_script: B is held in FAULT (never master, no refused
// promotion), and A, rebooted, takes the address back and finishes the copy by itself.
// Node A is master and primary with ext4 mounted on its /dev/hast/r0; files are written and
// fsynced. Then A fails — crashed (SIGKILL) in one case, cut off the network in the other — and
// ucarp on B takes the address, hast-switch promotes B, fsck passes, the file system mounts and
// every fsynced file is intact. Then A returns and the pair must end complete and identical,
// through a resync (crash) or through split-brain detection and the docs/operations.md §5
// runbook (partition: A's demotion unmounts its file system, which writes to it while apart).
//
// Both nodes share this host's PID namespace, so hast-switch's "no hastd: r0 (secondary)
// worker left" check sees both nodes' workers. No promotion here happens while the other node
// has a secondary worker (the scenario keeps at most one primary connected), so the check only
// ever waits for the promoting node's own worker, as it would on separate hosts; the bootstrap
// waits for B's worker to go before A's first promotion to keep it that way.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, writeSync } from "node:fs";
import { join } from "node:path";
import { BUN, Harness, MiB, REPO_ROOT, run, runOk, sha256File, skipReason, waitFor } from "../integration/harness.ts";
import { type Binaries, type E2eNode, FailoverPair, type Manager, PEER_TIMEOUT_S, type SwitchRun } from "./pair.ts";
import { TestNetwork } from "./network.ts";

const TOOLS = ["ip", "nsenter", "ucarp", "nbdfuse", "fusermount3", "losetup", "mkfs.ext4", "e2fsck", "fsfreeze", "umount"];
const reason = skipReason("e2e failover (namespaces, ucarp, /dev/hast, ext4)", { root: true, tools: TOOLS, fuse: true });
const keepalivedReason = reason ?? skipReason("e2e failover with keepalived", { root: true, tools: ["keepalived"] });

const DATA_BYTES = 64 * MiB;
const BUILD_TIMEOUT_MS = 120_000;
/** Typically 35-50 s per case; a machine busy with other suites has needed 90 s. */
const CASE_TIMEOUT_MS = 180_000;
/** ucarp's 3 × advbase, the peer timeout, fsck and mount, with room for a loaded machine. */
const FAILOVER_WAIT_MS = 60_000;
const SYNC_WAIT_MS = 60_000;
const SWITCH_WAIT_MS = 30_000;
/** Slow enough that B's resync of FIRST_FILES lasts while A crashes (seconds), not long after. */
const RESYNC_LINK_BITS_PER_S = 4_000_000;
const PEER_TIMEOUT_MS = PEER_TIMEOUT_S * 1000;

let bin: Binaries;

beforeAll(async () => {
  if (reason) return;
  const build = await Harness.create("e2e-build");
  const outdir = build.path("dist");
  await runOk([BUN, join(REPO_ROOT, "src/cli/build.ts"), "--outdir", outdir], { timeout_ms: BUILD_TIMEOUT_MS });
  bin = { hastd: join(outdir, "hastd"), hastctl: join(outdir, "hastctl") };
}, BUILD_TIMEOUT_MS + 10_000);

afterAll(async () => {
  await Harness.cleanupAll();
});

// ---------------------------------------------------------------------------- files

type Digests = Map<string, string>;

/** Writes files of random bytes under dir, fsyncs each and the directories; returns their sha256. */
function writeFsynced(dir: string, sizes: Record<string, number>): Digests {
  const digests: Digests = new Map();
  const dirs = new Set([dir]);
  for (const [name, size_bytes] of Object.entries(sizes)) {
    const path = join(dir, name);
    const parent = join(path, "..");
    mkdirSync(parent, { recursive: true });
    dirs.add(parent);
    const data = randomBytes(size_bytes);
    const fd = openSync(path, "w");
    try {
      for (let done = 0; done < data.length;) done += writeSync(fd, data, done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    digests.set(name, new Bun.CryptoHasher("sha256").update(data).digest("hex"));
  }
  for (const d of dirs) {
    const fd = openSync(d, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  return digests;
}

async function expectFiles(dir: string, digests: Digests): Promise<void> {
  for (const [name, sha256] of digests) expect(`${name} ${await sha256File(join(dir, name))}`).toBe(`${name} ${sha256}`);
}

const FIRST_FILES = { "small.bin": 4096, "medium.bin": 300 * 1024, "large.bin": 3 * MiB, "dir/nested.bin": 1 * MiB };

/** Prints how long each phase of a case took, e.g. "e2e crash: bring-up 14.0 s, failover 9.1 s". */
class Timeline {
  private at = performance.now();
  private phases: string[] = [];

  constructor(private readonly label: string) {}

  mark(phase: string): void {
    const now = performance.now();
    this.phases.push(`${phase} ${((now - this.at) / 1000).toFixed(1)} s`);
    this.at = now;
  }

  print(): void {
    console.log(`e2e ${this.label}: ${this.phases.join(", ")}`);
  }
}

// ---------------------------------------------------------------------------- steps

/** Namespaces, both nodes and the harness, all undone by h.cleanup() (also from afterAll). */
async function setUp(manager: Manager = "ucarp"): Promise<{ h: Harness; pair: FailoverPair }> {
  const h = await Harness.create("e2e");
  const net = await TestNetwork.create(`hast-e2e-${randomBytes(3).toString("hex")}`);
  h.onCleanup(() => net.destroy());
  const pair = new FailoverPair(h, bin, net, DATA_BYTES, manager);
  h.onCleanup(() => pair.stopAll());
  return { h, pair };
}

async function waitStatus(pair: FailoverPair, node: E2eNode, what: string, ok: (s: Record<string, any>) => boolean, timeout_ms: number) {
  let last: Record<string, any> = {};
  try {
    return await waitFor(`${node.name}: ${what}`, async () => {
      last = await pair.status(node);
      return ok(last) ? last : null;
    }, timeout_ms);
  } catch (err) {
    throw new Error(`${(err as Error).message}; last status ${JSON.stringify(last)}\n${pair.report(node)}\n${pair.report(pair.other(node))}`);
  }
}

const inSync = (s: Record<string, any>) => s.role === "primary" && s.status === "complete" && s.dirty === 0 && s.sync === undefined;

/** Waits until the node's last hast-switch run is `expected`, and `also` holds. */
async function waitLastSwitch(pair: FailoverPair, node: E2eNode, expected: SwitchRun, also: () => Promise<boolean> | boolean, timeout_ms: number) {
  try {
    await waitFor(`${node.name}: last hast-switch run ${expected.action} exiting ${expected.code}`, async () => {
      const last = pair.switchRuns(node).at(-1);
      return last?.action === expected.action && last.code === expected.code && (await also());
    }, timeout_ms);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${pair.report(node)}`);
  }
}

/**
 * A new pair set up by hand (docs/operations.md §1), ext4 made on A's /dev/hast/r0, then handed
 * to the failover manager: A's first, so A is master, then B's, which does not preempt. A is
 * primary with the file system mounted, B secondary and connected. ucarp (advskew 100 on A, 0 on
 * B) runs the down script at start, then the up script once master; keepalived (priority 100 on
 * A, 200 on B) notifies BACKUP, possibly FAULT until its check has passed twice, then MASTER.
 */
async function bringUp(pair: FailoverPair): Promise<void> {
  const { a, b } = pair;
  for (const node of pair.nodes) await pair.hastctlOk(node, ["create", "r0"]);
  for (const node of pair.nodes) await pair.startHastd(node);
  await pair.hastctlOk(b, ["role", "secondary", "r0"]);
  await pair.hastctlOk(a, ["role", "primary", "r0"]);
  await waitStatus(pair, a, "initial synchronization complete", inSync, SYNC_WAIT_MS);
  await runOk(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", pair.device(a)], { timeout_ms: 60_000 });
  await pair.hastctlOk(a, ["role", "secondary", "r0"]);
  await waitFor("B's secondary worker to exit after A's demotion", () => pair.workers(b, "secondary").length === 0, SWITCH_WAIT_MS);

  pair.startManager(a);
  if (pair.manager === "ucarp") {
    expect(await pair.waitSwitchRuns(a, 2, SWITCH_WAIT_MS)).toEqual({ action: "primary", code: 0 });
    expect(pair.switchRuns(a)[0]).toEqual({ action: "secondary", code: 0 });
  } else {
    await waitLastSwitch(pair, a, { action: "primary", code: 0 }, () => pair.isMounted(a), FAILOVER_WAIT_MS);
  }
  expect(await pair.net.hasVip(a.net)).toBe(true);
  expect(pair.isMounted(a)).toBe(true);

  pair.startManager(b);
  if (pair.manager === "ucarp") expect(await pair.waitSwitchRuns(b, 1, SWITCH_WAIT_MS)).toEqual({ action: "secondary", code: 0 });
  else await waitLastSwitch(pair, b, { action: "secondary", code: 0 }, () => true, SWITCH_WAIT_MS);
  await waitStatus(pair, a, "connected to B", inSync, SYNC_WAIT_MS);
  // B's check fails while A's promotion resynchronizes it (FAULT); it rises again once complete.
  if (pair.manager === "keepalived") await waitFor("B's keepalived in BACKUP", () => pair.keepalivedState(b) === "BACKUP", SWITCH_WAIT_MS);
  expect(pair.workers(b, "secondary").length).toBe(1);
  expect(await pair.net.hasVip(b.net)).toBe(false);
}

/** B was promoted by ucarp → vip-up.sh → hast-switch primary: fsck, mount, data intact. */
async function expectPromoted(pair: FailoverPair, node: E2eNode, runs: number, digests: Digests): Promise<void> {
  const promoted = await pair.waitSwitchRuns(node, runs, FAILOVER_WAIT_MS);
  expect(promoted, pair.report(node)).toEqual({ action: "primary", code: 0 });
  const log = pair.switchLogText(node);
  // e2fsck -p replayed the journal of the file system A had mounted and found it clean.
  expect(log).toContain(`${pair.device(node)}: clean,`);
  expect(log).toContain(`r0: mounted ${pair.device(node)} on ${node.mnt}`);
  expect(await pair.net.hasVip(node.net)).toBe(true);
  expect(pair.isMounted(node)).toBe(true);
  expect(await pair.status(node)).toMatchObject({ role: "primary", status: "degraded" });
  await expectFiles(node.mnt, digests);
}

/** A crashed node reboots: nothing of its runtime state is left; hastd starts, and ucarp, backup
 * beside the master, demotes it at start (its third hast-switch run, after bringUp's two). */
async function rebootAsBackup(pair: FailoverPair, node: E2eNode): Promise<void> {
  await pair.rebootCleanup(node);
  await pair.startHastd(node);
  pair.startManager(node);
  expect(await pair.waitSwitchRuns(node, 3, SWITCH_WAIT_MS)).toEqual({ action: "secondary", code: 0 });
}

/** B leaves for a while (role init), A writes FIRST_FILES, then B comes back over a slow link: A
 * resynchronizes it, and B's copy is marked incomplete meanwhile. Returns the files' digests. */
async function resyncUnderWay(pair: FailoverPair): Promise<Digests> {
  const { a, b } = pair;
  await pair.hastctlOk(b, ["role", "init", "r0"]);
  await waitStatus(pair, a, "A degraded", (s) => s.status === "degraded", SWITCH_WAIT_MS);
  const files = writeFsynced(a.mnt, FIRST_FILES);
  await pair.net.throttle(RESYNC_LINK_BITS_PER_S);
  await pair.hastctlOk(b, ["role", "secondary", "r0"]);
  await waitStatus(pair, b, "B's copy marked incomplete", (s) => s.copy_incomplete === true, SWITCH_WAIT_MS);
  expect((await pair.status(a)).sync).toBeDefined(); // the resync is under way
  return files;
}

/** Freezes the primary's file system and checks both data areas are byte-identical. */
async function expectIdentical(pair: FailoverPair, primary: E2eNode): Promise<void> {
  await runOk(["fsfreeze", "-f", primary.mnt]);
  try {
    await waitStatus(pair, primary, "in sync after the freeze", inSync, SYNC_WAIT_MS);
    expect(await pair.dataSha256(pair.other(primary))).toBe(await pair.dataSha256(primary));
  } finally {
    await run(["fsfreeze", "-u", primary.mnt]);
  }
}

// ---------------------------------------------------------------------------- cases

describe.skipIf(!!reason)("failover with ucarp and hast-switch between two network namespaces", () => {
  test("A crashes (SIGKILL): B takes over with every fsynced file; A returns as secondary and resyncs", async () => {
    const { h, pair } = await setUp();
    try {
      const { a, b } = pair;
      const timeline = new Timeline("crash");
      await bringUp(pair);
      const files = writeFsynced(a.mnt, FIRST_FILES);
      timeline.mark("bring-up");

      await pair.crash(a);
      await expectPromoted(pair, b, 2, files);
      timeline.mark("failover to B");
      const later = writeFsynced(b.mnt, { "after-failover.bin": 2 * MiB });

      await rebootAsBackup(pair, a);
      await waitStatus(pair, b, "A resynchronized", inSync, SYNC_WAIT_MS);
      timeline.mark("A back and resynchronized");
      expect(await pair.status(a)).toMatchObject({ role: "secondary", status: "complete", dirty: 0 });
      expect(b.hastd!.output).toMatch(/Synchronization (complete|started)/);
      await expectIdentical(pair, b);
      await expectFiles(b.mnt, new Map([...files, ...later]));

      // B is preferred and A does not preempt: A stayed backup (no address, no promotion).
      await Bun.sleep(3_000);
      expect(await pair.net.hasVip(a.net)).toBe(false);
      expect(pair.switchRuns(a).length).toBe(3);
      expect(await pair.status(a)).toMatchObject({ role: "secondary", status: "complete" });
      timeline.print();
    } finally {
      await h.cleanup();
    }
  }, CASE_TIMEOUT_MS);

  test("A crashes while resynchronizing B: B refuses to be promoted; A back as primary finishes the copy and takes the address back", async () => {
    const { h, pair } = await setUp();
    try {
      const { a, b } = pair;
      const timeline = new Timeline("crash mid-resync");
      await bringUp(pair);
      const files = await resyncUnderWay(pair);
      timeline.mark("bring-up, outage, resync started");

      await pair.crash(a);
      // ucarp makes B master; hast-switch primary stops at the refusal: no mount, B stays secondary.
      expect(await pair.waitSwitchRuns(b, 2, FAILOVER_WAIT_MS), pair.report(b)).toEqual({ action: "primary", code: 1 });
      expect(pair.switchLogText(b)).toContain("r0: hastctl role primary failed");
      expect(pair.switchLogText(b)).toContain("not promoted: this node's copy is incomplete");
      expect(pair.isMounted(b)).toBe(false);
      expect(await pair.status(b)).toMatchObject({ role: "secondary", copy_incomplete: true });
      expect(await pair.net.hasVip(b.net)).toBe(true); // ucarp has no notion of a node that must not be master
      timeline.mark("failover refused");

      // The runbook (operations.md §8, "A refused promotion"): A back, made primary by hand, finishes
      // the copy; then the address moves to A by stopping B's ucarp.
      await pair.net.throttle(null);
      await rebootAsBackup(pair, a);
      await pair.hastctlOk(a, ["role", "primary", "r0"]);
      await waitStatus(pair, a, "B's copy finished", inSync, SYNC_WAIT_MS);
      await waitStatus(pair, b, "B's copy complete", (s) => s.copy_incomplete === false, SWITCH_WAIT_MS);
      timeline.mark("A primary again, copy finished");
      await pair.stopManager(b);
      expect(await pair.waitSwitchRuns(a, 4, FAILOVER_WAIT_MS), pair.report(a)).toEqual({ action: "primary", code: 0 });
      expect(pair.isMounted(a)).toBe(true);
      await expectFiles(a.mnt, files);
      await expectIdentical(pair, a);
      timeline.mark("address back on A");
      timeline.print();
    } finally {
      await h.cleanup();
    }
  }, CASE_TIMEOUT_MS);

  test("the link is cut: B takes over; at reconnect A is demoted, split-brain is reported and the runbook resyncs A", async () => {
    const { h, pair } = await setUp();
    try {
      const { a, b } = pair;
      const timeline = new Timeline("partition");
      await bringUp(pair);
      const files = writeFsynced(a.mnt, FIRST_FILES);
      timeline.mark("bring-up");

      await pair.net.cut();
      await expectPromoted(pair, b, 2, files);
      timeline.mark("failover to B");
      // ucarp does not fence: A never heard B and is still master and primary.
      expect(await pair.net.hasVip(a.net)).toBe(true);
      expect(await pair.status(a)).toMatchObject({ role: "primary" });
      const later = writeFsynced(b.mnt, { "during-partition.bin": 2 * MiB });

      await pair.net.heal();
      // A hears B's more frequent adverts: BACKUP → vip-down.sh → hast-switch secondary.
      expect(await pair.waitSwitchRuns(a, 3, SWITCH_WAIT_MS)).toEqual({ action: "secondary", code: 0 });
      expect(pair.isMounted(a)).toBe(false);
      expect(await pair.net.hasVip(a.net)).toBe(false);
      expect(await pair.net.hasVip(b.net)).toBe(true);

      // A's unmount wrote to A while apart, and B wrote too: split-brain, never merged
      // (operations.md §5): flagged on both nodes, B stays degraded, nothing is copied.
      await waitStatus(pair, b, "split-brain reported", (s) => s.split_brain === true, SWITCH_WAIT_MS);
      await waitStatus(pair, a, "split-brain reported", (s) => s.split_brain === true, SWITCH_WAIT_MS);
      timeline.mark("heal to A demoted and split-brain reported");
      expect(b.hastd!.output).toContain("Split-brain detected");
      expect(await pair.status(b)).toMatchObject({ role: "primary", status: "degraded" });
      expect(b.hastd!.output).not.toMatch(/Synchronization started/);
      // hast-switch refuses to promote while split-brain is reported (A is secondary, flagged).
      const refused = await run([a.switchWrapper, "primary", "r0"], { env: pair.env(a), timeout_ms: SWITCH_WAIT_MS });
      expect(refused.code).toBe(1);
      expect(pair.switchLogText(a)).toContain("r0: split-brain is reported; not promoting anything");

      // The runbook on the node whose changes are discarded (A): init, create, secondary.
      await pair.hastctlOk(a, ["role", "init", "r0"]);
      await pair.hastctlOk(a, ["create", "r0"]);
      await pair.hastctlOk(a, ["role", "secondary", "r0"]);
      await waitStatus(pair, b, "A fully resynchronized", inSync, SYNC_WAIT_MS);
      timeline.mark("runbook and full resync");
      expect(await pair.status(a)).toMatchObject({ role: "secondary", status: "complete", dirty: 0 });
      expect((await pair.status(b)).split_brain ?? false).toBe(false);
      await expectIdentical(pair, b);
      await expectFiles(b.mnt, new Map([...files, ...later]));
      expect(await pair.net.hasVip(a.net)).toBe(false);
      expect(pair.switchRuns(a).filter((r) => r.action === "primary" && r.code === 0).length).toBe(1);
      timeline.print();
    } finally {
      await h.cleanup();
    }
  }, CASE_TIMEOUT_MS);
});

describe.skipIf(!!keepalivedReason)("failover with keepalived, notify.sh and hast-switch check", () => {
  test("A crashes while resynchronizing B: B's check keeps it off the address; A, rebooted, takes it back by itself and finishes the copy", async () => {
    const { h, pair } = await setUp("keepalived");
    try {
      const { a, b } = pair;
      const timeline = new Timeline("keepalived, crash mid-resync");
      await bringUp(pair);
      const files = await resyncUnderWay(pair);
      // `hast-switch check` fails on B now: keepalived holds it in FAULT.
      await waitFor("B's keepalived to enter FAULT", () => pair.keepalivedState(b) === "FAULT", SWITCH_WAIT_MS);
      timeline.mark("bring-up, outage, resync started, B in FAULT");

      await pair.crash(a);
      // Longer than a failover takes (3 missed adverts, the peer timeout): B neither takes the
      // address nor tries a promotion that would be refused.
      await Bun.sleep(3_000 + 2 * PEER_TIMEOUT_MS);
      expect(await pair.net.hasVip(b.net)).toBe(false);
      expect(pair.switchRuns(b).filter((r) => r.action === "primary"), pair.report(b)).toEqual([]);
      expect(await pair.status(b)).toMatchObject({ role: "secondary", copy_incomplete: true });
      timeline.mark("A crashed, B kept off the address");

      // A reboots: nobody advertises, so its keepalived becomes master and promotes it; the copy to
      // B finishes, B's check passes again and keepalived takes B back to BACKUP.
      await pair.net.throttle(null);
      await pair.rebootCleanup(a);
      await pair.startHastd(a);
      pair.startManager(a);
      await waitLastSwitch(pair, a, { action: "primary", code: 0 }, () => pair.isMounted(a), FAILOVER_WAIT_MS);
      expect(await pair.net.hasVip(a.net)).toBe(true);
      await waitStatus(pair, a, "B's copy finished", inSync, SYNC_WAIT_MS);
      await waitStatus(pair, b, "B's copy complete", (s) => s.copy_incomplete === false, SWITCH_WAIT_MS);
      await waitFor("B's keepalived back to BACKUP", () => pair.keepalivedState(b) === "BACKUP", SWITCH_WAIT_MS);
      timeline.mark("A back as master and primary, copy finished, B backup");
      expect(await pair.net.hasVip(b.net)).toBe(false);
      await expectFiles(a.mnt, files);
      await expectIdentical(pair, a);
      timeline.print();
    } finally {
      await h.cleanup();
    }
  }, CASE_TIMEOUT_MS);
});
