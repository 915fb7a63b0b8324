// Integration-test harness: a temp directory per test, config files in both syntaxes, hastd
// daemons (any number, each with its own node name, control socket, pidfile and TCP port),
// hastctl runs, and a cleanup that leaves nothing behind even when a test fails half-way:
// processes are killed by pid (daemons, their descendants, nbdfuse pidfiles), mounts under the
// temp dir are unmounted, loop devices backed by its files detached, then the dir is removed.
// HAST_TEST_LOGS=1 prints every daemon's log at cleanup (for a failing test).
//
//   let h: Harness;
//   beforeEach(async () => { h = await Harness.create("daemon"); });
//   afterEach(async () => { await h.cleanup(); });
//   const a = await h.addNode("nodea");
//   const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", 64 * MiB) }));
//   const d = await h.startDaemon(a, conf);
//   expect((await h.hastctl(a, conf, ["role", "primary", "r0"])).code).toBe(0);
import { randomBytes, randomFillSync } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync, writeSync, closeSync, openSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { nbdRead, RawNbdClient } from "../../src/io/nbd-client.ts";
import { NBD_CMD } from "../../src/wire/nbd.ts";
import { waitFor } from "../wait-for.ts";
import { TcpProxy } from "./tcp-proxy.ts";

export { waitFor };

export const REPO_ROOT = resolve(import.meta.dir, "../..");
export const BUN = process.execPath;
export const HASTD = join(REPO_ROOT, "src/cli/hastd.ts");
export const HASTCTL = join(REPO_ROOT, "src/cli/hastctl.ts");
export const MiB = 1024 * 1024;

const COMMAND_TIMEOUT_MS = 60_000;
const CONTROL_WAIT_MS = 15_000;
/** Granularity at which an unacknowledged write may be torn (the page cache's). */
const TORN_PAGE_BYTES = 4096;
const STOP_WAIT_MS = 10_000;
/** Bound on the output a harness keeps per process. */
const OUTPUT_MAX_BYTES = 4 * MiB;

// ---------------------------------------------------------------- small utilities

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  cwd?: string;
  timeout_ms?: number;
  stdin?: Uint8Array | string;
}

/** Runs argv to completion (SIGKILL after timeout_ms; code 128+9 then) and collects its output. */
export async function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const proc = Bun.spawn(argv, {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdin: opts.stdin === undefined ? "ignore" : new TextEncoder().encode(String(opts.stdin)),
    stdout: "pipe",
    stderr: "pipe",
  });
  let timed_out = false;
  const timer = setTimeout(() => {
    timed_out = true;
    proc.kill("SIGKILL");
  }, opts.timeout_ms ?? COMMAND_TIMEOUT_MS);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited,
  ]);
  clearTimeout(timer);
  if (timed_out) return { code: 137, stdout, stderr: `${stderr}\n[harness] ${argv[0]} killed after ${opts.timeout_ms ?? COMMAND_TIMEOUT_MS} ms` };
  return { code: proc.signalCode ? 128 + signalNumber(proc.signalCode) : code, stdout, stderr };
}

/** Like run() but throws "<argv> failed (code): <stderr>" on a non-zero exit; returns stdout. */
export async function runOk(argv: string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(argv, opts);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

function signalNumber(signal: string | number): number {
  if (typeof signal === "number") return signal;
  return ({ SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGSEGV: 11, SIGTERM: 15 } as Record<string, number>)[signal] ?? 0;
}


export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** null when every tool is on PATH (sbin included), else "<tool> is not installed". */
export function missingTool(...tools: string[]): string | null {
  const path = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;
  for (const tool of tools) if (!Bun.which(tool, { PATH: path })) return `${tool} is not installed`;
  return null;
}

/** Why a test cannot run here (root and tools), or null. Prints the reason once when set. */
export function skipReason(label: string, opts: { root?: boolean; tools?: string[]; fuse?: boolean }): string | null {
  let reason: string | null = null;
  if (opts.root && !isRoot()) reason = "needs root";
  else if (opts.tools) reason = missingTool(...opts.tools);
  if (!reason && opts.fuse && !existsSync("/dev/fuse")) reason = "/dev/fuse is missing";
  if (reason) console.log(`skip: ${label}: ${reason}`);
  return reason;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is gone for our purposes.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** `ps -o args` of a pid, "" if it is gone. */
export function processArgs(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean).join(" ");
  } catch {
    return "";
  }
}

function parentOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return 0;
  }
}

/** Every live descendant of the given pids (children first found, then theirs). */
export function descendants(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const ppid = parentOf(pid);
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid)!.push(pid);
  }
  const out: number[] = [];
  const queue = [...roots];
  while (queue.length) {
    for (const child of children.get(queue.shift()!) ?? []) {
      if (out.includes(child)) continue;
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}

/** Pids whose command line starts with `prefix`, e.g. "hastd: r0 (primary)". */
export function pidsWithArgs(prefix: string, among?: number[]): number[] {
  const pids = among ?? readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number);
  return pids.filter((pid) => processArgs(pid).startsWith(prefix) && processAlive(pid));
}

