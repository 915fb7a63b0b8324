#!/usr/bin/env bun
// `npm start`: a replicating pair on file-backed disks, on this machine. Two hastd processes (nodes
// "alpha" and "beta", told apart by HASTD_NODE) share one hast.conf; alpha becomes primary, data
// goes in through its NBD endpoint, beta receives every write, then the roles are swapped and the
// data is read back from beta; `hastctl events` follows alpha all along. Everything lives in a temporary directory removed at the end
// (set HAST_DEMO_KEEP=1 to keep it and the two daemons running).
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { consola } from "consola";
import { formatLastVerify } from "../ctl/format.ts";
import { nbdFlush, nbdRead, nbdWrite, RawNbdClient } from "../io/nbd-client.ts";
import type { ResourceStatus } from "../wire/control.ts";

const DISK_BYTES = 256 * 1024 * 1024;
const DATA_BYTES = 64 * 1024 * 1024;
const CHUNK_BYTES = 1024 * 1024;
const WAIT_MS = 60_000;
const root = new URL("../..", import.meta.url).pathname;
const entry = (name: string) => join(root, "src/cli", name);

async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

function hastctl(dir: string, node: string, ...args: string[]): { code: number; out: string } {
  const p = Bun.spawnSync([process.execPath, entry("hastctl.ts"), ...args, "-c", join(dir, "hast.conf")], {
    env: { ...process.env, HASTD_NODE: node }, stdout: "pipe", stderr: "pipe",
  });
  return { code: p.exitCode ?? 1, out: `${p.stdout.toString()}${p.stderr.toString()}` };
}

async function waitFor(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(200);
  }
}

function status(dir: string, node: string): ResourceStatus[] {
  const r = hastctl(dir, node, "status", "--json");
  return r.code === 0 ? JSON.parse(r.out) : [];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "hast-demo-"));
  const [port_a, port_b] = [await freePort(), await freePort()];
  consola.start(`Setting up a pair in ${dir}`);
  writeFileSync(join(dir, "hast.conf"), `# hast on Bun demo: two nodes on one machine
timeout 4
on alpha {
  control uds://${dir}/alpha.ctl
  listen 127.0.0.1:${port_a}
}
on beta {
  control uds://${dir}/beta.ctl
  listen 127.0.0.1:${port_b}
}
resource demo {
  device off
  secret demo-shared-secret
  on alpha {
    local ${dir}/alpha.img
    nbd uds://${dir}/alpha.nbd
    remote 127.0.0.1:${port_b}
  }
  on beta {
    local ${dir}/beta.img
    nbd uds://${dir}/beta.nbd
    remote 127.0.0.1:${port_a}
  }
}
`);
  for (const node of ["alpha", "beta"]) {
    writeFileSync(join(dir, `${node}.img`), "");
    truncateSync(join(dir, `${node}.img`), DISK_BYTES);
    const r = hastctl(dir, node, "create", "demo");
    if (r.code !== 0) throw new Error(`hastctl create on ${node}: ${r.out}`);
  }
  consola.success(`hastctl create: two ${DISK_BYTES >> 20} MiB file-backed components`);
  const daemons = ["alpha", "beta"].map((node) => Bun.spawn([process.execPath, entry("hastd.ts"), "-F", "-c", join(dir, "hast.conf")], {
    env: { ...process.env, HASTD_NODE: node }, stdout: "ignore", stderr: Bun.file(join(dir, `${node}.log`)),
  }));
  const stop = () => {
    for (const d of daemons) d.kill("SIGTERM");
  };
  try {
    await waitFor("both daemons", () => ["alpha", "beta"].every((n) => hastctl(dir, n, "status").code === 0));
    const events = Bun.spawn([process.execPath, entry("hastctl.ts"), "events", "-c", join(dir, "hast.conf")], {
      env: { ...process.env, HASTD_NODE: "alpha" }, stdout: "pipe", stderr: "ignore",
    });
    const event_log = new Response(events.stdout).text();
    hastctl(dir, "beta", "role", "secondary", "demo");
    hastctl(dir, "alpha", "role", "primary", "demo");
    await waitFor("the pair to connect", () => status(dir, "alpha")[0]?.status === "complete");
    await waitFor("the initial synchronization", () => status(dir, "alpha")[0]?.dirty === 0);
    consola.success("alpha is primary, beta is secondary, initial full synchronization done");
    process.stdout.write(hastctl(dir, "alpha", "status").out);

    const client = await RawNbdClient.connect({ unix: join(dir, "alpha.nbd") });
    await client.handshake({ export_name: "demo" });
    const started = performance.now();
    const hasher = new Bun.CryptoHasher("sha256");
    for (let off = 0; off < DATA_BYTES; off += CHUNK_BYTES) {
      const chunk = crypto.getRandomValues(new Uint8Array(CHUNK_BYTES));
      hasher.update(chunk);
      await nbdWrite(client, off, chunk);
    }
    await nbdFlush(client);
    client.close();
    const written_s = (performance.now() - started) / 1000;
    const digest = hasher.digest("hex");
    consola.success(`wrote ${DATA_BYTES >> 20} MiB of random data through alpha's NBD endpoint in ${written_s.toFixed(2)} s (sha256 ${digest.slice(0, 16)}...)`);
    process.stdout.write(hastctl(dir, "alpha", "list").out);

    consola.start("Switching roles: alpha → secondary, beta → primary");
    hastctl(dir, "alpha", "role", "secondary", "demo");
    hastctl(dir, "beta", "role", "primary", "demo");
    await waitFor("beta to serve as primary", () => status(dir, "beta")[0]?.status === "complete");
    const reader = await RawNbdClient.connect({ unix: join(dir, "beta.nbd") });
    await reader.handshake({ export_name: "demo" });
    const check = new Bun.CryptoHasher("sha256");
    for (let off = 0; off < DATA_BYTES; off += CHUNK_BYTES) check.update(await nbdRead(reader, off, CHUNK_BYTES));
    reader.close();
    const back = check.digest("hex");
    if (back !== digest) throw new Error(`data read back from beta differs: sha256 ${back} != ${digest}`);
    consola.success(`read the same ${DATA_BYTES >> 20} MiB back from beta: sha256 matches`);

    consola.start("Online verification on beta: both copies compared, chunk by chunk, by SHA-256");
    const verify = hastctl(dir, "beta", "verify", "demo");
    if (verify.code !== 0) throw new Error(`hastctl verify failed: ${verify.out}`);
    await waitFor("the verification to end", () => status(dir, "beta")[0]?.last_verify !== undefined);
    const found = status(dir, "beta")[0]!.last_verify!;
    if (found.ended !== "complete" || found.differ_chunks !== 0) throw new Error(`verification: ${JSON.stringify(found)}`);
    consola.success(`verification ${formatLastVerify(found)}`);
    process.stdout.write(hastctl(dir, "beta", "status").out);
    events.kill("SIGTERM");
    consola.success("what alpha went through, as `hastctl events` followed it:");
    process.stdout.write(await event_log);
    consola.info("Next: `npm test` runs every suite; docs/operations.md sets up two real machines.");
  } finally {
    if (process.env.HAST_DEMO_KEEP) {
      consola.info(`Kept ${dir}; daemons still running (pids ${daemons.map((d) => d.pid).join(", ")}).`);
    } else {
      stop();
      await Promise.all(daemons.map((d) => d.exited));
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

try {
  await main();
} catch (err) {
  consola.error((err as Error).message);
  process.exit(1);
}
