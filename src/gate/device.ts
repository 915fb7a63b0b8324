// /dev/hast/<provname>: which kernel frontend serves the device on this system.
// FreeBSD: GEOM Gate. Linux: the kernel nbd client when the module is there, else nbdfuse + loop.
// The NBD endpoint itself is always served (src/gate/nbd-server.ts); this only adds the device.
import { existsSync } from "node:fs";
import type { BlockBackend } from "./block-backend.ts";
import { createGgateDevice } from "./ggate.ts";
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
  /** What GEOM Gate serves directly (it hands requests to the daemon, not to an NBD client). */
  backend: BlockBackend;
}

export interface DeviceGate {
  readonly path: string;
  readonly mechanism: string;
  destroy(): Promise<void>;
}

export function devdir(): string {
  return process.env.HASTD_DEVDIR || DEFAULT_DEVDIR;
}

function kernelNbdPresent(): boolean {
  return existsSync("/sys/module/nbd") || existsSync("/dev/nbd0");
}

export async function cleanupStaleDevice(opts: Pick<DeviceOptions, "provname" | "rundir" | "devdir" | "log">): Promise<void> {
  if (process.platform !== "linux") return;
  const found = await cleanupNbdfuseLoop(opts);
  if (found.length) opts.log(`Removed what a previous worker left behind: ${found.join(", ")}.`);
}

export async function createDevice(opts: DeviceOptions): Promise<DeviceGate> {
  if (process.platform === "freebsd") return await createGgateDevice(opts);
  if (process.platform !== "linux") throw new Error(`no /dev/hast frontend for ${process.platform}`);
  if (kernelNbdPresent()) opts.log("Kernel nbd is present, but attaching to it is not implemented yet; using nbdfuse + loop.");
  const missing = nbdfuseMissing();
  if (missing) throw new Error(`cannot create ${opts.devdir}/${opts.provname}: ${missing} (set 'device off' to serve NBD only)`);
  return await createNbdfuseLoop(opts);
}
