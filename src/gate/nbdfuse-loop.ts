// /dev/hast/<provname> on a Linux kernel without the nbd module: nbdfuse exposes our own NBD
// endpoint as a file on a FUSE mount, a loop device turns that file into a block device, and
// /dev/hast/<provname> is a symlink to the loop device. Torn down forcibly, as HAST does:
// a filesystem still mounted on it sees I/O errors, never stale data.
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, symlinkSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { run, runChecked, which } from "../io/command.ts";
import type { DeviceGate, DeviceOptions } from "./device.ts";

const NBDFUSE_READY_TIMEOUT_MS = 15_000;
const NBDFUSE_EXIT_TIMEOUT_MS = 5_000;
const POLL_MS = 50;

interface Paths {
  mountpoint: string;
  file: string;
  pidfile: string;
  link: string;
}

function pathsFor(opts: Pick<DeviceOptions, "provname" | "rundir" | "devdir">): Paths {
  const mountpoint = join(opts.rundir, `${opts.provname}.fuse`);
  return {
    mountpoint, file: join(mountpoint, "nbd"), pidfile: join(opts.rundir, `${opts.provname}.nbdfuse.pid`),
    link: join(opts.devdir, opts.provname),
  };
}

export function nbdfuseMissing(): string | null {
  for (const tool of ["nbdfuse", "losetup", "fusermount3"]) if (!which(tool)) return `${tool} is not installed`;
  if (!existsSync("/dev/fuse")) return "/dev/fuse is missing (no FUSE in this kernel)";
  if (process.getuid?.() !== 0) return "creating loop devices needs root";
  return null;
}

function isMountpoint(path: string): boolean {
  try {
    return readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === path);
  } catch {
    return false;
  }
}

async function detachLoops(file: string): Promise<string[]> {
  const r = await run(["losetup", "-j", file, "-O", "NAME", "-n"]);
  const loops = r.code === 0 ? r.stdout.split("\n").map((l) => l.trim()).filter(Boolean) : [];
  for (const loop of loops) await run(["losetup", "-d", loop]);
  return loops;
}

/** SIGKILLs the nbdfuse a pidfile names, if that pid is still an nbdfuse serving this mount point
 * (a pidfile left behind may name a process that has nothing to do with it by now). */
function killPidfile(pidfile: string, mountpoint: string): void {
  try {
    const pid = Number(readFileSync(pidfile, "utf8").trim());
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    if (pid > 1 && argv[0]?.endsWith("nbdfuse") && argv.includes(mountpoint)) process.kill(pid, "SIGKILL");
  } catch {
    // no pidfile, or no such process
  }
  rmSync(pidfile, { force: true });
}

function removeLink(link: string): void {
  try {
    if (lstatSync(link).isSymbolicLink()) unlinkSync(link);
  } catch {
    // absent
  }
}

function removeDir(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // absent, or still busy after a lazy unmount: the next start cleans it up
  }
}

/**
 * Removes what a crashed predecessor left: symlink, loop devices, FUSE mount, nbdfuse. An nbdfuse
 * whose server went away dies at the next I/O and leaves its mount dead (stat fails with
 * ENOTCONN, so the mount point does not "exist"): the mount table and losetup are asked instead.
 */
export async function cleanupNbdfuseLoop(opts: Pick<DeviceOptions, "provname" | "rundir" | "devdir">): Promise<string[]> {
  const p = pathsFor(opts);
  const found: string[] = [];
  const target = linkTarget(p.link);
  if (target !== null) {
    found.push(`${p.link} -> ${target}`);
    removeLink(p.link);
  }
  for (const loop of await detachLoops(p.file)) found.push(loop);
  if (isMountpoint(p.mountpoint)) {
    found.push(`FUSE mount ${p.mountpoint}`);
    await run(["fusermount3", "-u", "-z", p.mountpoint]);
  }
  if (existsSync(p.pidfile)) {
    found.push(`nbdfuse pidfile ${p.pidfile}`);
    killPidfile(p.pidfile, p.mountpoint);
  }
  removeDir(p.mountpoint);
  return found;
}

/** Where the symlink at `link` points, or null when there is none (a dangling one counts). */
function linkTarget(link: string): string | null {
  try {
    return lstatSync(link).isSymbolicLink() ? readlinkSync(link) : null;
  } catch {
    return null;
  }
}

export async function createNbdfuseLoop(opts: DeviceOptions): Promise<DeviceGate> {
  const p = pathsFor(opts);
  mkdirSync(p.mountpoint, { recursive: true, mode: 0o700 });
  mkdirSync(opts.devdir, { recursive: true, mode: 0o755 });
  rmSync(p.pidfile, { force: true });
  const nbdfuse: Subprocess = Bun.spawn(["nbdfuse", "-P", p.pidfile, p.mountpoint, opts.uri], {
    stdin: "ignore", stdout: "ignore", stderr: "pipe",
  });
  let loop: string | null = null;
  const destroy = async () => {
    removeLink(p.link);
    if (loop) await run(["losetup", "-d", loop]);
    await detachLoops(p.file);
    if (isMountpoint(p.mountpoint)) await run(["fusermount3", "-u", "-z", p.mountpoint]);
    const exited = await Promise.race([nbdfuse.exited.then(() => true), Bun.sleep(NBDFUSE_EXIT_TIMEOUT_MS).then(() => false)]);
    if (!exited) nbdfuse.kill("SIGKILL");
    rmSync(p.pidfile, { force: true });
    removeDir(p.mountpoint);
  };
  try {
    await waitReady(nbdfuse, p.pidfile);
    // Read only for a start-up failure's message; left unread, a full pipe would stall nbdfuse.
    void (nbdfuse.stderr as ReadableStream).pipeTo(new WritableStream()).catch(() => undefined);
    loop = (await runChecked(["losetup", "-f", "--show", "--sector-size", String(opts.sector_bytes), p.file])).trim();
    removeLink(p.link);
    symlinkSync(loop, p.link);
  } catch (err) {
    await destroy();
    throw err;
  }
  return { path: p.link, mechanism: `nbdfuse+loop (${loop})`, destroy };
}

async function waitReady(nbdfuse: Subprocess, pidfile: string): Promise<void> {
  const deadline = Date.now() + NBDFUSE_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (nbdfuse.exitCode !== null || nbdfuse.signalCode) {
      const err = await new Response(nbdfuse.stderr as ReadableStream).text();
      throw new Error(`nbdfuse exited during start-up: ${err.trim().split("\n")[0] ?? ""}`);
    }
    if (existsSync(pidfile) && readFileSync(pidfile, "utf8").trim()) return;
    await Bun.sleep(POLL_MS);
  }
  nbdfuse.kill("SIGKILL");
  throw new Error(`nbdfuse did not become ready within ${NBDFUSE_READY_TIMEOUT_MS / 1000} s`);
}
