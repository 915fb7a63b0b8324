// hastd as a process (flags, pidfile, daemon mode, signals, reload), its workers (title,
// restart, role changes), hastctl list/status against it, real NBD clients against a primary
// with `remote none`, and local disk errors injected with HAST_FAULT_INJECT.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, truncateSync, writeFileSync } from "node:fs";
import pkg from "../../package.json" with { type: "json" };
import {
  BUN, HASTD, Harness, MiB, descendants, freePort, hookRecorder, processAlive, processArgs, renderConf, run, runOk, sha256File,
  nodeSettings, singleResource, skipReason, waitFor, type ConfigSpec, type NodeInfo,
} from "./harness.ts";
import { WORKER_HEAP_RAM_BYTES, WORKER_PURGE_DELAY_MS } from "../../src/daemon/worker-handle.ts";
import { CRASH_RESTARTS_MAX } from "../../src/daemon/main.ts";
import { FLAG_COPY_INCOMPLETE } from "../../src/core/metadata.ts";

// 64 MiB of data: the component adds the metadata slots (8 KiB) and one activemap block (4 KiB).
const DATA_BYTES = 64 * MiB;
const DISK_BYTES = DATA_BYTES + 12288;

let h: Harness;
let a: NodeInfo;

beforeEach(async () => {
  h = await Harness.create("daemon");
  a = h.addNode("nodea");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const nbdUri = (socket: string, name = "r0") => `nbd+unix:///${name}?socket=${socket}`;

/** One more resource on nodea, its own sparse file and NBD socket, remote none. */
function localResource(name: string, file: string) {
  return {
    settings: { nbd: `uds://${h.path(`${name}.nbd`)}`, device: false },
    on: { nodea: { local: h.sparseFile(file, DISK_BYTES), remote: "none" } },
  };
}

/** One resource r0 on nodea, created; returns the config path and its spec. */
async function setup(extra: Partial<Parameters<typeof singleResource>[1]> = {}): Promise<{ conf: string; spec: ConfigSpec; disk: string; nbd: string }> {
  const disk = h.sparseFile("disk0", DISK_BYTES);
  const nbd = h.path("r0.nbd");
  const spec = singleResource(a, { local: disk, nbd, ...extra });
  const conf = h.writeConfig(spec);
  await h.hastctlOk(a, conf, ["create", "r0"]);
  return { conf, spec, disk, nbd };
}

/** setup + hastd + role primary; returns the daemon and the worker pid. */
async function primary(opts: { env?: Record<string, string | undefined> } = {}) {
  const s = await setup();
  const daemon = await h.startDaemon(a, s.conf, { env: opts.env });
  await h.hastctlOk(a, s.conf, ["role", "primary", "r0"]);
  const [worker] = h.workerPids(daemon, "r0");
  expect(worker).toBeGreaterThan(0);
  return { ...s, daemon, worker: worker! };
}

async function status(conf: string, name = "r0"): Promise<Record<string, any>> {
  const [r] = await h.listJson(a, conf, [name]);
  expect(r).toBeDefined();
  return r!;
}

function readFile(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    expect(done).toBe(length);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Whether something accepts a TCP connection on 127.0.0.1:port. */
async function accepts(port: number): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    Bun.connect({ hostname: "127.0.0.1", port, socket: { open: (s) => { s.end(); resolve(true); }, data() {}, connectError: () => resolve(false) } })
      .catch(() => resolve(false));
  });
}

async function qemuIo(uri: string, ...commands: string[]) {
  return await run(["qemu-io", "-f", "raw", ...commands.flatMap((c) => ["-c", c]), uri], { timeout_ms: 60_000 });
}

describe("hastd command line", () => {
  test("-h prints usage and exits 64; so does an unknown flag", async () => {
    for (const args of [["-h"], ["-x"], ["-F", "extra-operand"]]) {
      const r = await run([BUN, HASTD, ...args]);
      expect(r.code).toBe(64);
      expect(r.stderr).toContain("usage: hastd [-dFh] [-c config] [-P pidfile]");
    }
  });

  test("--version prints the package.json version", async () => {
    const r = await run([BUN, HASTD, "--version"]);
    expect(r).toMatchObject({ code: 0, stdout: `hastd ${pkg.version}\n` });
  });

  test("a bad config exits 78 with file:line; a missing one 72", async () => {
    const bad = h.writeText("bad.conf", "control uds:///tmp/x.sock\nreplication sometimes\n");
    const r = await run([BUN, HASTD, "-F", "-c", bad, "-P", a.pidfile], { env: h.envFor(a) });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(`${bad}:2:`);
    const missing = await run([BUN, HASTD, "-F", "-c", h.path("none.conf"), "-P", a.pidfile], { env: h.envFor(a) });
    expect(missing.code).toBe(72);
    expect(existsSync(a.pidfile)).toBe(false);
  });

  test("a HASTD_PROTOCOL_VERSION_MAX this build does not speak exits 78 naming it; a valid one is logged", async () => {
    const { conf } = await setup();
    const r = await run([BUN, HASTD, "-F", "-c", conf, "-P", a.pidfile], { env: h.envFor(a, { HASTD_PROTOCOL_VERSION_MAX: "9" }) });
    expect(r.code).toBe(78);
    expect(r.stderr).toContain('HASTD_PROTOCOL_VERSION_MAX="9" is not a protocol version this build speaks (1 to 4)');
    expect(existsSync(a.pidfile)).toBe(false);
    const daemon = await h.startDaemon(a, conf, { env: { HASTD_PROTOCOL_VERSION_MAX: "2" } });
    await daemon.waitLog("running peer protocol versions 1 to 2");
  });

  test("a second hastd on the same pidfile is refused with 75", async () => {
    const { conf } = await setup();
    const first = await h.startDaemon(a, conf);
    expect(readFileSync(a.pidfile, "utf8").trim()).toBe(String(first.pid));
    const r = await run([BUN, HASTD, "-F", "-c", conf, "-P", a.pidfile], { env: h.envFor(a), timeout_ms: 20_000 });
    expect(r.code).toBe(75);
    expect(r.stderr).toContain(`Another hastd is already running, pidfile: ${a.pidfile}, pid: ${first.pid}.`);
    // The loser touched neither the pidfile nor the control socket.
    expect(first.running).toBe(true);
    expect(readFileSync(a.pidfile, "utf8").trim()).toBe(String(first.pid));
    expect((await h.hastctl(a, conf, ["status"])).code).toBe(0);
  });
});

