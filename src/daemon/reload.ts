// Which configuration changes a SIGHUP applies how (spec 3.8, item 6).
import type { ResourceConfig, Role } from "../config/index.ts";

const RESTART_ALWAYS: (keyof ResourceConfig)[] = ["provname", "localpath", "nbd", "device"];
/** Spec 3.8: a primary takes these in place; a worker of any other role is restarted. */
const RELOADABLE: (keyof ResourceConfig)[] = ["remote_text", "source", "replication", "checksum", "compression", "timeout_s", "exec", "metaflush"];
/** Ours: read by a primary worker only (the secret also by the listener, at a primary's next
 * connection), so any role takes them in place; a secondary keeps its link and a pass running. */
const IN_PLACE: (keyof ResourceConfig)[] = ["secret", "verify_rate", "sync_rate", "resync_digest"];

const differ = (a: ResourceConfig, b: ResourceConfig) => (k: keyof ResourceConfig) => JSON.stringify(a[k]) !== JSON.stringify(b[k]);

export function resourceChanged(a: ResourceConfig, b: ResourceConfig): boolean {
  return [...RESTART_ALWAYS, ...RELOADABLE, ...IN_PLACE].some(differ(a, b));
}

/** A primary takes the reloadable fields in place, any role the primary-only ones; anything else restarts. */
export function resourceNeedsRestart(a: ResourceConfig, b: ResourceConfig, role: Role): boolean {
  if (RESTART_ALWAYS.some(differ(a, b))) return true;
  return role !== "primary" && RELOADABLE.some(differ(a, b));
}