export async function sha256File(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  const stream = Bun.file(path).stream();
  for await (const chunk of stream) hasher.update(chunk);
  return hasher.digest("hex");
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough for sequential tests). */
export function freePort(): number {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

/** Mount points (from /proc/self/mountinfo) at or below dir, deepest first. */
export function mountsUnder(dir: string): string[] {
  const lines = readFileSync("/proc/self/mountinfo", "utf8").split("\n");
  const points = lines.map((l) => unescapeMount(l.split(" ")[4] ?? "")).filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Loop devices whose backing file lies at or below dir: [device, backing file]. */
export async function loopsUnder(dir: string): Promise<[string, string][]> {
  if (missingTool("losetup")) return [];
  const r = await run(["losetup", "-l", "-n", "--raw", "-O", "NAME,BACK-FILE"], { timeout_ms: 10_000 });
  if (r.code !== 0) return [];
  const out: [string, string][] = [];
  for (const line of r.stdout.split("\n")) {
    const m = /^(\S+)\s+(.*)$/.exec(line.trim());
    if (!m) continue;
    const back = m[2]!.replace(/ \(deleted\)$/, "");
    if (back === dir || back.startsWith(`${dir}/`)) out.push([m[1]!, back]);
  }
  return out;
}

// ---------------------------------------------------------------- configuration files

export type Value = string | number | boolean | string[];
/** Statements in one block, in order; `listen` may be an array (several statements in hast.conf). */
export type Settings = Record<string, Value>;

export interface ResourceSpec {
  settings?: Settings;
  /** Per-node blocks: `on <node> { ... }` / [resource.<name>.on.<node>]. */
  on: Record<string, Settings>;
}

export interface ConfigSpec {
  global?: Settings;
  /** Per-node global blocks (control, listen, pidfile, logfile). */
  on?: Record<string, Settings>;
  resources: Record<string, ResourceSpec>;
}

export type Syntax = "conf" | "toml";

function confValue(key: string, value: string | number | boolean): string {
  if (typeof value === "boolean") return value ? "on" : "off";
  const text = String(value);
  if (text === "") throw new Error(`config value for ${key} is empty`);
  return /[\s#{}";]/.test(text) ? JSON.stringify(text) : text;
}

function confBlock(settings: Settings | undefined, indent: string): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(settings ?? {})) {
    for (const v of Array.isArray(value) ? value : [value]) out.push(`${indent}${key} ${confValue(key, v)}`);
  }
  return out;
}

/** hast.conf(5) text for a spec. */
export function renderConf(spec: ConfigSpec): string {
  const out = confBlock(spec.global, "");
  for (const [node, settings] of Object.entries(spec.on ?? {})) out.push(`on ${node} {`, ...confBlock(settings, "\t"), "}");
  for (const [name, r] of Object.entries(spec.resources)) {
    out.push(`resource ${name} {`, ...confBlock(r.settings, "\t"));
    for (const [node, settings] of Object.entries(r.on)) out.push(`\ton ${node} {`, ...confBlock(settings, "\t\t"), "\t}");
    out.push("}");
  }
  return `${out.join("\n")}\n`;
}

function tomlBlock(settings: Settings | undefined): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(settings ?? {})) {
    // listen is always an array in TOML; everything else a scalar.
    const v = key === "listen" && !Array.isArray(value) ? [value] : value;
    out.push(`${key} = ${JSON.stringify(v)}`);
  }
  return out;
}

const tomlKey = (k: string) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k));

/** TOML text for a spec (the schema of docs/config.md). */
export function renderToml(spec: ConfigSpec): string {
  const out = tomlBlock(spec.global);
  for (const [node, settings] of Object.entries(spec.on ?? {})) out.push("", `[on.${tomlKey(node)}]`, ...tomlBlock(settings));
  for (const [name, r] of Object.entries(spec.resources)) {
    out.push("", `[resource.${tomlKey(name)}]`, ...tomlBlock(r.settings));
    for (const [node, settings] of Object.entries(r.on)) {
      out.push("", `[resource.${tomlKey(name)}.on.${tomlKey(node)}]`, ...tomlBlock(settings));
    }
  }
  return `${out.join("\n")}\n`;
}

// ---------------------------------------------------------------- nodes and daemons

/** Everything a node (one hastd) owns in the temp dir. */
export interface NodeInfo {
  name: string;
  /** Control socket path (config: control uds://<path>). */
  control: string;
  pidfile: string;
  /** Where a daemonized hastd of this node logs (config: logfile). */
  logfile: string;
  /** TCP port for `listen` (and for a peer's `remote`). */
  port: number;
  /** HASTD_DEVDIR for this node's daemon. */
  devdir: string;
}

/** The per-node global block: control socket, peer listen address, pidfile and logfile. */
export function nodeSettings(node: NodeInfo): Settings {
  return {
    control: `uds://${node.control}`,
    listen: `tcp://127.0.0.1:${node.port}`,
    pidfile: node.pidfile,
    logfile: node.logfile,
  };
}

export interface SingleResourceOptions {
  name?: string;
  local: string;
  /** NBD endpoint path; default <dir of local>/<name>.nbd. */
  nbd?: string;
  /** Default false: the NBD endpoint only. */
  device?: boolean;
  remote?: string;
  settings?: Settings;
}

/** The common case: one node, one resource with `remote none` (unless given) and an NBD socket. */
export function singleResource(node: NodeInfo, o: SingleResourceOptions): ConfigSpec {
  const name = o.name ?? "r0";
  const nbd = o.nbd ?? join(o.local, "..", `${name}.nbd`);
  return {
    on: { [node.name]: nodeSettings(node) },
    resources: {
      [name]: {
        settings: { nbd: `uds://${resolve(nbd)}`, device: o.device ?? false, ...o.settings },
        on: { [node.name]: { local: o.local, remote: o.remote ?? "none" } },
      },
    },
  };
}

export interface DaemonOptions {
  /** Extra hastd arguments (after -c and -P), e.g. ["-d"]. */
  args?: string[];
  env?: Record<string, string | undefined>;
  /** Wait for the control socket to answer (default true). */
  wait?: boolean;
}

