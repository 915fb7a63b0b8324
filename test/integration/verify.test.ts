// Online verification (`hastctl verify`): two hastd on 127.0.0.1, random data replicated, then the
// secondary's component changed behind hastd's back (bit rot, a bug, a restore gone wrong). The
// verification must find exactly the chunks changed, copy the primary's data over them, and leave
// both data areas identical (sha256 from the files); it must find nothing while the application
// writes during it, and it refuses, stops and ends on a lost link with a clear word. Its pace
// (verify_rate) and --resume; and the synchronization by the same digests (resync_digest).
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { closeSync, openSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { Harness, MiB, nbdUpload, Pair, randomFile, skipReason, waitFor, type NodeInfo } from "./harness.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("verify");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const skip = skipReason("online verification", { tools: ["nbdcopy"] });

const DATA_BYTES = 64 * MiB;
/** Where the secondary's copy is damaged: three 1 MiB chunks, one of them twice. Each is the last
 * chunk of its 2 MiB extent: a difference sends the whole extent to the synchronization, and a
 * chunk of it not yet handed out is then skipped rather than compared, which would make the
 * counts depend on the timing. */
const DAMAGE = [5 * MiB + 4096, 17 * MiB, 17 * MiB + 512 * 1024, 41 * MiB + 1 * MiB - 1];

/** `secondary_env`: the secondary's hastd environment (an older protocol version); `settings`:
 * more of the resource's statements. */
async function syncedPair(o: { faults?: boolean; secondary_env?: Record<string, string>; settings?: Record<string, string> } = {}): Promise<{ pair: Pair; a: NodeInfo; b: NodeInfo; sha256: string; faults: (node: NodeInfo, rules: string | null) => void }> {
  const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4, ...o.settings } });
  const rulesFile = (node: NodeInfo) => h.path(`faults-${node.name}`);
  const { a, b } = pair;
  pair.reconfigure({
    env: Object.fromEntries(pair.nodes.map((n) => [n.name, {
      ...(o.faults ? { HAST_FAULT_INJECT_FILE: rulesFile(n) } : {}), ...(n === b ? o.secondary_env : {}),
    }])),
  });
  await pair.up({ create_args: ["--initial-sync", "none"] });
  await pair.waitSynced(a);
  const data = await randomFile(h, "data.bin", DATA_BYTES);
  await nbdUpload(data.path, pair.uri(a));
  await pair.waitSynced(a);
  let serial = 0;
  const faults = (node: NodeInfo, rules: string | null) => {
    if (rules === null) return rmSync(rulesFile(node), { force: true });
    const tmp = h.path(`faults-${node.name}.${serial++}`);
    writeFileSync(tmp, rules);
    renameSync(tmp, rulesFile(node));
  };
  return { pair, a, b, sha256: data.sha256, faults };
}

async function verify(pair: Pair, node: NodeInfo, args: string[] = []) {
  return await h.hastctl(node, pair.confOf(node), ["verify", ...args, pair.name]);
}

/** The last verification's report once there is one newer than `after` (an ISO time). */
async function lastVerify(pair: Pair, node: NodeInfo, after = "", timeout_ms = 60_000): Promise<Record<string, any>> {
  return await waitFor("the verification to end", async () => {
    const s = await pair.status(node);
    return s.verify === undefined && s.last_verify && s.last_verify.finished > after ? s.last_verify : null;
  }, timeout_ms);
}

/** Bytes sent on the established TCP connection whose local (`sport`) or remote (`dport`) port is
 * `port`, as the kernel counts them (ss's bytes_sent). */
function bytesSent(side: "sport" | "dport", port: number): number {
  const ss = Bun.spawnSync(["ss", "-Htin", "state", "established", `( ${side} = :${port} )`]);
  const found = [...ss.stdout.toString().matchAll(/bytes_sent:(\d+)/g)];
  if (ss.exitCode !== 0 || found.length !== 1) throw new Error(`ss: no single connection with ${side} ${port}: ${ss.stdout}${ss.stderr}`);
  return Number(found[0]![1]);
}

