// Two hast nodes for the end-to-end failover test, each in its own network namespace: a
// compiled hastd, a failover manager (ucarp with ops/ucarp/vip-up.sh and vip-down.sh, or
// keepalived with ops/keepalived/notify.sh and `hast-switch check` as its track_script), and
// ops/switch/hast-switch configured the way an operator would (its own /etc/hast-switch.conf
// equivalent). Only the
// network is namespaced: both nodes share this host's mount table, /dev and PID namespace, so
// each node gets its own devdir (HASTD_DEVDIR), mount point, NBD directory and switch lock dir.
//
// hast-switch is reached through a wrapper named by HAST_SWITCH (a documented vip-up/down
// setting) that only appends the real script's output and exit status to the node's
// switch.log, because without syslog its log lines would otherwise be lost.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import {
  COMPONENT_OVERHEAD_BYTES, descendants, type Harness, loopsUnder, mountsUnder, processAlive, processArgs, renderConf,
  run, runOk, type RunResult, sha256FileRange, waitFor,
} from "../integration/harness.ts";
import { type NodeNet, type TestNetwork, VIP } from "./network.ts";

const REPO_ROOT = resolve(import.meta.dir, "../..");
export const SWITCH_SCRIPT = join(REPO_ROOT, "ops/switch/hast-switch");
const VIP_UP = join(REPO_ROOT, "ops/ucarp/vip-up.sh");
const VIP_DOWN = join(REPO_ROOT, "ops/ucarp/vip-down.sh");
const KEEPALIVED_NOTIFY = join(REPO_ROOT, "ops/keepalived/notify.sh");
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export const RESOURCE = "r0";
/** The peer timeout (hast.conf `timeout`): how long a secondary takes to notice a dead primary. */
export const PEER_TIMEOUT_S = 5;
const VHID = 10;
const CONTROL_WAIT_MS = 20_000;
const STOP_WAIT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 30_000;
const OUTPUT_MAX_BYTES = 1024 * 1024;

export interface Binaries {
  hastd: string;
  hastctl: string;
}

/** A process whose stdout and stderr are kept (bounded) for assertions and failure reports. */
export class LoggedProcess {
  private text = "";

  constructor(
    readonly label: string,
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
  ) {
    void this.collect(proc.stdout);
    void this.collect(proc.stderr);
  }

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get output(): string {
    return this.text;
  }

  private async collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.text += decoder.decode(chunk, { stream: true });
      if (this.text.length > OUTPUT_MAX_BYTES) this.text = this.text.slice(-OUTPUT_MAX_BYTES / 2);
    }
  }

  /** True once it exited within timeout_ms. */
  async exited(timeout_ms: number): Promise<boolean> {
    return await Promise.race([this.proc.exited.then(() => true), Bun.sleep(timeout_ms).then(() => false)]);
  }
}

export type Manager = "ucarp" | "keepalived";

export interface E2eNode {
  name: string;
  net: NodeNet;
  /** ucarp --advskew: B is preferred (0) so that it stays master once it has taken over.
   * keepalived priority: 200 - advskew. */
  advskew: number;
  dir: string;
  disk: string;
  control: string;
  pidfile: string;
  devdir: string;
  /** Directory of the NBD socket, which hastd also uses for the FUSE mount of /dev/hast. */
  nbddir: string;
  mnt: string;
  switchConf: string;
  switchWrapper: string;
  switchLog: string;
  hastd: LoggedProcess | null;
  manager: LoggedProcess | null;
}

/** One finished hast-switch run, as the wrapper logged it. */
export interface SwitchRun {
  action: string;
  code: number;
}

export class FailoverPair {
  readonly a: E2eNode;
  readonly b: E2eNode;
  readonly conf: string;
  private readonly tmp: string;
  /** Every hastd and manager ever started (killed at cleanup even after a restart). */
  private started: LoggedProcess[] = [];