describe("several daemons on one host", () => {
  test("two hastd from one TOML file find their own blocks through HASTD_NODE", async () => {
    const b = h.addNode("nodeb");
    expect(b.port).not.toBe(a.port);
    const diskA = h.sparseFile("disk-a", DISK_BYTES);
    const diskB = h.sparseFile("disk-b", DISK_BYTES);
    const spec: ConfigSpec = {
      global: { timeout: 5 },
      on: { nodea: nodeSettings(a), nodeb: nodeSettings(b) },
      resources: {
        r0: {
          settings: { device: false },
          on: {
            nodea: { local: diskA, remote: `tcp://127.0.0.1:${b.port}`, nbd: `uds://${h.path("a-r0.nbd")}` },
            nodeb: { local: diskB, remote: `tcp://127.0.0.1:${a.port}`, nbd: `uds://${h.path("b-r0.nbd")}` },
          },
        },
      },
    };
    const conf = h.writeConfig(spec, "toml");
    await h.hastctlOk(a, conf, ["create", "r0"]);
    await h.hastctlOk(b, conf, ["create", "-k", "8", "r0"]);
    const [da, db] = [await h.startDaemon(a, conf), await h.startDaemon(b, conf)];
    expect(da.pid).not.toBe(db.pid);
    expect(readFileSync(b.pidfile, "utf8").trim()).toBe(String(db.pid));
    const [ra] = await h.listJson(a, conf);
    const [rb] = await h.listJson(b, conf);
    expect(ra).toMatchObject({ name: "r0", localpath: diskA, remoteaddr: `tcp://127.0.0.1:${b.port}`, role: "init" });
    expect(rb).toMatchObject({ name: "r0", localpath: diskB, remoteaddr: `tcp://127.0.0.1:${a.port}`, role: "init" });
    expect((JSON.parse(await h.hastctlOk(b, conf, ["dump", "--json", "r0"])))[0].keepdirty).toBe(8);
    expect(await db.stop()).toBe(0);
    expect(da.running).toBe(true);
    expect((await h.hastctl(b, conf, ["status"])).code).toBe(71);
    expect((await h.hastctl(a, conf, ["status"])).code).toBe(0);
  });
});

