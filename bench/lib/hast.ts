// Our daemon under test: one hastd primary with `remote none` (the unreplicated NBD frontend) or
// a replicating pair, two hastd processes on this host told apart by HASTD_NODE, one hast.conf.
// Roles and status go over the control socket directly (a hastctl process per poll would cost
// ~100 ms of Bun start-up and blur the resync timing).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Role } from "../../src/config/index.ts";
import { controlRequest } from "../../src/ctl/client.ts";
import type { ResourceStatus } from "../../src/wire/control.ts";
import { type Processes, runOk, type Started, waitFor } from "./procs.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const HASTD = join(ROOT, "src/cli/hastd.ts");
const HASTCTL = join(ROOT, "src/cli/hastctl.ts");
export const RESOURCE = "r0";
const START_WAIT_MS = 30_000;
const CONNECT_WAIT_MS = 120_000;

let warned_initial_sync = false;

export type Replication = "memsync" | "fullsync" | "async";
export type NodeName = "alpha" | "beta";

export interface HastOptions {
  dir: string;
  /** Backing files: alpha's (the primary) and, for a pair, beta's. */
  local: { alpha: string; beta?: string };
  replication: Replication;
  /** "full": the pair starts with a full synchronization (hastctl create's default); "none" unless set. */
  initial_sync?: "full" | "none";
}

export class HastDeployment {
  private readonly daemons = new Map<NodeName, Started>();
  private readonly conf: string;

  private constructor(private readonly procs: Processes, private readonly o: HastOptions, private readonly ports: { alpha: number; beta: number }) {
    this.conf = join(o.dir, "hast.conf");
  }

  get paired(): boolean {
    return this.o.local.beta !== undefined;
  }

  /** The primary's NBD export as fio's nbd engine and libnbd tools take it. */
  get uri(): string {
    return `nbd+unix:///${RESOURCE}?socket=${join(this.o.dir, "alpha.nbd")}`;
  }

  /** Writes the config, creates metadata (no initial sync: the benchmark never reads unwritten data),
   * starts the daemons and makes alpha primary (and beta secondary, connected). */
  static async start(procs: Processes, o: HastOptions): Promise<HastDeployment> {
    const alpha = freePort();
    let beta = freePort();
    while (beta === alpha) beta = freePort();
    const d = new HastDeployment(procs, o, { alpha, beta });
    d.writeConfig();
    for (const node of d.nodes()) await d.create(node);
    for (const node of d.nodes()) await d.startDaemon(node);
    if (d.paired) await d.setRole("beta", "secondary");
    await d.setRole("alpha", "primary");
    if (d.paired) await d.waitConnected();
    return d;
  }

  /** Metadata without a first full sync when hastctl accepts --initial-sync (both files hold zeroes
   * at the start); else a full one, which waitConnected() waits out. */
  private async create(node: NodeName): Promise<void> {
    const argv = [process.execPath, HASTCTL, "create", RESOURCE, "-c", this.conf];
    try {
      await runOk([...argv, "--initial-sync", this.o.initial_sync ?? "none"], 60_000, { HASTD_NODE: node });
    } catch (err) {
      if (!/illegal option/.test((err as Error).message)) throw err;
      if (!warned_initial_sync) console.error("bench: hastctl create rejects --initial-sync; pairs start with a full sync");
      warned_initial_sync = true;
      await runOk(argv, 60_000, { HASTD_NODE: node });
    }
  }

  nodes(): NodeName[] {
    return this.paired ? ["alpha", "beta"] : ["alpha"];
  }

  async startDaemon(node: NodeName): Promise<void> {
    const started = this.procs.start(`hastd ${node}`, [process.execPath, HASTD, "-F", "-c", this.conf], {
      env: { HASTD_NODE: node }, log_path: join(this.o.dir, `${node}.log`),
    });
    this.daemons.set(node, started);
    await waitFor(`hastd ${node} to answer on its control socket`, async () => (await this.status(node)) !== null, START_WAIT_MS, 100);
  }

  async stopDaemon(node: NodeName): Promise<void> {
    const started = this.daemons.get(node);
    if (!started) return;
    this.daemons.delete(node);
    await this.procs.stop(started);
  }

  async stop(): Promise<void> {
    for (const node of [...this.daemons.keys()].reverse()) await this.stopDaemon(node);
  }

  async setRole(node: NodeName, role: Role): Promise<void> {
    const reply = await controlRequest({ kind: "uds", path: this.controlPath(node) }, { cmd: "role", role, resources: [RESOURCE] }, 60_000);
    const failed = reply.error !== 0 ? reply.message : reply.resources[0]?.message;
    if (failed) throw new Error(`hastd ${node}: role ${role} failed: ${failed}`);
  }

  async status(node: NodeName): Promise<ResourceStatus | null> {
    try {
      const reply = await controlRequest({ kind: "uds", path: this.controlPath(node) }, { cmd: "status", resources: [RESOURCE] }, 5_000);
      return reply.resources[0] ?? null;
    } catch {
      return null;
    }
  }

  async waitConnected(): Promise<void> {
    await waitFor("the pair to connect and be in sync", async () => {
      const s = await this.status("alpha");
      return s?.status === "complete" && s.dirty === 0;
    }, CONNECT_WAIT_MS);
  }

  /** Main and worker pids per node, for peak RSS. */
  async pids(): Promise<{ node: NodeName; main: number; worker: number }[]> {
    const out: { node: NodeName; main: number; worker: number }[] = [];
    for (const [node, started] of this.daemons) {
      const worker = (await this.status(node))?.workerpid ?? 0;
      out.push({ node, main: started.proc.pid, worker });
    }
    return out;
  }

  private controlPath(node: NodeName): string {
    return join(this.o.dir, `${node}.ctl`);
  }

  private writeConfig(): void {
    const { dir, local, replication } = this.o;
    const node = (name: NodeName) => `on ${name} {
  control uds://${join(dir, `${name}.ctl`)}
  pidfile ${join(dir, `${name}.pid`)}
  listen 127.0.0.1:${this.ports[name]}
}`;
    const resourceNode = (name: NodeName, path: string, remote: string) => `  on ${name} {
    local ${path}
    nbd uds://${join(dir, `${name}.nbd`)}
    remote ${remote}
  }`;
    const parts = [
      "# written by bench/run.ts",
      "timeout 20",
      node("alpha"),
      ...(local.beta ? [node("beta")] : []),
      `resource ${RESOURCE} {`,
      "  device off",
      `  replication ${replication}`,
      resourceNode("alpha", local.alpha, local.beta ? `127.0.0.1:${this.ports.beta}` : "none"),
      ...(local.beta ? [resourceNode("beta", local.beta, `127.0.0.1:${this.ports.alpha}`)] : []),
      "}",
    ];
    writeFileSync(this.conf, `${parts.join("\n")}\n`);
  }
}

function freePort(): number {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}