  constructor(
    private readonly h: Harness,
    private readonly bin: Binaries,
    readonly net: TestNetwork,
    data_bytes: number,
    readonly manager: Manager = "ucarp",
  ) {
    this.tmp = h.path("tmp");
    mkdirSync(this.tmp);
    this.a = this.makeNode("nodea", net.a, 100, data_bytes);
    this.b = this.makeNode("nodeb", net.b, 0, data_bytes);
    this.conf = h.writeText("hast.conf", this.hastConf());
    for (const node of this.nodes) {
      this.writeSwitchFiles(node);
      if (manager === "keepalived") this.writeKeepalivedFiles(node);
    }
  }

  get nodes(): [E2eNode, E2eNode] {
    return [this.a, this.b];
  }

  other(node: E2eNode): E2eNode {
    return node === this.a ? this.b : this.a;
  }

  private makeNode(name: string, net: NodeNet, advskew: number, data_bytes: number): E2eNode {
    const dir = this.h.path(name);
    mkdirSync(dir);
    const node: E2eNode = {
      name, net, advskew, dir,
      disk: this.h.sparseFile(`${name}/disk.img`, data_bytes + COMPONENT_OVERHEAD_BYTES),
      control: join(dir, "ctl.sock"), pidfile: join(dir, "hastd.pid"), devdir: join(dir, "dev"),
      nbddir: join(dir, "run"), mnt: join(dir, "mnt"),
      switchConf: join(dir, "hast-switch.conf"), switchWrapper: join(dir, "hast-switch"), switchLog: join(dir, "switch.log"),
      hastd: null, manager: null,
    };
    mkdirSync(node.mnt);
    return node;
  }

  /** One file for both nodes, as in production; each finds its blocks through HASTD_NODE. */
  private hastConf(): string {
    const on = (n: E2eNode) => ({
      control: `uds://${n.control}`, listen: `tcp://${n.net.address}`, pidfile: n.pidfile,
    });
    const resourceOn = (n: E2eNode) => ({
      local: n.disk, remote: `tcp://${this.other(n).net.address}`, source: n.net.address,
      nbd: `uds://${join(n.nbddir, `${RESOURCE}.nbd`)}`,
    });
    return renderConf({
      global: { timeout: PEER_TIMEOUT_S },
      on: { [this.a.name]: on(this.a), [this.b.name]: on(this.b) },
      resources: { [RESOURCE]: { on: { [this.a.name]: resourceOn(this.a), [this.b.name]: resourceOn(this.b) } } },
    });
  }

  private writeSwitchFiles(node: E2eNode): void {
    // SECONDARY_WAIT_S > PEER_TIMEOUT_S: the promotion must outwait its own secondary worker.
    writeFileSync(node.switchConf, [
      `HASTCTL=${this.bin.hastctl}`,
      `HASTCTL_CONFIG=${this.conf}`,
      `HAST_RESOURCES=${RESOURCE}`,
      `HAST_DEVDIR=${node.devdir}`,
      `HAST_MOUNTS="${RESOURCE}:${node.mnt}:ext4:noatime"`,
      `HAST_SWITCH_RUNDIR=${join(node.dir, "switch-run")}`,
      `SECONDARY_WAIT_S=${PEER_TIMEOUT_S * 4}`,
      "DEVICE_WAIT_S=20",
      "LOCK_WAIT_S=60",
      "VIP_PREFIX=32",
      "",
    ].join("\n"));
    writeFileSync(node.switchWrapper, [
      "#!/bin/sh",
      "# e2e: the real hast-switch, its output and exit status appended to switch.log",
      `"${SWITCH_SCRIPT}" "$@" >>"${node.switchLog}" 2>&1`,
      "rc=$?",
      `echo "hast-switch $* exited $rc" >>"${node.switchLog}"`,
      "exit $rc",
      "",
    ].join("\n"));
    chmodSync(node.switchWrapper, 0o755);
  }