describe("daemon mode and signals", () => {
  test("without -F hastd detaches, writes its pid and serves; start-up errors still reach the terminal", async () => {
    const { conf } = await setup();
    h.trackPidfile(a.pidfile);
    const started = Date.now();
    const r = await run([BUN, HASTD, "-c", conf, "-P", a.pidfile], { env: h.envFor(a), timeout_ms: 30_000 });
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(Date.now() - started).toBeLessThan(20_000);
    const pid = Number(readFileSync(a.pidfile, "utf8").trim());
    expect(processAlive(pid)).toBe(true);
    expect(processArgs(pid)).toContain(HASTD);
    expect(await h.hastctlOk(a, conf, ["status"])).toContain("r0\t");
    // Detached: its own session, not a child of anything we still run.
    const sid = Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[3]);
    expect(sid).toBe(pid);
    await waitFor("the log file", () => existsSync(a.logfile) && readFileSync(a.logfile, "utf8").includes("Started successfully"));

    process.kill(pid, "SIGTERM");
    await waitFor("the daemon to exit", () => !processAlive(pid));
    expect(existsSync(a.pidfile)).toBe(false);
    expect(existsSync(a.control)).toBe(false);

    // A config error is found before detaching...
    const bad = h.writeText("bad.conf", "timeout zero\n");
    const b = await run([BUN, HASTD, "-c", bad, "-P", a.pidfile], { env: h.envFor(a) });
    expect(b.code).toBe(78);
    expect(b.stderr).toContain(`${bad}:1:`);
    // ...and one found by the detached child (control path taken by a directory) is reported by the parent.
    mkdirSync(a.control);
    const c = await run([BUN, HASTD, "-c", conf, "-P", a.pidfile], { env: h.envFor(a), timeout_ms: 30_000 });
    expect(c.code).toBe(71);
    expect(c.stderr).toContain(`control socket ${a.control} exists and is not a socket`);
    expect(existsSync(a.pidfile)).toBe(false);
  });

  test("detached without -P, a reload moves the pidfile to the config's new one; one it cannot take stays where it was", async () => {
    const { conf, spec } = await setup();
    const moved = h.path("moved/hastd.pid");
    h.trackPidfile(a.pidfile);
    h.trackPidfile(moved);
    const r = await run([BUN, HASTD, "-c", conf], { env: h.envFor(a), timeout_ms: 30_000 });
    expect(r).toMatchObject({ code: 0, stderr: "" });
    const pid = Number(readFileSync(a.pidfile, "utf8").trim());
    expect(processAlive(pid)).toBe(true);
    const log = () => (existsSync(a.logfile) ? readFileSync(a.logfile, "utf8") : "");

    spec.on!.nodea = { ...spec.on!.nodea, pidfile: moved };
    h.writeConfig(spec);
    process.kill(pid, "SIGHUP");
    await waitFor("the pidfile to move", () => existsSync(moved) && !existsSync(a.pidfile));
    expect(readFileSync(moved, "utf8").trim()).toBe(String(pid));
    await waitFor("the move in the log", () => log().includes(`Pidfile moved from ${a.pidfile} to ${moved}.`)); // written just after

    // A directory that is a file: the pidfile cannot be made there, and stays where it is.
    const blocked = h.writeText("not-a-dir", "");
    spec.on!.nodea = { ...spec.on!.nodea, pidfile: `${blocked}/hastd.pid` };
    h.writeConfig(spec);
    process.kill(pid, "SIGHUP");
    await waitFor("the reload", () => log().includes(`the pidfile stays ${moved}.`));
    expect(log()).toContain(`Unable to open pidfile ${blocked}/hastd.pid`);
    expect(readFileSync(moved, "utf8").trim()).toBe(String(pid));

    process.kill(pid, "SIGTERM");
    await waitFor("the daemon to exit", () => !processAlive(pid));
    expect(existsSync(moved)).toBe(false);
  }, 60_000);

  test("a second SIGTERM while the workers stop does not end hastd (nor remove its pidfile) before them", async () => {
    const rules = h.path("faults");
    writeFileSync(rules, "");
    const { daemon, worker } = await primary({ env: { HAST_FAULT_INJECT_FILE: rules } });
    // From now on the component's flushes take 3 s (a busy disk): the worker's orderly stop too.
    writeFileSync(`${rules}.new`, "fdatasync:disk0:delay=3000\n");
    renameSync(`${rules}.new`, rules);
    daemon.signal("SIGTERM");
    await Bun.sleep(300);
    daemon.signal("SIGTERM"); // an impatient operator, or a second `service hastd stop`
    await Bun.sleep(500);
    expect(daemon.running).toBe(true);
    expect(existsSync(a.pidfile)).toBe(true);
    expect(await daemon.exited(30_000)).toBe(0);
    expect(processAlive(worker)).toBe(false);
  }, 60_000);

  test("SIGTERM stops workers, removes pidfile, control and NBD sockets, leaves no process", async () => {
    const { daemon, worker, nbd } = await primary();
    expect(existsSync(nbd)).toBe(true);
    expect(existsSync(a.pidfile)).toBe(true);
    daemon.signal("SIGTERM");
    expect(await daemon.exited()).toBe(0);
    expect(processAlive(worker)).toBe(false);
    expect(descendants([daemon.pid])).toEqual([]);
    expect(existsSync(a.pidfile)).toBe(false);
    expect(existsSync(a.control)).toBe(false);
    expect(existsSync(nbd)).toBe(false);
    expect(daemon.log).toContain("Termination signal received, exiting.");
  });

  test("SIGHUP with a broken config keeps the running one", async () => {
    const { conf, spec, daemon } = await primary();
    h.writeText("hast.conf", `${renderConf(spec)}resource broken {\n`);
    daemon.signal("SIGHUP");
    await daemon.waitLog("Configuration not reloaded.");
    expect(daemon.log).toContain(`${conf}:`);
    // hastctl reads the file too, so ask with an intact copy: the daemon still has r0 as primary.
    const good = h.writeText("good.conf", renderConf(spec));
    expect(await status(good)).toMatchObject({ name: "r0", role: "primary" });
    expect(daemon.running).toBe(true);
  });

  test("a reload that fails (a control address that is not a unix socket) does not keep later ones from running", async () => {
    const { conf, spec, daemon } = await primary();
    const on = spec.on!;
    h.writeText("hast.conf", renderConf({ ...spec, on: { ...on, nodea: { ...on.nodea, control: "tcp://127.0.0.1:47912" } } }));
    daemon.signal("SIGHUP");
    await daemon.waitLog("Configuration not reloaded.");
    expect(daemon.log).toContain("must be a unix socket");
    spec.resources.r1 = localResource("r1", "disk1");
    h.writeConfig(spec);
    daemon.signal("SIGHUP");
    await daemon.waitLog("Configuration reloaded successfully.");
    expect((await h.listJson(a, conf)).map((r) => r.name)).toEqual(["r0", "r1"]);
  });

  test("SIGHUP opens a new listen address and closes the one removed; one that cannot listen anywhere keeps everything, the control socket too", async () => {
    const { conf, spec, daemon } = await primary();
    expect(conf).toBe(h.path("hast.conf")); // what the reloads below rewrite
    const on = spec.on!;
    const old_port = a.port;
    expect(await accepts(old_port)).toBe(true);
    const new_port = freePort();
    h.writeText("hast.conf", renderConf({ ...spec, on: { ...on, nodea: { ...on.nodea, listen: `tcp://127.0.0.1:${new_port}` } } }));
    daemon.signal("SIGHUP");
    await daemon.waitLog("Configuration reloaded successfully.");
    expect(daemon.log).toContain(`Listening on tcp4://127.0.0.1:${new_port}.`);
    expect(daemon.log).toContain(`No longer listening on tcp4://127.0.0.1:${old_port}.`);
    expect([await accepts(new_port), await accepts(old_port)]).toEqual([true, false]);

    // Only an address something else holds, and a new control socket: neither is taken.
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const moved_control = h.path("ctl-moved.sock");
      h.writeText("hast.conf", renderConf({ ...spec, on: { ...on, nodea: { ...on.nodea, control: `uds://${moved_control}`, listen: `tcp://127.0.0.1:${holder.port}` } } }));
      daemon.signal("SIGHUP");
      await daemon.waitLog("Configuration not reloaded.", 20_000);
      expect(daemon.log).toContain("No address to listen on.");
      expect(existsSync(moved_control)).toBe(false);
      expect(await accepts(new_port)).toBe(true);
      const good = h.writeText("good.conf", renderConf({ ...spec, on: { ...on, nodea: { ...on.nodea, listen: `tcp://127.0.0.1:${new_port}` } } }));
      expect(await status(good)).toMatchObject({ name: "r0", role: "primary" });
    } finally {
      holder.stop(true);
    }
  }, 40_000);

  test("a role request queued behind a reload that removes its resource gets 'no such resource', and no worker", async () => {
    const { conf, spec } = await setup();
    // The promotion's worker takes 3 s to read its metadata: the reload and the second request
    // queue behind it in the resource's turn.
    const daemon = await h.startDaemon(a, conf, { env: { HAST_FAULT_INJECT: "pread:disk0:delay=3000:1" } });
    const old_conf = h.writeText("old.conf", renderConf(spec));
    const first = h.hastctl(a, old_conf, ["role", "primary", "r0"]);
    await Bun.sleep(500);
    spec.resources.r1 = localResource("r1", "disk1");
    delete spec.resources.r0;
    h.writeConfig(spec);
    daemon.signal("SIGHUP");
    await Bun.sleep(300);
    const second = await h.hastctl(a, old_conf, ["role", "primary", "r0"]);
    expect((await first).code).toBe(0);
    expect(second.stderr).toContain("r0: no such resource (removed by a reload)");
    expect(second.code).toBe(1);
    await daemon.waitLog("Configuration reloaded successfully.");
    await Bun.sleep(500);
    expect(h.workerPids(daemon, "r0")).toEqual([]);
  });

  test("SIGHUP adds a resource and removes another, stopping its primary worker", async () => {
    const { conf, spec } = await setup();
    spec.resources.r1 = localResource("r1", "disk1");
    h.writeConfig(spec);
    await h.hastctlOk(a, conf, ["create", "r1"]);
    const daemon = await h.startDaemon(a, conf);
    await h.hastctlOk(a, conf, ["role", "primary", "r1"]);
    const [worker] = h.workerPids(daemon, "r1");
    expect(worker).toBeGreaterThan(0);

    // Remove r1 and add r2 in one reload.
    delete spec.resources.r1;
    spec.resources.r2 = localResource("r2", "disk2");
    h.writeConfig(spec);
    daemon.signal("SIGHUP");
    await daemon.waitLog("Configuration reloaded successfully.");
    expect(daemon.log).toContain("[r1] Resource removed from the configuration.");
    await waitFor("the r1 worker to exit", () => !processAlive(worker!));
    expect(existsSync(h.path("r1.nbd"))).toBe(false);
    const all = await h.listJson(a, conf);
    expect(all.map((r) => [r.name, r.role])).toEqual([["r0", "init"], ["r2", "init"]]);
  });
});

