// Which configuration changes a SIGHUP applies how (spec 3.8, item 6).
import type { ResourceConfig, Role } from "../config/index.ts";

const RESTART_ALWAYS: (keyof ResourceConfig)[] = ["provname", "localpath", "nbd", "device"];
const RELOADABLE: (keyof ResourceConfig)[] = [
  "remote_text", "source", "replication", "checksum", "compression", "timeout_s", "exec", "metaflush", "secret", "verify_rate", "sync_rate", "resync_digest",
];

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export function resourceChanged(a: ResourceConfig, b: ResourceConfig): boolean {
  return [...RESTART_ALWAYS, ...RELOADABLE].some((k) => !same(a[k], b[k]));
}

/** A primary takes the reloadable fields in place; anything else, or any other role, restarts. */
export function resourceNeedsRestart(a: ResourceConfig, b: ResourceConfig, role: Role): boolean {
  if (RESTART_ALWAYS.some((k) => !same(a[k], b[k]))) return true;
  return role !== "primary";
}