/** Overwrites `length` bytes of the node's data area at `offset` with a pattern, behind hastd's back. */
/** Inverts `length` bytes of the node's data at `offset` (a fixed pattern would leave alone a byte
 * of the random data that already held it: a chunk then compared equal, 1 run in 128). */
async function damage(pair: Pair, node: NodeInfo, offset: number, length = 1): Promise<void> {
  const fd = openSync(pair.disk(node), "r+");
  try {
    const at = (await pair.region(node)).localoff + offset;
    const bytes = Buffer.alloc(length);
    expect(readSync(fd, bytes, 0, length, at)).toBe(length);
    for (let i = 0; i < length; i++) bytes[i]! ^= 0xff;
    writeSync(fd, bytes, 0, length, at);
  } finally {
    closeSync(fd);
  }
}

describe("hastctl verify", () => {
  // A secondary of this build answers each chunk's SHA-256; one that speaks protocol version 3 at
  // most (an older build, mid-upgrade) sends its chunks themselves.
  test.skipIf(skip !== null).each([
    ["sha256", "by SHA-256", {}],
    ["data", "by the peer's data", { HASTD_PROTOCOL_VERSION_MAX: "3" }],
  ] as const)("compared %s: finds the chunks damaged on the secondary, copies the primary's data over them, and a second pass finds nothing", async (compare, how, secondary_env) => {
    const { pair, a, b, sha256 } = await syncedPair({ secondary_env });
    expect(pair.daemon(b).log).toContain(`running peer protocol versions 1 to ${compare === "data" ? 3 : 4}`);
    for (const offset of DAMAGE) await damage(pair, b, offset);
    expect(await pair.dataSha256(b)).not.toBe(sha256);

    // What the secondary sent on the replication link during the pass (the kernel's count for the
    // connection): 32 bytes a chunk, or the chunks themselves.
    const sent_before = bytesSent("sport", b.port);
    const started = await verify(pair, a);
    expect(started.code).toBe(0);
    const last = await lastVerify(pair, a);
    const sent = bytesSent("sport", b.port) - sent_before;
    if (compare === "sha256") expect(sent).toBeLessThan(MiB);
    else expect(sent).toBeGreaterThan(DATA_BYTES);
    expect(last.ended).toBe("complete");
    expect(last.compare).toBe(compare);
    expect(last.total_bytes).toBe(DATA_BYTES);
    expect(last.differ_chunks).toBe(3); // 1 MiB chunks: 5 MiB, 17 MiB (twice), 41 MiB
    expect(last.differ_bytes).toBe(3 * MiB);
    expect(last.same_bytes).toBe(DATA_BYTES - 3 * MiB);
    expect(last.skipped_bytes + last.failed_bytes).toBe(0);
    await pair.waitSynced(a);
    expect(await pair.dataSha256(b)).toBe(sha256);
    expect(await pair.dataSha256(a)).toBe(sha256);
    const log = pair.daemon(a).log;
    for (const chunk of [5, 17, 41]) expect(log).toContain(`bytes at offset ${chunk * MiB} differ from the peer's copy`);
    expect(log).toContain("Verification complete: 67108864 bytes compared, 3 chunks (3145728 bytes) differed");

    // Status and metrics while idle; then a second pass, which finds nothing.
    const text = (await h.hastctlOk(a, pair.confOf(a), ["list", pair.name]));
    expect(text).toContain(`last verification: complete, 64MB compared ${how} in `);
    expect(text).toMatch(/ in [\d.]+s; 3 chunks \(3\.0MB\) differed; finished /);
    const metrics = await h.hastctlOk(a, pair.confOf(a), ["metrics", pair.name]);
    expect(metrics).toContain(`hast_last_verify_differ_chunks{resource="${pair.name}"} 3`);
    expect(metrics).toContain(`hast_verify_running{resource="${pair.name}"} 0`);
    expect((await verify(pair, a)).code).toBe(0);
    const again = await lastVerify(pair, a, last.finished);
    expect([again.ended, again.differ_chunks, again.same_bytes]).toEqual(["complete", 0, DATA_BYTES]);
  }, 180_000);

  test.skipIf(skip !== null)("finds nothing while the application writes during it (changes in flight are never compared)", async () => {
    const { pair, a, b, faults } = await syncedPair({ faults: true });
    const fresh = await randomFile(h, "fresh.bin", DATA_BYTES);
    // Two passes of the whole device while 64 MiB uploads through the primary follow one another;
    // the secondary's first reads are slowed (30 ms each), so each pass lasts over a second.
    let after = "";
    for (let round = 0; round < 2; round++) {
      let writing = true;
      const writer = (async () => {
        while (writing) await nbdUpload(fresh.path, pair.uri(a));
      })();
      faults(b, "pread:nodeb.img:delay=30:40");
      expect((await verify(pair, a)).code).toBe(0);
      // The primary's write count, polled while the verification runs, must move.
      const writes: number[] = [];
      const last = await waitFor("the verification to end", async () => {
        const s = await pair.status(a);
        if (s.verify !== undefined) writes.push(s.statistics.writes);
        return s.verify === undefined && s.last_verify && s.last_verify.finished > after ? s.last_verify : null;
      }, 60_000, 20);
      writing = false;
      await writer;
      faults(b, null);
      expect(writes.length).toBeGreaterThan(1);
      expect(writes.at(-1)!).toBeGreaterThan(writes[0]!);
      expect(last.ended).toBe("complete");
      expect(last.differ_chunks).toBe(0);
      expect(last.failed_bytes).toBe(0);
      after = last.finished;
    }
    await pair.waitSynced(a);
    expect(await pair.dataSha256(a)).toBe(fresh.sha256);
    expect(await pair.dataSha256(b)).toBe(fresh.sha256);
  }, 180_000);

  test.skipIf(skip !== null)("verify_rate paces it; a reload lifts the limit from the one running", async () => {
    const { pair, a } = await syncedPair({ settings: { verify_rate: "16M" } });
    expect(await h.hastctlOk(a, pair.confOf(a), ["list", pair.name])).toContain("  verify_rate: 16MB/s\n");
    // 64 MiB at 16 MiB/s: about 4 s (a quarter of a second's worth may start at once); unpaced,
    // the same pass takes about 0.1 s here.
    expect((await verify(pair, a)).code).toBe(0);
    const paced = await lastVerify(pair, a);
    expect([paced.ended, paced.same_bytes]).toEqual(["complete", DATA_BYTES]);
    expect(paced.seconds).toBeGreaterThan(3);
    // At 1 MiB/s the next would take a minute: a reload without the limit lets it finish at once.
    pair.reconfigure({ settings: { timeout: 4, verify_rate: "1M" } });
    pair.daemon(a).signal("SIGHUP");
    await pair.daemon(a).waitLog("Configuration reloaded.");
    expect((await verify(pair, a)).code).toBe(0);
    const slow = await waitFor("the verification to be under way", async () => {
      const s = await pair.status(a);
      return s.verify && s.verify.done > 0 ? s.verify : null;
    });
    expect(slow.done).toBeLessThan(8 * MiB);
    pair.reconfigure({ settings: { timeout: 4 } });
    pair.daemon(a).signal("SIGHUP");
    const lifted = await lastVerify(pair, a, paced.finished, 20_000);
    expect([lifted.ended, lifted.same_bytes]).toEqual(["complete", DATA_BYTES]);
    expect(lifted.seconds).toBeLessThan(30);
  }, 120_000);

  test.skipIf(skip !== null)("--resume goes on from where a stopped one ended, and is refused when there is nothing to go on with; --from begins anywhere", async () => {
    const { pair, a } = await syncedPair({ settings: { verify_rate: "16M" } });
    const none = await verify(pair, a, ["--resume"]);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toContain("verification not started: no verification ended early since this worker started");
    const both = await verify(pair, a, ["--stop", "--resume"]);
    expect([both.code, both.stderr.split("\n")[0]]).toEqual([64, "hastctl: verify: --stop and --resume exclude each other"]);
    // Paced at 16 MiB/s, stopped once a quarter is compared.
    expect((await verify(pair, a)).code).toBe(0);
    await waitFor("a quarter compared", async () => ((await pair.status(a)).verify?.done >= DATA_BYTES / 4 ? true : null), 30_000);
    expect((await verify(pair, a, ["--stop"])).code).toBe(0);
    const stopped = await lastVerify(pair, a);
    expect(stopped.ended).toBe("stopped");
    expect(stopped.resume_offset % MiB).toBe(0);
    expect(stopped.resume_offset).toBeGreaterThanOrEqual(DATA_BYTES / 4 - 2 * MiB); // two chunks may have been in flight
    expect(stopped.resume_offset).toBeLessThan(DATA_BYTES);
    const list = await h.hastctlOk(a, pair.confOf(a), ["list", pair.name]);
    expect(list).toContain(`hastctl verify --resume goes on from offset ${stopped.resume_offset / MiB}MB`);
    // The log keeps the offset for a worker that forgot it (a restart): --from takes it.
    expect(pair.daemon(a).log).toContain(`it goes on from offset ${stopped.resume_offset} with hastctl verify --resume, or --from ${stopped.resume_offset} once this worker restarted.`);
    // The rest, from there: the two walks cover the device.
    expect((await verify(pair, a, ["--resume"])).code).toBe(0);
    expect((await pair.status(a)).verify.from_offset).toBe(stopped.resume_offset);
    const rest = await lastVerify(pair, a, stopped.finished);
    expect(rest).toMatchObject({ ended: "complete", from_offset: stopped.resume_offset, total_bytes: DATA_BYTES - stopped.resume_offset });
    expect(rest.same_bytes).toBe(DATA_BYTES - stopped.resume_offset);
    expect(pair.daemon(a).log).toContain(`Verification started: ${DATA_BYTES - stopped.resume_offset} bytes from offset ${stopped.resume_offset}`);
    const again = await verify(pair, a, ["--resume"]);
    expect(again.stderr).toContain("verification not started: the last verification compared everything; run a new one without --resume");

    // --from: any offset below the device's size, rounded down to its 1 MiB chunk.
    for (const [args, line] of <[string[], string][]>[
      [["--from", "1X"], `hastctl: invalid --from offset "1X": invalid size '1X': expected digits with an optional k, M, G, T, P or E suffix`],
      [["--from", "0", "--resume"], "hastctl: verify: --from excludes --resume"],
      [["--from", "0", "--stop"], "hastctl: verify: --from excludes --stop"],
    ]) {
      const bad = await verify(pair, a, args);
      expect([bad.code, bad.stderr.split("\n")[0]]).toEqual([64, line]);
    }
    const beyond = await verify(pair, a, ["--from", "64M"]);
    expect(beyond.code).not.toBe(0);
    expect(beyond.stderr).toContain(`verification not started: offset ${DATA_BYTES} is not below the device's size (${DATA_BYTES} bytes)`);
    expect((await verify(pair, a, ["--from", String(61 * MiB + 12_345)])).code).toBe(0);
    const tail = await lastVerify(pair, a, rest.finished);
    expect(tail).toMatchObject({ ended: "complete", from_offset: 61 * MiB, total_bytes: 3 * MiB, same_bytes: 3 * MiB });
    expect(pair.daemon(a).log).toContain(`Verification started: ${3 * MiB} bytes from offset ${61 * MiB}`);
  }, 120_000);

  test.skipIf(skip !== null).each([
    ["4: only the chunks that differ are sent", {}],
    ["3: every chunk is sent (a warning says why)", { HASTD_PROTOCOL_VERSION_MAX: "3" }],
  ] as const)("resync_digest, the full synchronization of a secondary that holds the data already, at protocol version %s", async (_, secondary_env) => {
    const old_peer = "HASTD_PROTOCOL_VERSION_MAX" in secondary_env;
    const { pair, a, b, sha256 } = await syncedPair({ settings: { resync_digest: "on" }, secondary_env });
    expect(pair.daemon(a).log.includes("resync_digest is on, but the peer speaks protocol version 3 (digests need 4)")).toBe(old_peer);
    // The secondary's metadata is made anew (as after a lost metadata area, or a disk seeded from a
    // copy): it asks for every extent; two chunks of its data area are damaged meanwhile.
    await pair.role(b, "init");
    await damage(pair, b, 9 * MiB);
    await damage(pair, b, 50 * MiB + 4096);
    await pair.createOn(b);
    const sent_before = (await pair.status(a)).statistics;
    await pair.role(b, "secondary");
    await pair.waitSynced(a);
    const stats = (await pair.status(a)).statistics;
    expect(await pair.dataSha256(b)).toBe(sha256);
    if (old_peer) {
      expect(stats.sync_unchanged_bytes).toBe(0);
      expect(bytesSent("dport", b.port)).toBeGreaterThan(DATA_BYTES);
      return;
    }
    expect(stats.sync_unchanged_bytes - sent_before.sync_unchanged_bytes).toBe(DATA_BYTES - 2 * MiB);
    expect(await h.hastctlOk(a, pair.confOf(a), ["list", pair.name])).toContain(`synchronized unchanged: ${DATA_BYTES - 2 * MiB} (62MB)`);
    // What crossed the link from the primary on this connection: the two chunks, requests, replies.
    expect(bytesSent("dport", b.port)).toBeLessThan(4 * MiB);
    // The secondary kept what it answered a digest of marked until a flush: nothing stays dirty.
    expect((await pair.status(b)).dirty).toBe(0);
  }, 120_000);

  test.skipIf(skip !== null)("refuses on a secondary, without a peer, and twice at once; --stop ends it; a lost link interrupts it", async () => {
    const { pair, a, b, faults } = await syncedPair({ faults: true });
    const onSecondary = await verify(pair, b);
    expect(onSecondary.code).not.toBe(0);
    expect(onSecondary.stderr).toContain("verification not started: this node is not primary");
    // `all` means the resources this node is primary of: one timer serves both nodes.
    const allOnSecondary = await h.hastctl(b, pair.confOf(b), ["verify", "--json", "all"]);
    expect(allOnSecondary.code).toBe(0);
    expect(JSON.parse(allOnSecondary.stdout)[0].message).toContain("this node is not primary");
    expect((await verify(pair, a, ["--stop"])).stderr).toContain("no verification is running");

    // The secondary's disk holds its next read 3 s (under the 4 s request timeout): the
    // verification stays on its first chunks meanwhile.
    faults(b, "pread:nodeb.img:delay=3000:1");
    expect((await verify(pair, a)).code).toBe(0);
    const twice = await verify(pair, a);
    expect(twice.code).not.toBe(0);
    expect(twice.stderr).toContain("verification not started: a verification is already running");
    const running = await pair.status(a);
    expect(running.verify.total).toBe(DATA_BYTES);
    expect((await h.hastctlOk(a, pair.confOf(a), ["status", pair.name]))).toContain("verifying ");
    expect((await verify(pair, a, ["--stop"])).code).toBe(0);
    const stopped = await lastVerify(pair, a);
    expect(stopped.ended).toBe("stopped");
    expect(pair.daemon(a).log).toContain("Verification stopped by the operator after");

    // Again, and the secondary goes away under it.
    await waitFor("the secondary's delayed reads to pass", async () => ((await pair.status(a)).status === "complete" ? true : null), 30_000);
    faults(b, "pread:nodeb.img:delay=5000:1");
    expect((await verify(pair, a)).code).toBe(0);
    await pair.kill(b);
    const lost = await lastVerify(pair, a, stopped.finished);
    expect(lost.ended).toBe("disconnected");
    const degraded = await verify(pair, a);
    expect(degraded.stderr).toContain("verification not started: the secondary is not connected");
    faults(b, null);
  }, 180_000);
});