describe("workers", () => {
  const crashSkip = skipReason("a worker that stops on an internal error", { tools: ["qemu-io"] });
  test.skipIf(crashSkip !== null)("a serving primary worker that stops on an internal error is restarted; the fourth within a minute leaves the role at init", async () => {
    const rules = h.path("faults");
    writeFileSync(rules, "");
    const { conf, daemon, nbd } = await primary({ env: { HAST_FAULT_INJECT_FILE: rules } });
    const setRules = (text: string) => {
      writeFileSync(`${rules}.new`, text);
      renameSync(`${rules}.new`, rules);
    };
    for (let crash = 1; crash <= CRASH_RESTARTS_MAX + 1; crash++) {
      const [worker] = h.workerPids(daemon, "r0");
      expect(worker).toBeGreaterThan(0);
      setRules("pwrite:disk0:assert:1\n");
      expect((await qemuIo(nbdUri(nbd), "write -P 0x5a 0 4k")).code).not.toBe(0);
      await waitFor("the worker to stop", () => !processAlive(worker!));
      setRules(""); // before the restart (1 s later) writes anything
      if (crash > CRASH_RESTARTS_MAX) break;
      await daemon.waitLogTimes("on an internal error (the log says which); restarting in 1 s.", crash);
      await waitFor("the restarted worker to serve", async () => (await qemuIo(nbdUri(nbd), "read -P 0 0 4k")).code === 0, 20_000);
    }
    await daemon.waitLog(`on an internal error, its ${CRASH_RESTARTS_MAX + 1}th in 60 s; not restarted again. Changing resource role back to init.`);
    expect(daemon.log).toContain("assertion failed: pwrite");
    expect(await status(conf)).toMatchObject({ role: "init", workerpid: 0 });
  }, 90_000);

  const prlimitSkip = skipReason("a worker restart that cannot spawn", { tools: ["prlimit"] });
  test.skipIf(prlimitSkip !== null)("a primary worker that cannot be restarted (no descriptors left) puts the role back to init, and a promotion works again later", async () => {
    const { conf, daemon, worker } = await primary();
    // The main process may open no more descriptors (EMFILE), as under descriptor exhaustion.
    const open = readdirSync(`/proc/${daemon.pid}/fd`).length;
    const soft = (await runOk(["prlimit", `--pid=${daemon.pid}`, "--nofile", "--raw", "--noheadings", "--output=SOFT"])).trim();
    await runOk(["prlimit", `--pid=${daemon.pid}`, `--nofile=${open}:`]);
    process.kill(worker, "SIGKILL");
    await daemon.waitLog("Unable to restart the primary worker:");
    expect(daemon.log).toContain("Changing resource role back to init.");
    await runOk(["prlimit", `--pid=${daemon.pid}`, `--nofile=${soft}:`]);
    expect(await status(conf)).toMatchObject({ role: "init", workerpid: 0 });
    await h.hastctlOk(a, conf, ["role", "primary", "r0"]);
    expect(h.workerPids(daemon, "r0")).toHaveLength(1);
  }, 40_000);

  test("a worker whose main process dies while it starts stops too, rather than serve a primary nobody can demote", async () => {
    const { conf } = await setup();
    // The promotion's worker takes 3 s to read its metadata: the main process dies meanwhile.
    const daemon = await h.startDaemon(a, conf, { env: { HAST_FAULT_INJECT: "pread:disk0:delay=3000:1" } });
    const role = h.hastctl(a, conf, ["role", "primary", "r0"]);
    const worker = (await waitFor("the primary worker", () => h.workerPids(daemon, "r0")[0]))!;
    daemon.signal("SIGKILL");
    try {
      expect((await role).code).not.toBe(0);
      // Not a descendant of anything the harness tracks any more: waited for here, killed if it stays.
      await waitFor("the orphaned worker to stop", () => !processAlive(worker), 20_000);
    } finally {
      if (processAlive(worker)) process.kill(worker, "SIGKILL");
    }
  }, 40_000);

  test("ps shows the worker title; a SIGKILLed primary worker is restarted and serves again", async () => {
    const { conf, daemon, worker, nbd } = await primary();
    expect(processArgs(worker)).toStartWith("hastd: r0 (primary)");
    const ps = await runOk(["ps", "-o", "args=", "-p", String(worker)]);
    expect(ps).toStartWith("hastd: r0 (primary)");
    expect((await status(conf)).workerpid).toBe(worker);

    process.kill(worker, "SIGKILL");
    // Through the restart window every query answers at once, and the role stays primary.
    const deadline = Date.now() + 8_000;
    let s: Record<string, any> = {};
    while (Date.now() < deadline) {
      const started = Date.now();
      s = await status(conf);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(s.role).toBe("primary");
      if (s.workerpid && s.workerpid !== worker && s.statistics) break;
      await Bun.sleep(100);
    }
    expect(processAlive(worker)).toBe(false);
    expect(h.workerPids(daemon, "r0")).toEqual([s.workerpid]);
    expect(processArgs(s.workerpid)).toStartWith("hastd: r0 (primary)");
    await daemon.waitLog(`Worker process (pid=${worker}) killed by signal SIGKILL; restarting in 1 s.`);
    const info = await runOk(["nbdinfo", "--size", nbdUri(nbd)]);
    expect(Number(info.trim())).toBe(DATA_BYTES);
  });

  test("workers start with the runtime defaults (heap size, allocator purge delay), or the values the operator set", async () => {
    const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    const defaults = { BUN_JSC_forceRAMSize: String(WORKER_HEAP_RAM_BYTES), MIMALLOC_PURGE_DELAY: String(WORKER_PURGE_DELAY_MS) };
    const operator = { BUN_JSC_forceRAMSize: "134217728", MIMALLOC_PURGE_DELAY: "50" };
    for (const [set, expected] of [[{}, defaults], [operator, operator]] as const) {
      const { daemon, worker, nbd } = await primary({ env: set });
      // It serves: Bun accepted the settings (an unknown BUN_JSC_ name ends the process at start).
      expect(Number((await runOk(["nbdinfo", "--size", nbdUri(nbd)])).trim())).toBe(DATA_BYTES);
      for (const [name, value] of Object.entries(expected)) expect(environ(worker)).toContain(`${name}=${value}`);
      await daemon.stop();
    }
  });

  test("a promotion whose worker ends at its start fails (exit 7): the role is init, no role hook runs", async () => {
    const disk = h.sparseFile("disk0", DISK_BYTES);
    const hook = hookRecorder(h);
    const conf = h.writeConfig(singleResource(a, { local: disk, nbd: h.path("r0.nbd"), settings: { exec: hook.path } }));
    // Never created: the worker finds no metadata and exits.
    const daemon = await h.startDaemon(a, conf);
    const r = await h.hastctl(a, conf, ["role", "primary", "r0"]);
    expect(r.stderr).toContain("r0: not promoted: the primary worker ended at its start (the log says why); the role is init");
    expect(r.code).toBe(7);
    expect(await status(conf)).toMatchObject({ role: "init" });
    // The fall back to init runs no hook (as FreeBSD's); a "role init primary" one would have been
    // started before hastctl got its answer.
    await Bun.sleep(1_000);
    expect(hook.lines()).toEqual([]);
    expect(daemon.running).toBe(true);
  });

  test("a component shorter than its metadata says is refused at the worker's start", async () => {
    const { conf, disk } = await setup();
    truncateSync(disk, DISK_BYTES / 2);
    const daemon = await h.startDaemon(a, conf);
    const r = await h.hastctl(a, conf, ["role", "primary", "r0"]);
    expect(r.code).toBe(7);
    await daemon.waitLog(`Provider ${disk} is ${DISK_BYTES / 2} bytes, smaller than its metadata's data area`);
    expect(await status(conf)).toMatchObject({ role: "init" });
  });

  test("metadata that cannot be read stops the primary worker with a one-line error (74), not a rollback", async () => {
    const { conf, disk } = await setup();
    const daemon = await h.startDaemon(a, conf, { env: { HAST_FAULT_INJECT: "pread:disk0:EIO:1" } });
    const r = await h.hastctl(a, conf, ["role", "primary", "r0"]);
    expect(r.code).toBe(7);
    await daemon.waitLog(`Unable to read metadata from ${disk}: pread ${disk}`);
    await daemon.waitLog("exited with status 74");
    expect(await status(conf)).toMatchObject({ role: "init" });
  });

  test("role init stops the worker and removes the NBD endpoint; role primary twice is a no-op", async () => {
    const { conf, daemon, worker, nbd } = await primary();
    const again = await h.hastctl(a, conf, ["role", "primary", "r0"]);
    expect(again.code).toBe(0);
    expect(h.workerPids(daemon, "r0")).toEqual([worker]);
    await h.hastctlOk(a, conf, ["role", "init", "r0"]);
    expect(processAlive(worker)).toBe(false);
    expect(existsSync(nbd)).toBe(false);
    expect(h.workerPids(daemon, "r0")).toEqual([]);
    const s = await status(conf);
    expect(s).toMatchObject({ role: "init", workerpid: 0 });
    expect(s.statistics).toBeUndefined();
    expect(s.status).toBeUndefined();
  });
});

