// Which `on <node>` blocks are "this node" (spec 1.5), plus the HASTD_NODE / --node override
// that lets two daemons share one host.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";

export interface NodeIdentity {
  /** Full hostname (gethostname). */
  hostname: string;
  /** /etc/machine-id on Linux, kern.hostuuid (/etc/hostid) on FreeBSD; matched case-insensitively. */
  machine_id: string | null;
  /** "hostid<decimal kern.hostid>" on FreeBSD; null elsewhere. */
  hostid: string | null;
  /** HASTD_NODE or an explicit --node: when set, ONLY this name matches. */
  override: string | null;
}

const MACHINE_ID_FILES_LINUX = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
const HOSTUUID_FILE_FREEBSD = "/etc/hostid";
const ID_FILE_MAX_BYTES = 4096;

export function localIdentity(override?: string): NodeIdentity {
  const explicit = override ?? process.env.HASTD_NODE ?? "";
  const machine_id = readMachineId();
  return {
    hostname: hostname(),
    machine_id,
    hostid: process.platform === "freebsd" && machine_id !== null ? freebsdHostid(machine_id) : null,
    override: explicit === "" ? null : explicit,
  };
}

export function nodeMatches(name: string, identity: NodeIdentity): boolean {
  if (identity.override !== null) return name === identity.override;
  const { hostname: full, machine_id, hostid } = identity;
  if (name === full) return true;
  if (full.includes(".") && name === shortName(full)) return true;
  if (machine_id !== null && name.toLowerCase() === machine_id.toLowerCase()) return true;
  return hostid !== null && name === hostid;
}

/** The names that would match, in FreeBSD's order (short, full, uuid, hostid), for error messages. */
export function acceptableNames(identity: NodeIdentity): string[] {
  if (identity.override !== null) return [identity.override];
  const names: string[] = [];
  if (identity.hostname.includes(".")) names.push(shortName(identity.hostname));
  names.push(identity.hostname);
  if (identity.machine_id !== null) names.push(identity.machine_id);
  if (identity.hostid !== null) names.push(identity.hostid);
  return names;
}

function shortName(full: string): string {
  return full.slice(0, full.indexOf("."));
}

function readMachineId(): string | null {
  const files = process.platform === "freebsd" ? [HOSTUUID_FILE_FREEBSD] : MACHINE_ID_FILES_LINUX;
  for (const file of files) {
    try {
      const id = readFileSync(file, "utf8").slice(0, ID_FILE_MAX_BYTES).trim();
      if (id !== "") return id;
    } catch {
      // Absent or unreadable: this identity source is simply not available.
    }
  }
  return null;
}

// FreeBSD's rc.d/hostid sets kern.hostid to the first four bytes of md5(hostuuid).
function freebsdHostid(uuid: string): string {
  const digest = createHash("md5").update(uuid).digest();
  return `hostid${digest.readUInt32BE(0)}`;
}
