// /dev/hast/<provname> through the Linux kernel nbd client (platform.md 3): a socketpair, one
// end attached to /dev/nbdN (netlink NBD_CMD_CONNECT, ioctl fallback, both in native/ggate.c),
// the other served here in NBD transmission phase from the resource's backend, and
// /dev/hast/<provname> a symlink to /dev/nbdN. Torn down forcibly, as HAST does: a disconnect
// fails whatever I/O the filesystem above still has queued.
//
// Not run on the build machine (its kernel has no nbd module): only the socket serving and the
// "no kernel nbd" failure are tested there.
import { lstatSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { native } from "../native.ts";
import type { DeviceGate, DeviceOptions } from "./device.ts";
import { adoptTransmission, type AdoptedConnection } from "./nbd-adopt.ts";

/**
 * NBD_ATTR_TIMEOUT: none. With a timeout and one connection, a request slower than it (a peer
 * stalled within its own `timeout`, a disk retrying a bad sector, a large WRITE_ZEROES replicated
 * chunk by chunk) makes the kernel shut the socket down and fail every later request: the device
 * is dead for good. Without one the kernel waits, warning about a possibly stuck request every
 * 30 s, as GEOM Gate does with its timeout 0 (ggate.ts): replication has timeouts of its own.
 */
export const KERNEL_NBD_TIMEOUT_S = 0;
/** Block sizes the kernel accepts: 512 up to the page size (4096 on the targets we run on). */
const KERNEL_BLOCK_BYTES_MIN = 512;
const KERNEL_BLOCK_BYTES_MAX = 4096;

/** NBD_ATTR_BACKEND_IDENTIFIER, shown in /sys/block/nbdN/backend: how a restart knows a device is ours. */
export function kernelNbdIdentifier(provname: string): string {
  return `hast:${provname}`;
}

/** N when path names a kernel nbd device (/dev/nbdN), else null. */
export function nbdIndexOf(path: string): number | null {
  const match = /^\/dev\/nbd(\d+)$/.exec(path);
  return match === null ? null : Number(match[1]);
}

function removeLink(link: string): void {
  try {
    if (lstatSync(link).isSymbolicLink()) unlinkSync(link);
  } catch {
    // absent
  }
}

function closeQuietly(fd: number, what: string): void {
  try {
    native.close(fd, what);
  } catch {
    // already closed by its new owner
  }
}

export async function createKernelNbd(opts: DeviceOptions): Promise<DeviceGate> {
  const link = join(opts.devdir, opts.provname);
  const block_bytes = Math.max(opts.sector_bytes, opts.backend.block_bytes);
  if (block_bytes < KERNEL_BLOCK_BYTES_MIN || block_bytes > KERNEL_BLOCK_BYTES_MAX) {
    throw new Error(`kernel nbd for ${opts.provname}: block size ${block_bytes} is outside ${KERNEL_BLOCK_BYTES_MIN}..${KERNEL_BLOCK_BYTES_MAX}`);
  }
  const [kernel_fd, server_fd] = native.socketpair();
  let served: AdoptedConnection;
  try {
    served = await adoptTransmission(server_fd, {
      export_name: opts.provname, description: `kernel nbd for ${opts.provname}`, backend: opts.backend,
      log: (level, msg) => { if (level !== "debug") opts.log(msg); },
    });
  } catch (err) {
    closeQuietly(kernel_fd, "kernel nbd socket");
    closeQuietly(server_fd, "kernel nbd server socket");
    throw err;
  }
  let index: number;
  let via: string;
  try {
    ({ index, via } = native.nbdAttach(kernel_fd, opts.size_bytes, block_bytes, served.transmission_flags,
      KERNEL_NBD_TIMEOUT_S, kernelNbdIdentifier(opts.provname)));
  } catch (err) {
    await served.stop();
    throw err;
  } finally {
    native.close(kernel_fd, "kernel nbd socket"); // the kernel holds its own reference now
  }
  const device = `/dev/nbd${index}`;
  let destroying = false;
  void served.closed.then(() => {
    if (!destroying) opts.log(`Kernel nbd ${device} for ${opts.provname} closed its socket; I/O on ${link} fails until the resource is restarted.`);
  });
  const destroy = async () => {
    destroying = true;
    removeLink(link);
    try {
      native.nbdDetach(index);
    } catch (err) {
      opts.log(`Detaching ${device} for ${opts.provname} failed: ${(err as Error).message}`);
    }
    await served.stop();
  };
  try {
    mkdirSync(opts.devdir, { recursive: true, mode: 0o755 });
    removeLink(link);
    symlinkSync(device, link);
  } catch (err) {
    await destroy();
    throw err;
  }
  return { path: link, mechanism: `kernel nbd (${device}, ${via})`, destroy };
}

/** The backend identifier the kernel shows for /dev/nbdN, or null (not connected, or a kernel without the file). */
function backendOf(index: number): string | null {
  try {
    return readFileSync(`/sys/block/nbd${index}/backend`, "utf8").trim();
  } catch {
    return null;
  }
}

/**
 * Removes /dev/hast/<provname> when it points at a /dev/nbdN, detaching that device only when
 * the kernel names it ours (a crashed worker leaves it attached to a dead socket). Returns what
 * it found, for the log.
 */
export function cleanupKernelNbd(opts: Pick<DeviceOptions, "provname" | "devdir" | "log">): string[] {
  const link = join(opts.devdir, opts.provname);
  let target: string;
  try {
    if (!lstatSync(link).isSymbolicLink()) return [];
    target = readlinkSync(link);
  } catch {
    return [];
  }
  const index = nbdIndexOf(target);
  if (index === null) return [];
  const found = [`${link} -> ${target}`];
  removeLink(link);
  const backend = backendOf(index);
  if (backend !== kernelNbdIdentifier(opts.provname)) {
    if (backend !== null && backend !== "") opts.log(`Left ${target} attached: it now serves "${backend}", not ${opts.provname}.`);
    return found;
  }
  try {
    native.nbdDetach(index);
    found.push(`kernel nbd ${target}`);
  } catch (err) {
    opts.log(`Detaching stale ${target} for ${opts.provname} failed: ${(err as Error).message}`);
  }
  return found;
}