describe("list and status", () => {
  test("--json fields, list text lines and status columns (spec 2.3)", async () => {
    const { conf, disk, worker } = await primary();
    const s = await status(conf);
    expect(s).toMatchObject({
      name: "r0", role: "primary", provname: "r0", localpath: disk, remoteaddr: "none", replication: "memsync",
      status: "degraded", workerpid: worker, extentsize: 2 * MiB, keepdirty: 64, dirty: 0,
      statistics: { reads: 0, writes: 0, deletes: 0, flushes: 0, activemap_updates: 0, direct_bytes: 0, sync_unchanged_bytes: 0,
        local_errors: { read: 0, write: 0, delete: 0, flush: 0 } },
    });
    const statusJson = JSON.parse(await h.hastctlOk(a, conf, ["status", "--json"]));
    expect(statusJson).toEqual([s]);

    const text = await h.hastctlOk(a, conf, ["list", "r0"]);
    const lines = text.trimEnd().split("\n");
    const expected = [
      "r0:", "  role: primary", "  provname: r0", `  localpath: ${disk}`, "  extentsize: 2097152 (2.0MB)",
      "  keepdirty: 64", "  remoteaddr: none", "  replication: memsync", "  status: degraded", `  workerpid: ${worker}`,
      "  dirty: 0 (0B)",
    ];
    expect(lines.slice(0, expected.length)).toEqual(expected);
    const stats = lines.slice(lines.indexOf("  statistics:"));
    expect(stats).toEqual([
      "  statistics:", "    reads: 0", "    writes: 0", "    deletes: 0", "    flushes: 0", "    activemap updates: 0",
      "    direct transfers: 0 (0B)", "    synchronized unchanged: 0 (0B)", "    local errors: read: 0, write: 0, delete: 0, flush: 0",
    ]);

    const st = (await h.hastctlOk(a, conf, ["status"])).split("\n");
    expect(st[0]).toBe("Name\tStatus\t Role\t\tComponents");
    expect(st[1]).toBe(`r0\tdegraded primary        ${disk}\tnone`);

    // Nothing to verify against: a clear word and exit status 2 (the per-resource error, spec 2.5).
    const verify = await h.hastctl(a, conf, ["verify", "r0"]);
    expect(verify.code).toBe(2);
    expect(verify.stderr).toContain("r0: verification not started: this resource has no secondary (remote none)");
    // `all` passes it over, as a resource this node is not primary of: the monthly job stays green.
    const all = await h.hastctl(a, conf, ["verify", "--json", "all"]);
    expect(all.code).toBe(0);
    expect(JSON.parse(all.stdout)[0]).toMatchObject({ name: "r0", message: expect.stringContaining("no secondary (remote none)") });
  });

  const qemuSkip = skipReason("statistics after qemu-io writes", { tools: ["qemu-io"] });
  test.skipIf(qemuSkip !== null)("statistics move with I/O; dirty extents stay for the sync (remote none)", async () => {
    const { conf, nbd } = await primary();
    const w = await qemuIo(nbdUri(nbd), "write -P 0x11 0 64k", "write -P 0x22 10M 4k", "flush", "read -P 0x11 0 64k", "discard 20M 1M");
    expect(w.code).toBe(0);
    const s = await status(conf);
    expect(s.statistics.writes).toBe(2);
    expect(s.statistics.reads).toBe(1);
    expect(s.statistics.deletes).toBe(1);
    expect(s.statistics.flushes).toBeGreaterThanOrEqual(1);
    // Extents 0, 5 and 10 became dirty: one map update each; with no peer they stay dirty.
    expect(s.statistics.activemap_updates).toBeGreaterThanOrEqual(3);
    expect(s.dirty).toBe(3 * 2 * MiB);
    expect(s.statistics.local_errors).toEqual({ read: 0, write: 0, delete: 0, flush: 0 });
    // The on-disk map agrees, and localcnt records the change made without the peer (spec 4.4).
    const [dump] = JSON.parse(await h.hastctlOk(a, conf, ["dump", "--json", "r0"]));
    expect(dump).toMatchObject({ dirty_extents: 3, localcnt: 1, prevrole: "primary" });
  });
});