  /** keepalived.conf as ops/keepalived/keepalived.conf.sample has it, checking every second. Its
   * scripts inherit keepalived's environment (env()), so notify.sh finds the logging wrapper. */
  private writeKeepalivedFiles(node: E2eNode): void {
    writeFileSync(join(node.dir, "keepalived.conf"), `global_defs {
    script_user root
    enable_script_security
}
vrrp_script chk_hast {
    script "${SWITCH_SCRIPT} check"
    interval 1
    timeout 5
    fall 1
    rise 2
}
vrrp_instance HAST {
    state BACKUP
    nopreempt
    interface ${node.net.iface}
    virtual_router_id ${VHID}
    priority ${200 - node.advskew}
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass hast-e2e
    }
    virtual_ipaddress {
        ${VIP}/32
    }
    track_script {
        chk_hast
    }
    notify ${KEEPALIVED_NOTIFY}
}
`);
  }

  /** What hastd, hastctl, the failover manager and the scripts of this node see. */
  env(node: E2eNode): Record<string, string> {
    return {
      PATH: SYSTEM_PATH, HASTD_NODE: node.name, HASTD_DEVDIR: node.devdir, TMPDIR: this.tmp,
      HAST_SWITCH_CONF: node.switchConf, HAST_SWITCH: node.switchWrapper,
    };
  }

  // ------------------------------------------------------------------ hastctl

  async hastctl(node: E2eNode, args: string[]): Promise<RunResult> {
    const [sub, ...rest] = args;
    return await run([this.bin.hastctl, sub!, "-c", this.conf, ...rest], { env: this.env(node), timeout_ms: COMMAND_TIMEOUT_MS });
  }