/** A foreground hastd (-F) started by the harness; stderr is collected for log assertions. */
export class Daemon {
  private output = "";
  private readonly drained: Promise<void>;

  constructor(
    readonly node: NodeInfo,
    readonly config_path: string,
    readonly proc: Subprocess<"ignore", "pipe", "pipe">,
  ) {
    this.drained = Promise.all([this.collect(proc.stdout), this.collect(proc.stderr)]).then(() => undefined);
  }

  get pid(): number {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Everything hastd wrote to stdout and stderr so far. */
  get log(): string {
    return this.output;
  }

  private async collect(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      this.output += decoder.decode(chunk, { stream: true });
      if (this.output.length > OUTPUT_MAX_BYTES) this.output = this.output.slice(-OUTPUT_MAX_BYTES / 2);
    }
  }

  async waitLog(pattern: RegExp | string, timeout_ms = 10_000): Promise<void> {
    const hit = () => (typeof pattern === "string" ? this.output.includes(pattern) : pattern.test(this.output));
    await this.waitOutput(String(pattern), hit, timeout_ms);
  }

  /** Until `text` has appeared `times` times (the output kept is bounded: for short tests). */
  async waitLogTimes(text: string, times: number, timeout_ms = 10_000): Promise<void> {
    await this.waitOutput(`${times} × ${text}`, () => this.output.split(text).length - 1 >= times, timeout_ms);
  }

  private async waitOutput(what: string, hit: () => boolean, timeout_ms: number): Promise<void> {
    await waitFor(`${what} in the hastd log`, hit, timeout_ms).catch(() => {
      throw new Error(`timed out after ${timeout_ms} ms waiting for ${what} in the hastd log:\n${this.output}`);
    });
  }

  /**
   * N of every "Synchronization complete. N bytes" line, in order, once at least `passes` of them
   * came through the pipe: a status can report a pass done before its log line has arrived.
   */
  async synced(passes: number, timeout_ms = 10_000): Promise<number[]> {
    const all = () => [...this.output.matchAll(/Synchronization complete\. (\d+) bytes/g)].map((m) => Number(m[1]));
    await this.waitOutput(`${passes} completed synchronization(s)`, () => all().length >= passes, timeout_ms);
    return all();
  }

  /** Exit code (or 128+signal), after waiting at most timeout_ms; null if still running. */
  async exited(timeout_ms = STOP_WAIT_MS): Promise<number | null> {
    const done = await Promise.race([this.proc.exited.then(() => true), Bun.sleep(timeout_ms).then(() => false)]);
    if (!done) return null;
    await Promise.race([this.drained, Bun.sleep(1_000)]);
    return this.proc.signalCode ? 128 + signalNumber(this.proc.signalCode) : this.proc.exitCode;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.proc.kill(sig);
  }

  /** SIGTERM and wait; SIGKILL (and throw) if it does not exit in time. */
  async stop(timeout_ms = STOP_WAIT_MS): Promise<number> {
    this.signal("SIGTERM");
    const code = await this.exited(timeout_ms);
    if (code !== null) return code;
    this.proc.kill("SIGKILL");
    await this.exited(2_000);
    throw new Error(`hastd (pid ${this.pid}) did not exit within ${timeout_ms} ms of SIGTERM; killed`);
  }
}

// ---------------------------------------------------------------- the harness

const live = new Set<Harness>();

export class Harness {
  private daemons: Daemon[] = [];
  /** Pidfiles of processes we started indirectly (daemonized hastd). */
  private pidfiles: string[] = [];
  private cleanups: (() => unknown)[] = [];
  private nodes = new Map<string, NodeInfo>();

  private constructor(readonly dir: string) {}

  static async create(label = "it"): Promise<Harness> {
    const h = new Harness(mkdtempSync(join(tmpdir(), `hast-${label}-`)));
    live.add(h);
    return h;
  }