describe("NBD clients against a primary with remote none", () => {
  const clientSkip = skipReason("NBD client tests", { tools: ["nbdinfo", "qemu-io"] });
  test.skipIf(clientSkip !== null)("nbdinfo size, qemu-io patterns, data at localoff in the component", async () => {
    const { conf, nbd, disk } = await primary();
    const info = JSON.parse(await runOk(["nbdinfo", "--json", nbdUri(nbd)]));
    const exp = info.exports.find((e: { "export-name": string }) => e["export-name"] === "r0");
    expect(exp["export-size"]).toBe(DATA_BYTES);
    expect(exp["is_read_only"]).toBe(false);
    const [dump] = JSON.parse(await h.hastctlOk(a, conf, ["dump", "--json", "r0"]));
    expect(dump.datasize).toBe(DATA_BYTES);

    const uri = nbdUri(nbd);
    const w = await qemuIo(uri, "write -P 0x5a 1M 256k", "write -P 0xa5 63M 1M", "write -z 1088k 4k");
    expect(w.code).toBe(0);
    expect(w.stdout).toContain("wrote 262144/262144 bytes at offset 1048576");
    const ok = await qemuIo(uri, "read -P 0x5a 1M 64k", "read -P 0 1088k 4k", "read -P 0xa5 63M 1M", "read -P 0 0 1M");
    expect(ok.stdout).not.toContain("Pattern verification failed");
    expect(ok.stdout.match(/^read /gm)?.length).toBe(4);
    const bad = await qemuIo(uri, "read -P 0x5b 1M 4k");
    expect(bad.stdout).toContain("Pattern verification failed");
    // Out of range: the export ends at DATA_BYTES.
    const past = await qemuIo(uri, `read ${DATA_BYTES} 4k`);
    expect(past.stdout + past.stderr).toMatch(/out of range|Input\/output error|Invalid argument/);

    // Byte for byte at localoff on the component (metadata + one map block before the data).
    expect(dump.localoff).toBe(12288);
    const at = (off: number, len: number) => readFile(disk, dump.localoff + off, len);
    expect(at(MiB, 64 * 1024).every((b) => b === 0x5a)).toBe(true);
    expect(at(1088 * 1024, 4096).every((b) => b === 0)).toBe(true);
    expect(at(MiB + 256 * 1024 - 1, 1)[0]).toBe(0x5a);
    expect(at(63 * MiB, MiB).every((b) => b === 0xa5)).toBe(true);
    expect(readFile(disk, dump.localoff + DATA_BYTES - 1, 1)[0]).toBe(0xa5);
  });

  const copySkip = skipReason("nbdcopy round trip", { tools: ["nbdcopy"] });
  test.skipIf(copySkip !== null)("nbdcopy 64 MiB of random data in and out: same sha256, same bytes on the component", async () => {
    const { nbd, disk } = await primary();
    const input = h.path("random.bin");
    await Bun.write(input, randomBytes(DATA_BYTES));
    await runOk(["nbdcopy", input, nbdUri(nbd)], { timeout_ms: 60_000 });
    const output = h.path("out.bin");
    await runOk(["nbdcopy", nbdUri(nbd), output], { timeout_ms: 60_000 });
    const want = await sha256File(input);
    expect(await sha256File(output)).toBe(want);
    const onDisk = new Bun.CryptoHasher("sha256").update(readFile(disk, 12288, DATA_BYTES)).digest("hex");
    expect(onDisk).toBe(want);
  });

  const benchSkip = skipReason("qemu-img bench", { tools: ["qemu-img"] });
  test.skipIf(benchSkip !== null)("qemu-img bench reads and writes without errors", async () => {
    const { conf, nbd } = await primary();
    const common = ["qemu-img", "bench", "-f", "raw", "-c", "2000", "-d", "8", "-s", "4k", "-S", "12k"];
    const rd = await run([...common, nbdUri(nbd)], { timeout_ms: 60_000 });
    expect(rd.code).toBe(0);
    expect(rd.stdout).toMatch(/Run completed in [\d.]+ seconds/);
    const wr = await run([...common, "-w", "--pattern=0x3c", nbdUri(nbd)], { timeout_ms: 60_000 });
    expect(wr.code).toBe(0);
    expect(wr.stdout).toMatch(/Run completed in [\d.]+ seconds/);
    const s = await status(conf);
    expect(s.statistics.reads).toBeGreaterThanOrEqual(2000);
    expect(s.statistics.writes).toBeGreaterThanOrEqual(2000);
    const check = await qemuIo(nbdUri(nbd), "read -P 0x3c 0 4k", "read -P 0x3c 12k 4k");
    expect(check.stdout).not.toContain("Pattern verification failed");
    expect(check.stdout.match(/^read /gm)?.length).toBe(2);
  });

  const fioSkip = skipReason("fio --ioengine=nbd", { tools: ["fio"] });
  test.skipIf(fioSkip !== null)("fio --ioengine=nbd randwrite with verify", async () => {
    const { conf, nbd } = await primary();
    const r = await run([
      "fio", "--name=hast", "--ioengine=nbd", `--uri=${nbdUri(nbd)}`, "--rw=randwrite", "--bs=4k", "--size=16M",
      "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--output-format=json",
    ], { timeout_ms: 90_000, cwd: h.dir }); // fio leaves its verify state file in the cwd
    expect(r.code).toBe(0);
    const job = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
    expect(job.error).toBe(0);
    expect(job.write.io_bytes).toBe(16 * MiB);
    expect(job.read.io_bytes).toBe(16 * MiB); // the verify pass read everything back
    const s = await status(conf);
    expect(s.statistics.writes).toBe(4096);
    expect(s.statistics.local_errors.write).toBe(0);
  });
});

