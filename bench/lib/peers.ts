// The peers our frontend is measured against, serving the same backing file on a unix socket:
// nbdkit's file plugin and qemu-nbd (raw, writeback cache, thread-pool AIO; both their defaults
// for a plain file, with multi-connection allowed as our server allows it).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { workerEnv } from "../../src/daemon/worker-handle.ts";
import { type Processes, type Started, waitFor } from "./procs.ts";

const START_WAIT_MS = 15_000;

export interface PeerServer {
  uri: string;
  started: Started;
}

export async function startNbdkit(procs: Processes, dir: string, file: string): Promise<PeerServer> {
  const sock = join(dir, "nbdkit.sock");
  const started = procs.start("nbdkit", ["nbdkit", "--foreground", "--exit-with-parent", "-U", sock, "file", file], { log_path: join(dir, "nbdkit.log") });
  await waitFor("nbdkit to listen", () => existsSync(sock), START_WAIT_MS);
  return { uri: `nbd+unix:///?socket=${sock}`, started };
}

export async function startQemuNbd(procs: Processes, dir: string, file: string): Promise<PeerServer> {
  const sock = join(dir, "qemu-nbd.sock");
  const started = procs.start("qemu-nbd", [
    "qemu-nbd", "--format=raw", "--persistent", "--shared=8", "--cache=writeback", "--aio=threads", "--socket", sock, file,
  ], { log_path: join(dir, "qemu-nbd.log") });
  await waitFor("qemu-nbd to listen", () => existsSync(sock), START_WAIT_MS);
  return { uri: `nbd+unix:///?socket=${sock}`, started };
}

/** Our NBD frontend over the plain file, no replication engine (bench/gate-server.ts). */
export async function startGate(procs: Processes, dir: string, file: string, profile_dir?: string): Promise<PeerServer> {
  const sock = join(dir, "gate.sock");
  const entry = new URL("../gate-server.ts", import.meta.url).pathname;
  const prof = profile_dir ? ["--cpu-prof-md", `--cpu-prof-dir=${profile_dir}`] : [];
  // The runtime settings a hastd worker gets (its heap, allocator and disk threads).
  const env = workerEnv({}) as Record<string, string>;
  const started = procs.start("gate", [process.execPath, ...prof, entry, file, sock], { env, log_path: join(dir, "gate.log") });
  await waitFor("the gate server to listen", () => existsSync(sock), START_WAIT_MS);
  return { uri: `nbd+unix:///gate?socket=${sock}`, started };
}
