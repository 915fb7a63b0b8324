// Text output of hastctl list / status, in FreeBSD hastctl's layout (spec 2.3) plus our
// additions (frontend, synchronization progress, split-brain) appended where old parsers ignore them.
import { humanizeBytes } from "../core/humanize.ts";
import type { LastSync, LastVerify, ResourceStatus, SyncProgress, VerifyCompare, VerifyFindings, VerifyProgress } from "../wire/control.ts";

const sized = (n: number) => `${n} (${humanizeBytes(n)})`;

export function formatSyncProgress(sync: SyncProgress): string {
  const pct = sync.total > 0 ? Math.floor((sync.done * 100) / sync.total) : 100;
  const eta = sync.eta === null ? "?" : `${Math.ceil(sync.eta)}s`;
  return `${humanizeBytes(sync.done)}/${humanizeBytes(sync.total)} (${pct}%), ${humanizeBytes(sync.rate)}/s, ETA ${eta}`;
}

export function formatLastSync(last: LastSync): string {
  const rate = last.seconds > 0 ? `, ${humanizeBytes(Math.round(last.bytes / last.seconds))}/s` : "";
  return `${humanizeBytes(last.bytes)} in ${last.seconds.toFixed(1)}s${rate}, finished ${last.finished}`;
}

/** What a verification found so far: differences (copied to the secondary), and what it could not compare. */
function verifyFindings(v: VerifyFindings): string {
  const parts = [`${v.differ_chunks} chunks (${humanizeBytes(v.differ_bytes)}) differed`];
  if (v.skipped_bytes > 0) parts.push(`${humanizeBytes(v.skipped_bytes)} skipped (still to be synchronized)`);
  if (v.failed_bytes > 0) parts.push(`${humanizeBytes(v.failed_bytes)} not compared (read errors)`);
  return parts.join(", ");
}

/** How the copies are compared: the peer sends digests (protocol version 4) or its data. */
function compareHow(c: VerifyCompare): string {
  return c === "sha256" ? "by SHA-256" : "by the peer's data";
}

export function formatVerifyProgress(v: VerifyProgress): string {
  const from = v.from_offset > 0 ? `, from offset ${humanizeBytes(v.from_offset)}` : "";
  return `${formatSyncProgress(v)}${from}, ${compareHow(v.compare)}; ${verifyFindings(v)}`;
}

export function formatLastVerify(last: LastVerify): string {
  const how = last.ended === "complete" ? "complete" : last.ended === "stopped" ? "stopped by the operator" : "interrupted by the link's loss";
  const from = last.from_offset > 0 ? ` from offset ${humanizeBytes(last.from_offset)}` : "";
  const resume = last.ended === "complete" ? "" : `; hastctl verify --resume goes on from offset ${humanizeBytes(last.resume_offset)}`;
  return `${how}, ${humanizeBytes(last.same_bytes + last.differ_bytes)} compared${from} ${compareHow(last.compare)} in ${last.seconds.toFixed(1)}s; ${verifyFindings(last)}; finished ${last.finished}${resume}`;
}

export function formatList(resources: ResourceStatus[]): string {
  const out: string[] = [];
  for (const r of resources) {
    out.push(`${r.name}:`);
    if (r.error) {
      // Spec 2.3: the number ends the line (FreeBSD parsers read it there); the reason follows.
      out.push(`  error: ${r.error}`);
      if (r.message) out.push(`  message: ${r.message}`);
      continue;
    }
    out.push(`  role: ${r.role ?? "unknown"}`);
    out.push(`  provname: ${r.provname}`);
    out.push(`  localpath: ${r.localpath}`);
    out.push(`  extentsize: ${sized(r.extentsize ?? 0)}`);
    out.push(`  keepdirty: ${r.keepdirty ?? 0}`);
    out.push(`  remoteaddr: ${r.remoteaddr}`);
    if (r.sourceaddr) out.push(`  sourceaddr: ${r.sourceaddr}`);
    out.push(`  replication: ${r.replication}`);
    if (r.sync_rate !== undefined) out.push(`  sync_rate: ${humanizeBytes(r.sync_rate)}/s`);
    if (r.verify_rate !== undefined) out.push(`  verify_rate: ${humanizeBytes(r.verify_rate)}/s`);
    if (r.status) out.push(`  status: ${r.status}${r.split_brain ? " (split-brain)" : ""}`);
    if (r.copy_incomplete) out.push("  copy: incomplete (the primary has yet to copy to it what it lacks: not promotable)");
    if (r.stale_extents) out.push(`  stale: ${r.stale_extents} extents (a write or flush failed here that the secondary took; copied back from it)`);
    if (r.workerpid) out.push(`  workerpid: ${r.workerpid}`);
    out.push(`  dirty: ${sized(r.dirty ?? 0)}`);
    if (r.sync) out.push(`  synchronization: ${formatSyncProgress(r.sync)}`);
    if (r.last_sync) out.push(`  last synchronization: ${formatLastSync(r.last_sync)}`);
    if (r.verify) out.push(`  verification: ${formatVerifyProgress(r.verify)}`);
    if (r.last_verify) out.push(`  last verification: ${formatLastVerify(r.last_verify)}`);
    if (r.nbd && r.workerpid) out.push(`  nbd: ${r.nbd}`);
    if (r.device) out.push(`  device: ${r.device.path} (${r.device.mechanism})`);
    const s = r.statistics;
    if (s) {
      out.push("  statistics:");
      out.push(`    reads: ${s.reads}`);
      out.push(`    writes: ${s.writes}`);
      out.push(`    deletes: ${s.deletes}`);
      out.push(`    flushes: ${s.flushes}`);
      out.push(`    activemap updates: ${s.activemap_updates}`);
      out.push(`    direct transfers: ${sized(s.direct_bytes)}`);
      out.push(`    synchronized unchanged: ${sized(s.sync_unchanged_bytes)}`);
      const e = s.local_errors;
      out.push(`    local errors: read: ${e.read}, write: ${e.write}, delete: ${e.delete}, flush: ${e.flush}`);
    }
  }
  return out.length ? `${out.join("\n")}\n` : "";
}

export function formatStatus(resources: ResourceStatus[]): string {
  const out = ["Name\tStatus\t Role\t\tComponents"];
  for (const r of resources) {
    if (r.error) {
      out.push(`${r.name}\tERR${r.error}`);
      continue;
    }
    const status = r.split_brain ? "split-brain" : (r.status ?? "-");
    // FreeBSD's widths; a longer value (split-brain) still gets a space before the next column.
    const role = r.role ?? "unknown";
    let line = `${r.name}\t${status.padEnd(Math.max(9, status.length + 1))}${role.padEnd(Math.max(15, role.length + 1))}${r.localpath}\t${r.remoteaddr}`;
    if (r.sync) line += `\t${formatSyncProgress(r.sync)}`;
    if (r.copy_incomplete) line += "\tcopy incomplete";
    if (r.stale_extents) line += `\t${r.stale_extents} extents stale`;
    if (r.verify) line += `\tverifying ${formatSyncProgress(r.verify)}`;
    out.push(line);
  }
  return `${out.join("\n")}\n`;
}
