// /dev/hast/<provname>: which kernel frontend serves the device on this system.
// FreeBSD: GEOM Gate. Linux: the kernel nbd client when the module is there, else (or when the
// attach fails) nbdfuse + loop.
// The NBD endpoint itself is always served (src/gate/nbd-server.ts); this only adds the device.
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import type { ResourceConfig } from "../config/index.ts";
import type { BlockBackend } from "./block-backend.ts";
import { createGgateDevice } from "./ggate.ts";
import { cleanupKernelNbd, createKernelNbd } from "./kernel-nbd.ts";
import { cleanupNbdfuseLoop, createNbdfuseLoop, nbdfuseMissing } from "./nbdfuse-loop.ts";

export const DEFAULT_DEVDIR = "/dev/hast";

export interface DeviceOptions {
  provname: string;
  /** NBD URI of this resource's endpoint, for user-space clients such as nbdfuse. */
  uri: string;
  size_bytes: number;
  sector_bytes: number;
  /** Directory for runtime state (FUSE mount point, helper pidfiles). */
  rundir: string;
  /** Where device nodes or links appear; /dev/hast unless HASTD_DEVDIR is set (tests). */
  devdir: string;
  log: (msg: string) => void;
  /** What GEOM Gate and kernel nbd serve directly (they hand requests to the daemon, not to an NBD client). */
  backend: BlockBackend;
  /** GEOM Gate: a device left by a predecessor of the same primary period is taken over with the
   * requests queued on it (hastd's CANCEL); otherwise those requests are an earlier period's, from
   * before the peer may have written, and the device is destroyed and made anew. */
  takeover?: boolean;
  /** Try the kernel nbd client first; default: when the nbd module is loaded (tests force it). */
  kernel_nbd?: boolean;
}

export interface DeviceGate {
  readonly path: string;
  readonly mechanism: string;
  destroy(): Promise<void>;
}

export function devdir(): string {
  return process.env.HASTD_DEVDIR || DEFAULT_DEVDIR;
}

/** Runtime state (FUSE mount point, nbdfuse pidfile) lives beside a unix-socket NBD endpoint. */
const DEFAULT_RUNDIR = "/var/run/hast";

/** Where a resource's device and its helpers' state live. */
export function deviceWhere(resource: Pick<ResourceConfig, "provname" | "nbd">, log: (msg: string) => void): Pick<DeviceOptions, "provname" | "rundir" | "devdir" | "log"> {
  const rundir = resource.nbd.kind === "uds" ? dirname(resource.nbd.path) : DEFAULT_RUNDIR;
  return { provname: resource.provname, rundir, devdir: devdir(), log };
}

export function kernelNbdPresent(): boolean {
  return existsSync("/sys/module/nbd") || existsSync("/dev/nbd0");
}

export async function cleanupStaleDevice(opts: Pick<DeviceOptions, "provname" | "rundir" | "devdir" | "log">): Promise<void> {
  if (process.platform !== "linux") return;
  const found = [...cleanupKernelNbd(opts), ...await cleanupNbdfuseLoop(opts)];
  if (found.length) opts.log(`Removed what a previous worker left behind: ${found.join(", ")}.`);
}

export async function createDevice(opts: DeviceOptions): Promise<DeviceGate> {
  if (process.platform === "freebsd") return await createGgateDevice(opts);
  if (process.platform !== "linux") throw new Error(`no /dev/hast frontend for ${process.platform}`);
  if (opts.kernel_nbd ?? kernelNbdPresent()) {
    try {
      return await createKernelNbd(opts);
    } catch (err) {
      opts.log(`Kernel nbd for ${opts.provname} unavailable: ${(err as Error).message}; using nbdfuse + loop.`);
    }
  }
  const missing = nbdfuseMissing();
  if (missing) throw new Error(`cannot create ${opts.devdir}/${opts.provname}: ${missing} (set 'device off' to serve NBD only)`);
  return await createNbdfuseLoop(opts);
}