describe("local disk errors", () => {
  const skip = skipReason("fault injection", { tools: ["qemu-io"] });
  test.skipIf(skip !== null)("a failing pwrite fails the NBD write, is counted, and reads are still served", async () => {
    const { conf, nbd, daemon, worker } = await primary({ env: { HAST_FAULT_INJECT: "pwrite:disk0:EIO" } });
    const uri = nbdUri(nbd);
    const w1 = await qemuIo(uri, "write -P 0x77 0 4k");
    expect(w1.stdout + w1.stderr).toContain("write failed: Input/output error");
    const w2 = await qemuIo(uri, "write -P 0x77 4M 4k");
    expect(w2.stdout + w2.stderr).toContain("write failed: Input/output error");
    const r = await qemuIo(uri, "read -P 0 0 64k", "read -P 0 4M 4k");
    expect(r.stdout).not.toContain("failed");
    expect(r.stdout.match(/^read /gm)?.length).toBe(2);

    const s = await status(conf);
    expect(s.statistics.writes).toBe(2);
    expect(s.statistics.local_errors.write).toBeGreaterThanOrEqual(2);
    expect(s.statistics.local_errors.read).toBe(0);
    expect(s.workerpid).toBe(worker);
    const text = await h.hastctlOk(a, conf, ["list", "r0"]);
    expect(text).toMatch(/local errors: read: 0, write: [1-9]\d*, delete: 0, flush: [1-9]\d*/);
    // qemu-io's flushes fail too: the metadata (the first write's localcnt bump) cannot be written.
    expect(s.statistics.local_errors.flush).toBe(s.statistics.flushes);
    expect(daemon.log).toContain("injected by HAST_FAULT_INJECT");
    // Nothing reached the data area.
    expect(readFile(h.path("disk0"), 12288, 4096).every((b) => b === 0)).toBe(true);
  });
});

