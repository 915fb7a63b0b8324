// /dev/hast/<provname> through nbdfuse + loop (Linux without kernel nbd), as root. HASTD_DEVDIR
// points the link at <tmp>/dev-<node> so the real /dev/hast is never touched; the FUSE mount and
// nbdfuse pidfile live next to the NBD socket in the temp dir.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync } from "node:fs";
import {
  Harness, MiB, loopsUnder, mountsUnder, processAlive, run, runOk, sha256File, singleResource, skipReason, waitFor,
  type Daemon, type NodeInfo,
} from "./harness.ts";

const DISK_BYTES = 64 * MiB + 12288;

const skip = skipReason("/dev/hast via nbdfuse+loop", {
  root: true, fuse: true, tools: ["nbdfuse", "losetup", "fusermount3", "mkfs.ext4", "mount", "umount", "dd"],
});

let h: Harness;
let a: NodeInfo;

beforeEach(async () => {
  h = await Harness.create("dev");
  a = h.addNode("nodea");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

interface Primary {
  conf: string;
  daemon: Daemon;
  link: string;
  loop: string;
  fuse: string;
}

async function primaryWithDevice(): Promise<Primary> {
  const disk = h.sparseFile("disk0", DISK_BYTES);
  const conf = h.writeConfig(singleResource(a, { local: disk, device: true }));
  await h.hastctlOk(a, conf, ["create", "r0"]);
  const daemon = await h.startDaemon(a, conf);
  await h.hastctlOk(a, conf, ["role", "primary", "r0"]);
  const link = `${a.devdir}/r0`;
  expect(lstatSync(link).isSymbolicLink()).toBe(true);
  const loop = readlinkSync(link);
  expect(loop).toMatch(/^\/dev\/loop\d+$/);
  expect(await loopsUnder(h.dir)).toEqual([[loop, h.path("r0.fuse", "nbd")]]);
  expect(mountsUnder(h.dir)).toEqual([h.path("r0.fuse")]);
  return { conf, daemon, link, loop, fuse: h.path("r0.fuse") };
}

/** Nothing of the device is left: no link, no loop device on our files, no mount, no nbdfuse. */
async function expectDeviceGone(p: Primary): Promise<void> {
  expect(existsSync(p.link)).toBe(false);
  expect(await loopsUnder(h.dir)).toEqual([]);
  const losetup = await runOk(["losetup", "-a"]);
  expect(losetup).not.toContain(h.dir);
  expect(readFileSync("/proc/mounts", "utf8")).not.toContain(h.dir);
  expect(existsSync(h.path("r0.nbdfuse.pid"))).toBe(false);
}

function nbdfusePid(): number {
  return Number(readFileSync(h.path("r0.nbdfuse.pid"), "utf8").trim());
}

describe("/dev/hast/<provname> (nbdfuse + loop)", () => {
  test.skipIf(skip !== null)("appears on role primary, carries ext4 across remounts, and goes away on role init", async () => {
    const p = await primaryWithDevice();
    const [listed] = await h.listJson(a, p.conf, ["r0"]);
    expect(listed!.device).toEqual({ path: p.link, mechanism: `nbdfuse+loop (${p.loop})` });
    expect(await runOk(["blockdev", "--getsize64", p.link])).toBe(`${64 * MiB}\n`);

    await runOk(["mkfs.ext4", "-q", "-F", p.link], { timeout_ms: 60_000 });
    const mnt = h.path("mnt");
    mkdirSync(mnt);
    await runOk(["mount", p.link, mnt]);
    const src = h.path("payload.bin");
    await Bun.write(src, randomBytes(5 * MiB + 123));
    await runOk(["dd", `if=${src}`, `of=${mnt}/payload.bin`, "bs=1M", "conv=fsync", "status=none"]);
    await runOk(["umount", mnt]);
    await runOk(["mount", p.link, mnt]);
    expect(await sha256File(`${mnt}/payload.bin`)).toBe(await sha256File(src));
    await runOk(["umount", mnt]);
    const [after] = await h.listJson(a, p.conf, ["r0"]);
    expect(after!.statistics.writes).toBeGreaterThan(0);
    expect(after!.statistics.flushes).toBeGreaterThan(0);

    const fusePid = nbdfusePid();
    await h.hastctlOk(a, p.conf, ["role", "init", "r0"]);
    await expectDeviceGone(p);
    expect(processAlive(fusePid)).toBe(false);

    // The data is on the component: primary again, and the file system is still there.
    await h.hastctlOk(a, p.conf, ["role", "primary", "r0"]);
    await runOk(["mount", p.link, mnt]);
    expect(await sha256File(`${mnt}/payload.bin`)).toBe(await sha256File(src));
    await runOk(["umount", mnt]);
  });

  // With I/O between the kill and the restart, nbdfuse dies on it and leaves a dead FUSE mount
  // (stat fails with ENOTCONN), which the successor once took for no mount at all: it kept the loop
  // device and mount and failed at mkdir, and the resource could not be promoted again (review).
  test.skipIf(skip !== null).each([false, true])("a SIGKILLed worker's device is cleaned up by its successor, which makes a working one (I/O after the kill: %p)", async (io_after_kill) => {
    const p = await primaryWithDevice();
    const pattern = h.path("pattern.bin");
    await Bun.write(pattern, randomBytes(MiB));
    await runOk(["dd", `if=${pattern}`, `of=${p.link}`, "bs=1M", "seek=3", "oflag=direct", "conv=fsync", "status=none"]);
    const [before] = await h.listJson(a, p.conf, ["r0"]);
    const oldFuse = nbdfusePid();

    process.kill(before!.workerpid, "SIGKILL");
    if (io_after_kill) {
      // A file system still writing: fails, as the device's server is gone (the restart waits 1 s).
      await Bun.sleep(100);
      const w = await run(["dd", "if=/dev/zero", `of=${p.loop}`, "bs=4096", "count=1", "oflag=direct", "status=none"], { timeout_ms: 10_000 });
      expect(w.code).not.toBe(0);
    }
    await p.daemon.waitLog(/Removed what a previous worker left behind: .*r0/, 15_000);
    await p.daemon.waitLog(/Device .*r0 created/, 15_000);
    const [now] = await waitFor("the new worker to serve", async () => {
      const [r] = await h.listJson(a, p.conf, ["r0"]);
      return r!.workerpid && r!.workerpid !== before!.workerpid && r!.device ? [r!] : null;
    }, 15_000);
    expect(now.role).toBe("primary");
    expect(processAlive(oldFuse)).toBe(false);
    // Exactly one of each again, and the link points at the live loop device.
    const loops = await loopsUnder(h.dir);
    expect(loops).toHaveLength(1);
    expect(readlinkSync(p.link)).toBe(loops[0]![0]);
    expect(mountsUnder(h.dir)).toEqual([p.fuse]);
    const readBack = h.path("readback.bin");
    await runOk(["dd", `if=${p.link}`, `of=${readBack}`, "bs=1M", "skip=3", "count=1", "iflag=direct", "status=none"]);
    expect(await sha256File(readBack)).toBe(await sha256File(pattern));
  });

  // Left to the next primary worker, it stayed through the secondary period, taking I/O nobody
  // served, and was in that worker's way (review of the gates).
  test.skipIf(skip !== null)("a killed worker's device goes when the role leaves primary before its restart", async () => {
    const p = await primaryWithDevice();
    const [before] = await h.listJson(a, p.conf, ["r0"]);
    const fusePid = nbdfusePid();
    process.kill(before!.workerpid, "SIGKILL");
    await p.daemon.waitLog(/killed by signal SIGKILL; restarting in/, 10_000);
    await h.hastctlOk(a, p.conf, ["role", "secondary", "r0"]);
    await p.daemon.waitLog(/Removed what a previous worker left behind: .*r0/, 10_000);
    await expectDeviceGone(p);
    expect(() => lstatSync(p.link)).toThrow();
    await waitFor("nbdfuse to be gone", async () => !processAlive(fusePid), 10_000);
    const [after] = await h.listJson(a, p.conf, ["r0"]);
    expect(after!.role).toBe("secondary");
  });

  test.skipIf(skip !== null)("SIGTERM of hastd leaves no loop device, FUSE mount or process behind", async () => {
    const p = await primaryWithDevice();
    const [listed] = await h.listJson(a, p.conf, ["r0"]);
    const fusePid = nbdfusePid();
    p.daemon.signal("SIGTERM");
    expect(await p.daemon.exited()).toBe(0);
    await expectDeviceGone(p);
    for (const pid of [listed!.workerpid, fusePid]) expect(processAlive(pid)).toBe(false);
    expect(existsSync(a.control)).toBe(false);
    expect(existsSync(h.path("r0.nbd"))).toBe(false);
    const r = await run(["losetup", p.loop]);
    expect(r.stdout).not.toContain(h.dir);
  });
});