  /** For afterAll: cleans up every harness a test forgot (or that a crash left). */
  static async cleanupAll(): Promise<void> {
    for (const h of [...live]) await h.cleanup();
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** A sparse file of size_bytes in the temp dir; returns its path. */
  sparseFile(name: string, size_bytes: number): string {
    const path = this.path(name);
    closeSync(openSync(path, "w"));
    truncateSync(path, size_bytes);
    return path;
  }

  writeText(name: string, text: string): string {
    const path = this.path(name);
    writeFileSync(path, text);
    return path;
  }

  /** Writes the spec as hast.conf (default) or TOML; returns the path. */
  writeConfig(spec: ConfigSpec, syntax: Syntax = "conf", name = syntax === "toml" ? "hast.toml" : "hast.conf"): string {
    return this.writeText(name, syntax === "toml" ? renderToml(spec) : renderConf(spec));
  }

  /** Registers a node: its own control socket, pidfile, logfile, devdir and a free TCP port. */
  addNode(name: string): NodeInfo {
    if (this.nodes.has(name)) throw new Error(`node ${name} added twice`);
    const node: NodeInfo = {
      name, control: this.path(`ctl-${name}.sock`), pidfile: this.path(`hastd-${name}.pid`),
      logfile: this.path(`hastd-${name}.log`), port: freePort(), devdir: this.path(`dev-${name}`),
    };
    this.nodes.set(name, node);
    return node;
  }

  /** Environment for hastd/hastctl as this node. */
  envFor(node: NodeInfo, extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
    return { HASTD_NODE: node.name, HASTD_DEVDIR: node.devdir, ...extra };
  }

  /** hastctl <args...> -c config as this node; never throws on a non-zero exit. */
  async hastctl(node: NodeInfo, config: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    const [sub, ...rest] = args;
    const argv = sub === undefined ? [BUN, HASTCTL] : [BUN, HASTCTL, sub, "-c", config, ...rest];
    return await run(argv, { ...opts, env: this.envFor(node, opts.env) });
  }

  /** hastctl that must exit 0; returns stdout. */
  async hastctlOk(node: NodeInfo, config: string, args: string[], opts: RunOptions = {}): Promise<string> {
    const r = await this.hastctl(node, config, args, opts);
    if (r.code !== 0) throw new Error(`hastctl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** `hastctl list --json` parsed. */
  async listJson(node: NodeInfo, config: string, names: string[] = []): Promise<Record<string, any>[]> {
    return JSON.parse(await this.hastctlOk(node, config, ["list", "--json", ...names]));
  }

  /** hastd -F -c config -P <node pidfile> as this node; waits until the control socket answers. */
  async startDaemon(node: NodeInfo, config: string, opts: DaemonOptions = {}): Promise<Daemon> {
    const proc = Bun.spawn([BUN, HASTD, "-F", "-c", config, "-P", node.pidfile, ...(opts.args ?? [])], {
      cwd: REPO_ROOT, env: { ...process.env, ...this.envFor(node, opts.env) },
      stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    const daemon = new Daemon(node, config, proc);
    this.daemons.push(daemon);
    if (opts.wait !== false) await this.waitControl(node, config, daemon);
    return daemon;
  }

  /** Waits (bounded) until hastctl status answers on this node's control socket. */
  async waitControl(node: NodeInfo, config: string, daemon?: Daemon, timeout_ms = CONTROL_WAIT_MS): Promise<void> {
    await waitFor(`control socket ${node.control}`, async () => {
      if (daemon && !daemon.running) throw new Error(`hastd exited (${await daemon.exited(1_000)}) during start-up:\n${daemon.log}`);
      if (!existsSync(node.control)) return false;
      return (await this.hastctl(node, config, ["status"], { timeout_ms: 5_000 })).code === 0;
    }, timeout_ms);
  }

  /** Processes started outside startDaemon (a daemonized hastd) are killed at cleanup by pidfile. */
  trackPidfile(path: string): void {
    this.pidfiles.push(path);
  }

  /** Extra cleanup steps (run first, in reverse order). */
  onCleanup(fn: () => unknown): void {
    this.cleanups.push(fn);
  }

  /** Pid of the worker shown by `ps -o args` as "hastd: <name> (<role>)" under this daemon. */
  workerPids(daemon: Daemon, resource: string, role = "primary"): number[] {
    return pidsWithArgs(`hastd: ${resource} (${role})`, descendants([daemon.pid]));
  }

  /** Idempotent; never throws. Reports what it had to clean up forcibly on stderr. */
  async cleanup(): Promise<void> {
    if (!live.has(this)) return;
    live.delete(this);
    const notes: string[] = [];
    const attempt = async (what: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (err) {
        notes.push(`${what}: ${(err as Error).message}`);
      }
    };
    for (const fn of this.cleanups.reverse()) await attempt("cleanup step", fn);
    if (process.env.HAST_TEST_LOGS) {
      for (const d of this.daemons) console.error(`[harness] hastd ${d.node.name} (pid ${d.pid}) log:\n${d.log}`);
    }
    // Processes: daemons first with SIGTERM (they tear down their own devices), then anything left.
    const roots = [...this.daemons.filter((d) => d.running).map((d) => d.pid), ...this.pidfileProcesses()];
    const family = [...roots, ...descendants(roots)];
    for (const pid of roots) await attempt(`SIGTERM ${pid}`, () => process.kill(pid, "SIGTERM"));
    await waitFor("daemons to exit", () => roots.every((pid) => !processAlive(pid)), STOP_WAIT_MS).catch(() => undefined);
    for (const pid of family) {
      if (!processAlive(pid)) continue;
      notes.push(`killed leftover process ${pid} (${processArgs(pid)})`);
      await attempt(`SIGKILL ${pid}`, () => process.kill(pid, "SIGKILL"));
    }
    await attempt("nbdfuse pidfiles", () => this.killNbdfusePidfiles(notes));
    // Mounts on loop devices first, then loops, then FUSE mounts (lazily: a dead server must not hang us).
    for (const point of mountsUnder(this.dir)) {
      if (this.isFuse(point)) continue;
      notes.push(`unmounted ${point}`);
      await attempt(`umount ${point}`, () => runOk(["umount", "-l", point], { timeout_ms: 10_000 }));
    }
    for (const [loop, back] of await loopsUnder(this.dir)) {
      notes.push(`detached ${loop} (${back})`);
      await attempt(`losetup -d ${loop}`, () => runOk(["losetup", "-d", loop], { timeout_ms: 10_000 }));
    }
    for (const point of mountsUnder(this.dir)) {
      notes.push(`unmounted FUSE ${point}`);
      await attempt(`fusermount3 -u ${point}`, () => run(["fusermount3", "-u", "-z", point], { timeout_ms: 10_000 }));
      if (mountsUnder(this.dir).includes(point)) await attempt(`umount ${point}`, () => run(["umount", "-l", point], { timeout_ms: 10_000 }));
    }
    if (mountsUnder(this.dir).length === 0) await attempt("rm temp dir", () => rmSync(this.dir, { recursive: true, force: true }));
    else notes.push(`left ${this.dir} in place: still mounted`);
    if (notes.length) console.error(`[harness] cleanup of ${this.dir}:\n  ${notes.join("\n  ")}`);
  }

  private pidfileProcesses(): number[] {
    const pids: number[] = [];
    for (const path of this.pidfiles) {
      try {
        const pid = Number(readFileSync(path, "utf8").trim());
        if (pid > 1 && processAlive(pid)) pids.push(pid);
      } catch {
        // no pidfile: the process never started or removed it on exit
      }
    }
    return pids;
  }

  private killNbdfusePidfiles(notes: string[]): void {
    const walk = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
        const path = join(dir, e.name);
        if (e.isDirectory() && !mountsUnder(this.dir).includes(path)) return walk(path);
        return e.name.endsWith(".nbdfuse.pid") ? [path] : [];
      });
    if (!existsSync(this.dir)) return;
    for (const pidfile of walk(this.dir)) {
      const pid = Number(readFileSync(pidfile, "utf8").trim());
      if (pid > 1 && processAlive(pid) && processArgs(pid).includes("nbdfuse")) {
        notes.push(`killed nbdfuse ${pid} (${pidfile})`);
        process.kill(pid, "SIGKILL");
      }
    }
  }

  private isFuse(point: string): boolean {
    const lines = readFileSync("/proc/self/mountinfo", "utf8").split("\n");
    return lines.some((l) => unescapeMount(l.split(" ")[4] ?? "") === point && / - fuse/.test(l));
  }
}

// ---------------------------------------------------------------- replicating pairs

/** Component bytes beyond the data area for data_bytes ≤ 64 GiB at 2 MiB extents: 2 metadata slots + one map block. */
export const COMPONENT_OVERHEAD_BYTES = 12288;

export interface PairOptions {
  /** Resource name (default r0). */
  name?: string;
  /** Data area of each component (the files are data_bytes + COMPONENT_OVERHEAD_BYTES). */
  data_bytes: number;
  /** Node names (default nodea, nodeb). */
  nodes?: [string, string];
  /** Resource-level statements for both nodes (replication, checksum, secret, exec, timeout, ...). */
  settings?: Settings;
  /** Extra statements in one node's `on` block, e.g. { nodea: { source: "127.0.0.2" } }. */
  on?: Record<string, Settings>;
  /** A node's `remote` (default: the other node's listen address), e.g. a TcpProxy's address. */
  remote?: Record<string, string>;
  /**
   * Resource-level statements that differ per node (e.g. a different `secret`): each node then
   * gets its own config file, the shared settings plus these.
   */
  node_settings?: Record<string, Settings>;
  syntax?: Syntax;
  /** Extra environment for one node's hastd, e.g. { nodea: { HAST_FAULT_INJECT_FILE: ... } }. */
  env?: Record<string, Record<string, string>>;
}

export interface DataRegion {
  localoff: number;
  datasize: number;
}

/** `nbd+unix://` URI of a resource's NBD socket, for nbdcopy/nbdinfo/qemu-io. */
export const nbdUri = (socket: string, export_name = "r0") => `nbd+unix:///${export_name}?socket=${socket}`;

/**
 * Two hastd nodes sharing one config file, one resource replicated between them on 127.0.0.1.
 * Each node has its own component file (`disk`) and NBD socket (`nbd`); the config can be
 * rewritten (reconfigure) and the daemons started, killed and restarted.
 */
export class Pair {
  readonly daemons = new Map<string, Daemon>();
  conf = "";

  private constructor(
    readonly h: Harness,
    readonly name: string,
    readonly a: NodeInfo,
    readonly b: NodeInfo,
    private opts: PairOptions,
  ) {}

  /** Nodes, sparse component files and the config; nothing is created or started yet. */
  /** A pair whose primary (a) reaches the secondary (b) through a TcpProxy; roles set, in sync. */
  static async proxied(h: Harness, opts: PairOptions): Promise<{ pair: Pair; proxy: TcpProxy }> {
    const pair = Pair.create(h, opts);
    const proxy = await TcpProxy.start({ host: "127.0.0.1", port: pair.b.port });
    h.onCleanup(() => proxy.stop());
    pair.reconfigure({ remote: { [pair.a.name]: proxy.address } });
    await pair.up();
    await pair.waitSynced(pair.a);
    return { pair, proxy };
  }

  static create(h: Harness, opts: PairOptions): Pair {
    const [na, nb] = opts.nodes ?? ["nodea", "nodeb"];
    const pair = new Pair(h, opts.name ?? "r0", h.addNode(na), h.addNode(nb), opts);
    for (const node of pair.nodes) h.sparseFile(`${node.name}.img`, opts.data_bytes + COMPONENT_OVERHEAD_BYTES);
    pair.writeConfig();
    return pair;
  }

  get nodes(): [NodeInfo, NodeInfo] {
    return [this.a, this.b];
  }

  other(node: NodeInfo): NodeInfo {
    return node === this.a ? this.b : this.a;
  }

  disk(node: NodeInfo): string {
    return this.h.path(`${node.name}.img`);
  }

  nbd(node: NodeInfo): string {
    return this.h.path(`${node.name}.nbd`);
  }

  uri(node: NodeInfo): string {
    return nbdUri(this.nbd(node), this.name);
  }

  daemon(node: NodeInfo): Daemon {
    const d = this.daemons.get(node.name);
    if (!d) throw new Error(`hastd of ${node.name} was not started`);
    return d;
  }

  /** The config file a node's hastd and hastctl read. */
  confOf(node: NodeInfo): string {
    return this.opts.node_settings ? this.h.path(`hast-${node.name}.conf`) : this.conf;
  }

  spec(node?: NodeInfo): ConfigSpec {
    const o = this.opts;
    const settings = { device: false, ...o.settings, ...(node ? o.node_settings?.[node.name] : {}) };
    const block = (node: NodeInfo): Settings => ({
      local: this.disk(node), nbd: `uds://${this.nbd(node)}`,
      remote: o.remote?.[node.name] ?? `tcp://127.0.0.1:${this.other(node).port}`,
      ...o.on?.[node.name],
    });
    return {
      on: { [this.a.name]: nodeSettings(this.a), [this.b.name]: nodeSettings(this.b) },
      resources: { [this.name]: { settings, on: { [this.a.name]: block(this.a), [this.b.name]: block(this.b) } } },
    };
  }

  /** Changes the options and rewrites the config file (running daemons see it at SIGHUP or restart). */
  reconfigure(change: Partial<PairOptions>): void {
    this.opts = { ...this.opts, ...change };
    this.writeConfig();
  }

  private writeConfig(): void {
    const syntax = this.opts.syntax ?? "conf";
    this.conf = this.h.writeConfig(this.spec(), syntax);
    if (!this.opts.node_settings) return;
    for (const node of this.nodes) this.h.writeConfig(this.spec(node), syntax, `hast-${node.name}.conf`);
  }

  /** hastctl create on a node (args e.g. ["--initial-sync", "none"]). */
  async createOn(node: NodeInfo, args: string[] = []): Promise<void> {
    await this.h.hastctlOk(node, this.confOf(node), ["create", ...args, this.name]);
  }

  async start(node: NodeInfo, opts: DaemonOptions = {}): Promise<Daemon> {
    const env = { ...this.opts.env?.[node.name], ...opts.env };
    const d = await this.h.startDaemon(node, this.confOf(node), { ...opts, env });
    this.daemons.set(node.name, d);
    return d;
  }

  /** create on both, start both; b secondary, then a primary (unless roles: false). */
  async up(o: { create_args?: string[]; roles?: boolean } = {}): Promise<void> {
    for (const node of this.nodes) await this.createOn(node, o.create_args);
    for (const node of this.nodes) await this.start(node);
    if (o.roles === false) return;
    await this.role(this.b, "secondary");
    await this.role(this.a, "primary");
  }

  async role(node: NodeInfo, role: "init" | "primary" | "secondary"): Promise<void> {
    await this.h.hastctlOk(node, this.confOf(node), ["role", role, this.name]);
  }

  /** `hastctl list --json` of the resource on a node. */
  async status(node: NodeInfo): Promise<Record<string, any>> {
    const [r] = await this.h.listJson(node, this.confOf(node), [this.name]);
    if (!r) throw new Error(`no status for ${this.name} on ${node.name}`);
    return r;
  }

  /** `hastctl dump --json` of the node's component. */
  async dump(node: NodeInfo): Promise<Record<string, any>> {
    const [r] = JSON.parse(await this.h.hastctlOk(node, this.confOf(node), ["dump", "--json", this.name]));
    return r;
  }

  /** Waits until the primary on `node` is connected, no sync pass runs and nothing is dirty. */
  async waitSynced(node: NodeInfo, timeout_ms = 60_000): Promise<Record<string, any>> {
    return await waitFor(`${this.name} on ${node.name} connected and in sync`, async () => {
      const s = await this.status(node);
      return s.role === "primary" && s.status === "complete" && s.dirty === 0 && s.sync === undefined ? s : null;
    }, timeout_ms);
  }

  /** Where the data area lies in the node's component (from its metadata). */
  async region(node: NodeInfo): Promise<DataRegion> {
    const d = await this.dump(node);
    return { localoff: d.localoff, datasize: d.datasize };
  }

  /** sha256 of the node's data area read straight from the component file. */
  async dataSha256(node: NodeInfo, range?: { offset: number; length: number }): Promise<string> {
    const r = await this.region(node);
    const offset = range?.offset ?? 0;
    const length = range?.length ?? r.datasize - offset;
    return await sha256FileRange(this.disk(node), r.localoff + offset, length);
  }

  /** SIGKILL the node's hastd and every process under it (workers), as a crash would. */
  async kill(node: NodeInfo): Promise<void> {
    const d = this.daemon(node);
    const family = [d.pid, ...descendants([d.pid])];
    for (const pid of family) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await d.exited(5_000);
    await waitFor(`${node.name}'s hastd processes to die`, () => family.every((pid) => !processAlive(pid)), 5_000);
    this.daemons.delete(node.name);
  }

  async stop(node: NodeInfo): Promise<void> {
    await this.daemon(node).stop();
    this.daemons.delete(node.name);
  }
}

/** sha256 of length bytes of a file from offset. */
export async function sha256FileRange(path: string, offset: number, length: number): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  const stream = Bun.file(path).slice(offset, offset + length).stream();
  let seen = 0;
  for await (const chunk of stream) {
    hasher.update(chunk);
    seen += chunk.length;
  }
  if (seen !== length) throw new Error(`${path}: read ${seen} of ${length} bytes at ${offset}`);
  return hasher.digest("hex");
}

/** A file of random bytes in the harness dir; returns its path and sha256. */
export async function randomFile(h: Harness, name: string, size_bytes: number): Promise<{ path: string; sha256: string }> {
  const path = h.path(name);
  const fd = openSync(path, "w");
  const hasher = new Bun.CryptoHasher("sha256");
  try {
    const chunk = new Uint8Array(4 * MiB);
    for (let done = 0; done < size_bytes; done += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, size_bytes - done));
      randomFillSync(part);
      hasher.update(part);
      writeSync(fd, part);
    }
  } finally {
    closeSync(fd);
  }
  return { path, sha256: hasher.digest("hex") };
}

/** nbdcopy a file into an NBD endpoint (from offset 0) and flush. */
export async function nbdUpload(file: string, uri: string): Promise<void> {
  await runOk(["nbdcopy", "--flush", file, uri], { timeout_ms: 120_000 });
}

/** sha256 of the first length bytes of an NBD export, read with nbdcopy. */
export async function nbdSha256(h: Harness, uri: string, length: number, name = "readback.bin"): Promise<string> {
  const out = h.path(name);
  await runOk(["nbdcopy", uri, out], { timeout_ms: 120_000 });
  try {
    return await sha256FileRange(out, 0, length);
  } finally {
    rmSync(out, { force: true });
  }
}

/** An `exec` hook that appends "<HASTD_NODE> <event> <resource> [args]" to a file, one line per run. */
export function hookRecorder(h: Harness, name = "hook"): { path: string; lines: () => string[] } {
  const log = h.path(`${name}.log`);
  const path = h.writeText(`${name}.sh`, `#!/bin/sh\necho "$HASTD_NODE $*" >> '${log}'\n`);
  chmodSync(path, 0o755);
  return { path, lines: () => (existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean) : []) };
}