describe("the flush at a primary worker's start", () => {
  test("a failed one marks the copy incomplete: the promotion is refused, and --force keeps the data", async () => {
    const s = await setup();
    const daemon = await h.startDaemon(a, s.conf, { env: { HAST_FAULT_INJECT: "fdatasync:disk0:EIO:1" } });
    const refused = await h.hastctl(a, s.conf, ["role", "primary", "r0"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("not promoted: this node's copy is incomplete");
    // The main process's flush (its descriptor meets an error a dead worker took) and the worker's.
    await daemon.waitLog("[r0] Flush before the primary worker starts failed (fdatasync");
    await daemon.waitLog("(primary) error: The flush at start failed (fdatasync");
    await daemon.waitLog("The primary worker refused this node's copy. Role changed back to init.");
    expect((await status(s.conf)).role).toBe("init");
    const [dumped] = JSON.parse(await h.hastctlOk(a, s.conf, ["dump", "--json", "r0"])) as { flags: number; datasize: number; extentsize: number; dirty_extents: number }[];
    expect(dumped!.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
    // Every extent is marked: whichever node is primary next copies all of it here.
    expect(dumped!.dirty_extents).toBe(Math.ceil(dumped!.datasize / dumped!.extentsize));
    // The worker acted on the main process's failed flush (refused, marked), so the next start is
    // not told of it again; it is refused for the mark alone.
    expect((await h.hastctl(a, s.conf, ["role", "primary", "r0"])).code).not.toBe(0);
    await daemon.waitLog("Not promoted: this node's copy is incomplete");
    expect(daemon.log.split("[r0] Flush before the primary worker starts failed").length - 1).toBe(1);
    // Forced, the copy is taken as it is (this worker's first flush fails too: the rule is per process).
    await h.hastctlOk(a, s.conf, ["role", "--force", "primary", "r0"]);
    await daemon.waitLog("Promoted by force although this node's copy is incomplete");
    expect((await status(s.conf)).role).toBe("primary");
  });
});