  async hastctlOk(node: E2eNode, args: string[]): Promise<string> {
    const r = await this.hastctl(node, args);
    if (r.code !== 0) throw new Error(`${node.name}: hastctl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** `hastctl status --json r0` on the node. */
  async status(node: E2eNode): Promise<Record<string, any>> {
    const [s] = JSON.parse(await this.hastctlOk(node, ["status", "--json", RESOURCE]));
    if (!s) throw new Error(`${node.name}: hastctl status reported nothing for ${RESOURCE}`);
    return s;
  }

  /** sha256 of the node's data area, read from its component file (metadata from hastctl dump). */
  async dataSha256(node: E2eNode): Promise<string> {
    const [d] = JSON.parse(await this.hastctlOk(node, ["dump", "--json", RESOURCE]));
    return await sha256FileRange(node.disk, d.localoff, d.datasize);
  }

  /** /dev/hast/r0 of the node (a symlink to a loop device while it is primary). */
  device(node: E2eNode): string {
    return join(node.devdir, RESOURCE);
  }

  // ------------------------------------------------------------------ processes

  private spawn(node: E2eNode, label: string, argv: string[]): LoggedProcess {
    const proc = Bun.spawn(this.net.exec(node.net, argv), {
      cwd: node.dir, env: this.env(node), stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    const p = new LoggedProcess(`${node.name} ${label}`, proc);
    this.started.push(p);
    return p;
  }

  /** hastd -F in the node's namespace (nsenter execs it: the pid is hastd's); waits for control. */
  async startHastd(node: E2eNode): Promise<void> {
    const hastd = this.spawn(node, "hastd", [this.bin.hastd, "-F", "-c", this.conf, "-P", node.pidfile]);
    node.hastd = hastd;
    await waitFor(`${node.name}'s hastd to answer on ${node.control}`, async () => {
      if (!hastd.running) throw new Error(`${node.name}'s hastd exited during start-up:\n${hastd.output}`);
      return existsSync(node.control) && (await this.hastctl(node, ["status"])).code === 0;
    }, CONTROL_WAIT_MS);
  }

  /** ucarp as in docs/operations.md (--shutdown, no --preempt), the ops scripts as up/down; or
   * keepalived in the foreground, VRRP only, with the files writeKeepalivedFiles made. */
  startManager(node: E2eNode): void {
    node.manager = this.manager === "ucarp"
      ? this.spawn(node, "manager", [
        "ucarp", `--interface=${node.net.iface}`, `--srcip=${node.net.address}`, `--vhid=${VHID}`, "--pass=hast-e2e",
        `--addr=${VIP}`, `--upscript=${VIP_UP}`, `--downscript=${VIP_DOWN}`, "--advbase=1", `--advskew=${node.advskew}`,
        "--shutdown", `--xparam=${RESOURCE}`,
      ])
      : this.spawn(node, "manager", [
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "-f", join(node.dir, "keepalived.conf"),
        "-p", join(node.dir, "keepalived.pid"), "-r", join(node.dir, "vrrp.pid"),
      ]);
  }

  /** keepalived's VRRP state as its log last said ("(HAST) Entering FAULT STATE"), or null before
   * any. A state, not a transition after some point: a check that failed during the bring-up may
   * hold the instance in FAULT through the next failure, with no new line. */
  keepalivedState(node: E2eNode): string | null {
    const states = [...(node.manager?.output ?? "").matchAll(/\(HAST\) Entering (\w+) STATE/g)];
    return states.at(-1)?.[1] ?? null;
  }

  /** The manager's orderly stop (SIGTERM): ucarp with --shutdown runs its down script first if
   * master; keepalived runs its notify script with STOP. */
  async stopManager(node: E2eNode): Promise<void> {
    const manager = node.manager;
    if (!manager) throw new Error(`${node.name}'s ${this.manager} is not running`);
    manager.proc.kill("SIGTERM");
    if (!(await manager.exited(STOP_WAIT_MS))) throw new Error(`${node.name}'s ${this.manager} did not exit within ${STOP_WAIT_MS} ms of SIGTERM`);
    node.manager = null;
  }

  /** Pids of the node's hastd workers titled "hastd: r0 (<role>)". */
  workers(node: E2eNode, role: "primary" | "secondary"): number[] {
    if (!node.hastd?.running) return [];
    return descendants([node.hastd.pid]).filter((pid) => processArgs(pid).startsWith(`hastd: ${RESOURCE} (${role})`));
  }

  /** A crash: SIGKILL to the manager (keepalived's VRRP child too) and to hastd's main process
   * and worker, nothing else. */
  async crash(node: E2eNode): Promise<void> {
    const hastd = node.hastd;
    const manager = node.manager;
    if (!hastd || !manager) throw new Error(`${node.name} is not running`);
    const victims = [manager.pid, ...descendants([manager.pid]).filter((pid) => processArgs(pid).startsWith("keepalived")),
      hastd.pid, ...descendants([hastd.pid]).filter((pid) => processArgs(pid).startsWith("hastd: "))];
    for (const pid of victims) process.kill(pid, "SIGKILL");
    await waitFor(`${node.name}'s hastd and ${this.manager} to die`, () => victims.every((pid) => !processAlive(pid)), STOP_WAIT_MS);
    node.hastd = null;
    node.manager = null;
  }

  /**
   * What a reboot leaves of a crashed node: no mounts, no loop devices, no FUSE mount or nbdfuse,
   * an empty /dev/hast and /var/run, no service address. Its disk and hastd's metadata are all
   * that survive.
   */
  async rebootCleanup(node: E2eNode): Promise<void> {
    if (node.hastd?.running || node.manager?.running) throw new Error(`${node.name} is still running`);
    for (const point of mountsUnder(node.mnt)) await runOk(["umount", "-l", point], { timeout_ms: COMMAND_TIMEOUT_MS });
    for (const [loop] of await loopsUnder(node.nbddir)) await runOk(["losetup", "-d", loop], { timeout_ms: COMMAND_TIMEOUT_MS });
    const pidfile = join(node.nbddir, `${RESOURCE}.nbdfuse.pid`);
    const nbdfuse = existsSync(pidfile) ? Number(readFileSync(pidfile, "utf8").trim()) : 0;
    if (nbdfuse > 1 && processAlive(nbdfuse) && processArgs(nbdfuse).startsWith("nbdfuse")) process.kill(nbdfuse, "SIGKILL");
    for (const point of mountsUnder(node.nbddir)) {
      await run(["fusermount3", "-u", "-z", point], { timeout_ms: COMMAND_TIMEOUT_MS });
    }
    for (const path of [node.devdir, node.nbddir, join(node.dir, "switch-run"), node.pidfile, node.control]) {
      rmSync(path, { recursive: true, force: true });
    }
    await this.net.dropVip(node.net);
  }

  /**
   * Cleanup for afterAll/finally: the managers first (no more scripts), then every hast-switch still
   * running, then hastd (SIGTERM: it removes its own device), then whatever is left of ours.
   * Mounts, loop devices, FUSE and the temp dir are the harness's job afterwards.
   * HAST_TEST_LOGS=1 prints each node's switch.log, manager and hastd output first.
   */
  async stopAll(): Promise<void> {
    if (process.env.HAST_TEST_LOGS) for (const node of this.nodes) console.error(this.report(node));
    const kill = (pids: number[]) => {
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    };
    const managers = this.started.filter((p) => p.label.endsWith("manager") && p.running).map((p) => p.pid);
    kill([...managers, ...descendants(managers)]);
    const switches = this.pidsMentioning(this.nodes.map((n) => n.switchWrapper));
    kill([...switches, ...descendants(switches)]);
    const daemons = this.started.filter((p) => p.label.endsWith("hastd") && p.running);
    for (const d of daemons) d.proc.kill("SIGTERM");
    await Promise.all(daemons.map((d) => d.exited(STOP_WAIT_MS)));
    kill(this.started.filter((p) => p.running).map((p) => p.pid));
    const leftovers = this.pidsMentioning([this.h.dir]);
    kill([...leftovers, ...descendants(leftovers)]);
  }

  /** Live pids whose command line mentions one of the strings (paths unique to this test). */
  private pidsMentioning(needles: string[]): number[] {
    const pids: number[] = [];
    for (const entry of readdirSync("/proc")) {
      const pid = Number(entry);
      if (!/^\d+$/.test(entry) || pid === process.pid) continue;
      const args = processArgs(pid);
      if (needles.some((n) => args.includes(n)) && processAlive(pid)) pids.push(pid);
    }
    return pids;
  }

  // ------------------------------------------------------------------ hast-switch runs

  switchRuns(node: E2eNode): SwitchRun[] {
    if (!existsSync(node.switchLog)) return [];
    return [...readFileSync(node.switchLog, "utf8").matchAll(/^hast-switch (\w[\w-]*)\b.* exited (\d+)$/gm)]
      .map((m) => ({ action: m[1]!, code: Number(m[2]) }));
  }

  switchLogText(node: E2eNode): string {
    return existsSync(node.switchLog) ? readFileSync(node.switchLog, "utf8") : "";
  }

  /** Waits until the node has finished `count` hast-switch runs in all; returns the last one. */
  async waitSwitchRuns(node: E2eNode, count: number, timeout_ms: number): Promise<SwitchRun> {
    try {
      return await waitFor(`${node.name}: hast-switch run #${count}`, () => this.switchRuns(node)[count - 1], timeout_ms);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${this.report(node)}`);
    }
  }

  /** Logs of a node for a failure message. */
  report(node: E2eNode): string {
    return [
      `--- ${node.name} switch.log:\n${this.switchLogText(node)}`,
      `--- ${node.name} ${this.manager}:\n${node.manager?.output ?? "(not running)"}`,
      `--- ${node.name} hastd:\n${node.hastd?.output ?? "(not running)"}`,
    ].join("\n");
  }

  isMounted(node: E2eNode): boolean {
    return mountsUnder(node.mnt).includes(node.mnt);
  }
}