// ---------------------------------------------------------------- a writer that knows what was acknowledged

/** A small seeded PRNG (mulberry32): the same seed gives the same slots and kill points. */
export function seededRandom(seed: number): () => number {
  let t = seed >>> 0;
  return () => {
    t = (t + 0x6d2b79f5) >>> 0;
    let r = Math.imul(t ^ (t >>> 15), 1 | t);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
}

/** HAST_FAULT_SEED when set (to replay a run), else a fresh one; printed either way. */
export function faultSeed(label: string): number {
  const seed = process.env.HAST_FAULT_SEED ? Number(process.env.HAST_FAULT_SEED) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${label}: seed ${seed} (replay with HAST_FAULT_SEED=${seed})`);
  return seed;
}

export interface AckedWriterOptions {
  /** The primary's NBD unix socket. */
  socket: string;
  export_name?: string;
  /** Writes land in [offset_bytes, offset_bytes + region_bytes), one whole slot each. */
  region_bytes: number;
  /** Default 0; a multiple of slot_bytes. */
  offset_bytes?: number;
  /** Default 64 KiB. */
  slot_bytes?: number;
  /** Writes in flight at once (default 8); never two on one slot. */
  depth?: number;
  seed: number;
}

/** How long a write may go unanswered before the workload counts as hung. */
const ACKED_WRITE_REPLY_MAX_MS = 60_000;
const ACKED_WRITER_RECONNECT_MS = 100;
const sha256Hex = (data: Uint8Array) => new Bun.CryptoHasher("sha256").update(data).digest("hex");

/**
 * An NBD writer that records, per slot, which contents may be there: the last acknowledged write,
 * plus any write sent later (or on a connection that died) that never got an answer. It keeps
 * writing across a lost endpoint (reconnecting until stop()), so writes acknowledged by a
 * restarted worker count too. verify() then checks a component's data area against that record:
 * an acknowledged write that is missing is reported with its slot and offset.
 */
export class AckedWriter {
  /** Writes answered with success / with an error; connections made. */
  acked = 0;
  failed = 0;
  connections = 0;
  private readonly slot_bytes: number;
  private readonly slots: number;
  private readonly offset_bytes: number;
  /** Per slot, every content it may hold (by sha256), with the bytes for the per-page check. */
  private readonly possible: Map<string, Uint8Array>[];
  /** Writes in flight on a connection that died: they may still land, whatever comes later. */
  private readonly lingering = new Map<number, Map<string, Uint8Array>>();
  private readonly random: () => number;
  private stopping = false;
  private failure: Error | null = null;
  private client: RawNbdClient | null = null;
  private readonly done: Promise<void>;

  private constructor(private readonly o: AckedWriterOptions) {
    this.slot_bytes = o.slot_bytes ?? 64 * 1024;
    if (o.region_bytes % this.slot_bytes !== 0) throw new Error(`region ${o.region_bytes} is not a whole number of ${this.slot_bytes}-byte slots`);
    this.slots = o.region_bytes / this.slot_bytes;
    this.offset_bytes = o.offset_bytes ?? 0;
    if (this.offset_bytes % this.slot_bytes !== 0) throw new Error(`offset ${this.offset_bytes} is not slot-aligned`);
    const zero = new Uint8Array(this.slot_bytes);
    const zero_hash = sha256Hex(zero);
    this.possible = Array.from({ length: this.slots }, () => new Map([[zero_hash, zero]]));
    this.random = seededRandom(o.seed);
    this.done = this.loop().catch((err: Error) => {
      this.failure = err;
    });
  }

  /** Starts writing at once (the endpoint may appear later). */
  static start(o: AckedWriterOptions): AckedWriter {
    return new AckedWriter(o);
  }

  get bytes_acked(): number {
    return this.acked * this.slot_bytes;
  }

  /** Waits until `count` writes in all have been acknowledged. */
  async waitAcked(count: number, timeout_ms = 30_000): Promise<void> {
    await waitFor(`${count} acknowledged writes (have ${this.acked})`, () => {
      if (this.failure) throw this.failure;
      return this.acked >= count;
    }, timeout_ms);
  }

  /** Stops sending, waits for the writes in flight to be answered, closes; throws if the workload failed. */
  async stop(timeout_ms = ACKED_WRITE_REPLY_MAX_MS + 5_000): Promise<void> {
    this.stopping = true;
    const finished = await Promise.race([this.done.then(() => true), Bun.sleep(timeout_ms).then(() => false)]);
    if (!finished) {
      this.client?.close();
      throw new Error(`NBD writer did not finish within ${timeout_ms} ms of stop`);
    }
    if (this.failure) throw this.failure;
  }

  /** Drops the connection (as a client crash would); the writer reconnects. */
  dropConnection(): void {
    this.client?.close();
  }

  /** Checks the data area of a component file at localoff: every slot holds a content it may hold. */
  async verifyFile(path: string, localoff: number): Promise<{ slots: number }> {
    const fd = openSync(path, "r");
    try {
      const buf = new Uint8Array(this.slot_bytes);
      return this.verify((slot) => {
        const got = readSync(fd, buf, 0, buf.length, localoff + this.slotOffset(slot));
        if (got !== buf.length) throw new Error(`${path}: short read at slot ${slot}`);
        return buf;
      });
    } finally {
      closeSync(fd);
    }
  }

  /** The same check through an NBD endpoint (exercises the read path). */
  async verifyNbd(socket: string): Promise<{ slots: number }> {
    const client = await RawNbdClient.connect({ unix: socket });
    try {
      await client.handshake({ export_name: this.o.export_name ?? "r0" });
      const contents: Uint8Array[] = [];
      for (let slot = 0; slot < this.slots; slot++) contents.push(await nbdRead(client, this.slotOffset(slot), this.slot_bytes));
      return this.verify((slot) => contents[slot]!);
    } finally {
      client.close();
    }
  }

  private slotOffset(slot: number): number {
    return this.offset_bytes + slot * this.slot_bytes;
  }

  /**
   * A write that was never acknowledged may land in part (a process killed inside pwrite writes
   * some pages): every 4 KiB page must still be that page of one of the slot's possible contents,
   * so the last acknowledged content can only be overlaid by pages of writes sent after it.
   */
  private pagewise(slot: number, got: Uint8Array): boolean {
    const candidates = [...this.possible[slot]!.values()];
    for (let at = 0; at < got.length; at += TORN_PAGE_BYTES) {
      const page = got.subarray(at, at + TORN_PAGE_BYTES);
      if (!candidates.some((c) => Buffer.compare(c.subarray(at, at + TORN_PAGE_BYTES), page) === 0)) return false;
    }
    return true;
  }

  private verify(read: (slot: number) => Uint8Array): { slots: number } {
    const bad: string[] = [];
    for (let slot = 0; slot < this.slots; slot++) {
      const got = read(slot);
      const hash = sha256Hex(got);
      if (!this.possible[slot]!.has(hash) && !this.pagewise(slot, got)) bad.push(`slot ${slot} (offset ${this.slotOffset(slot)}): sha256 ${hash.slice(0, 12)} is none of ${this.possible[slot]!.size} possible contents`);
    }
    if (bad.length) throw new Error(`${bad.length} of ${this.slots} slots lost an acknowledged write:\n  ${bad.slice(0, 10).join("\n  ")}`);
    return { slots: this.slots };
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      let client: RawNbdClient;
      try {
        client = await RawNbdClient.connect({ unix: this.o.socket });
      } catch {
        await Bun.sleep(ACKED_WRITER_RECONNECT_MS); // endpoint not there (yet): a worker restarting
        continue;
      }
      this.client = client;
      try {
        await client.handshake({ export_name: this.o.export_name ?? "r0" });
        this.connections++;
        await this.drive(client);
      } catch (err) {
        if (/hung/.test((err as Error).message)) throw err;
        await Bun.sleep(ACKED_WRITER_RECONNECT_MS); // the endpoint went away during the handshake
      } finally {
        client.close();
        this.client = null;
      }
    }
  }

  /** Keeps `depth` writes in flight on one connection until stop() or the connection dies. */
  private async drive(client: RawNbdClient): Promise<void> {
    const inflight = new Map<bigint, { slot: number; hash: string; data: Uint8Array }>();
    const busy = new Set<number>();
    const depth = Math.min(this.o.depth ?? 8, this.slots);
    const issue = () => {
      while (!this.stopping && !client.closed && inflight.size < depth) {
        let slot = Math.floor(this.random() * this.slots);
        while (busy.has(slot)) slot = (slot + 1) % this.slots;
        const data = randomBytes(this.slot_bytes);
        const hash = sha256Hex(data);
        this.possible[slot]!.set(hash, data); // from the moment it is sent, it may be there
        busy.add(slot);
        inflight.set(client.send({ command: NBD_CMD.WRITE, offset: this.slotOffset(slot) }, data), { slot, hash, data });
      }
    };
    issue();
    let last_reply_ms = Date.now();
    while (inflight.size > 0) {
      let reply: Awaited<ReturnType<RawNbdClient["reply"]>>;
      try {
        reply = await client.reply();
      } catch (err) {
        if (client.closed || !/timed out/.test((err as Error).message)) break;
        if (Date.now() - last_reply_ms > ACKED_WRITE_REPLY_MAX_MS) {
          throw new Error(`NBD writer hung: no reply for ${ACKED_WRITE_REPLY_MAX_MS} ms with ${inflight.size} writes in flight`);
        }
        continue; // slow (a stalled link before `timeout` fires): keep waiting
      }
      last_reply_ms = Date.now();
      const w = inflight.get(reply.cookie);
      if (!w) throw new Error(`NBD writer: reply for unknown cookie ${reply.cookie}`);
      inflight.delete(reply.cookie);
      busy.delete(w.slot);
      if (reply.error === 0) {
        this.acked++;
        this.possible[w.slot] = new Map([[w.hash, w.data], ...(this.lingering.get(w.slot) ?? [])]);
      } else {
        this.failed++;
      }
      issue();
    }
    for (const w of inflight.values()) {
      if (!this.lingering.has(w.slot)) this.lingering.set(w.slot, new Map());
      this.lingering.get(w.slot)!.set(w.hash, w.data);
    }
  }
}
