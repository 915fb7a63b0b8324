// hastctl metrics: the STATUS reply in Prometheus's text exposition format (version 0.0.4), for
// node_exporter's textfile collector or any scraper that runs a command. Counters are the
// worker's, since it started (a restarted worker starts them again, which Prometheus's rate()
// takes as a counter reset).
import type { ResourceStatus } from "../wire/control.ts";

type Labels = Record<string, string>;
interface Sample {
  labels: Labels;
  value: number;
}
interface Family {
  name: string;
  type: "gauge" | "counter";
  help: string;
  samples: Sample[];
}

const ROLES = ["init", "primary", "secondary"] as const;
const LOCAL_ERROR_OPS = ["read", "write", "delete", "flush"] as const;

/** Label values escape backslash, double quote and newline (the format's only escapes). */
function labelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function sampleLine(name: string, s: Sample): string {
  const labels = Object.entries(s.labels).map(([k, v]) => `${k}="${labelValue(v)}"`).join(",");
  const value = Number.isFinite(s.value) ? String(s.value) : s.value > 0 ? "+Inf" : s.value < 0 ? "-Inf" : "NaN";
  return `${name}{${labels}} ${value}`;
}

/** The metric families, in a fixed order, each with the samples of every resource that has one. */
function families(resources: ResourceStatus[]): Family[] {
  const fams = new Map<string, Family>();
  const add = (name: string, type: Family["type"], help: string, labels: Labels, value: number | undefined) => {
    let f = fams.get(name);
    if (!f) fams.set(name, (f = { name, type, help, samples: [] }));
    if (value !== undefined) f.samples.push({ labels, value });
  };
  for (const r of resources) {
    const res = { resource: r.name };
    add("hast_up", "gauge", "1 when hastd reported the resource's status, 0 when it reported an error for it.", res, r.error ? 0 : 1);
    if (r.error) continue;
    for (const role of ROLES) add("hast_role", "gauge", "1 for the resource's current role.", { ...res, role }, r.role === role ? 1 : 0);
    add("hast_info", "gauge", "Configuration of the resource, as labels; always 1.", {
      ...res, provname: r.provname ?? "", localpath: r.localpath ?? "", remoteaddr: r.remoteaddr ?? "", replication: r.replication ?? "",
    }, 1);
    add("hast_sync_rate_limit_bytes_per_second", "gauge", "sync_rate: the most a synchronization copies to the secondary per second (absent: no limit).", res, r.sync_rate);
    add("hast_verify_rate_limit_bytes_per_second", "gauge", "verify_rate: the most an online verification reads per second (absent: no limit).", res, r.verify_rate);
    add("hast_worker_running", "gauge", "1 when the resource has a worker process (its role is not init).", res, r.workerpid ? 1 : 0);
    add("hast_connected", "gauge", "1 when the worker is connected to its peer (status complete), 0 when degraded.", res,
      r.status === undefined ? undefined : r.status === "complete" ? 1 : 0);
    add("hast_split_brain", "gauge", "1 when the last connection attempt was refused as split-brain.", res, r.split_brain ? 1 : 0);
    add("hast_copy_incomplete", "gauge", "1 when this secondary's copy lacks changes the primary has yet to copy (not promotable), as its worker last said.", res,
      r.copy_incomplete === undefined ? undefined : r.copy_incomplete ? 1 : 0);
    add("hast_stale_extents", "gauge", "On a primary: extents of its copy a failed write or flush left stale, still to be copied back from the secondary.", res,
      r.role === "primary" && r.workerpid ? r.stale_extents ?? 0 : undefined);
    add("hast_dirty_bytes", "gauge", "Bytes in dirty extents (0 = in sync with the peer).", res, r.dirty);
    add("hast_extent_bytes", "gauge", "Bytes per activemap extent.", res, r.workerpid ? r.extentsize : undefined);
    const s = r.statistics;
    if (s) {
      add("hast_reads_total", "counter", "Read requests.", res, s.reads);
      add("hast_writes_total", "counter", "Write requests.", res, s.writes);
      add("hast_deletes_total", "counter", "Delete (TRIM) requests.", res, s.deletes);
      add("hast_flushes_total", "counter", "Flush requests.", res, s.flushes);
      add("hast_activemap_updates_total", "counter", "Activemap writes to the local component.", res, s.activemap_updates);
      add("hast_direct_bytes_total", "counter", "Bytes moved between the local disk and the peer socket by the kernel.", res, s.direct_bytes);
      add("hast_sync_unchanged_bytes_total", "counter", "Bytes a synchronization did not send because the peer's digest matched (resync_digest).", res, s.sync_unchanged_bytes);
      for (const op of LOCAL_ERROR_OPS) {
        add("hast_local_errors_total", "counter", "Failed operations on the local component.", { ...res, op }, s.local_errors[op]);
      }
    }
    const sync = r.sync;
    add("hast_sync_running", "gauge", "1 while a synchronization pass runs.", res, r.workerpid ? (sync ? 1 : 0) : undefined);
    if (sync) {
      add("hast_sync_done_bytes", "gauge", "Bytes the running synchronization pass has copied.", res, sync.done);
      add("hast_sync_total_bytes", "gauge", "Bytes the running synchronization pass copies in all.", res, sync.total);
      add("hast_sync_rate_bytes_per_second", "gauge", "Current rate of the running synchronization pass.", res, sync.rate);
      add("hast_sync_eta_seconds", "gauge", "Estimated seconds until the running pass completes (absent until a rate is known).", res, sync.eta ?? undefined);
    }
    const verify = r.verify;
    add("hast_verify_running", "gauge", "1 while an online verification runs (primary).", res, r.role === "primary" && r.workerpid ? (verify ? 1 : 0) : undefined);
    if (verify) {
      add("hast_verify_done_bytes", "gauge", "Bytes the running verification has dealt with.", res, verify.done);
      add("hast_verify_total_bytes", "gauge", "Bytes the running verification deals with in all (the device from where it began).", res, verify.total);
      add("hast_verify_differ_bytes", "gauge", "Bytes the running verification found different so far (copied to the secondary).", res, verify.differ_bytes);
      add("hast_verify_eta_seconds", "gauge", "Estimated seconds until the running verification completes (absent until a rate is known).", res, verify.eta ?? undefined);
    }
    const lv = r.last_verify;
    if (lv) {
      add("hast_last_verify_complete", "gauge", "1 when the last verification ran to its end, 0 when it was stopped or interrupted.", res, lv.ended === "complete" ? 1 : 0);
      add("hast_last_verify_differ_bytes", "gauge", "Bytes the last verification found different (copied to the secondary).", res, lv.differ_bytes);
      add("hast_last_verify_differ_chunks", "gauge", "Chunks the last verification found different.", res, lv.differ_chunks);
      add("hast_last_verify_unchecked_bytes", "gauge", "Bytes the last verification did not compare (still to be synchronized, or read errors).", res,
        lv.skipped_bytes + lv.failed_bytes);
      add("hast_last_verify_finished_timestamp_seconds", "gauge", "When the last verification ended (Unix time).", res, Date.parse(lv.finished) / 1000);
    }
    const last = r.last_sync;
    if (last) {
      add("hast_last_sync_bytes", "gauge", "Bytes the last completed synchronization pass copied.", res, last.bytes);
      add("hast_last_sync_duration_seconds", "gauge", "Duration of the last completed synchronization pass.", res, last.seconds);
      add("hast_last_sync_finished_timestamp_seconds", "gauge", "When the last completed synchronization pass finished (Unix time).", res,
        Date.parse(last.finished) / 1000);
    }
  }
  return [...fams.values()].filter((f) => f.samples.length > 0);
}

export function formatPrometheus(resources: ResourceStatus[]): string {
  const out: string[] = [];
  for (const f of families(resources)) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(sampleLine(f.name, s));
  }
  return out.length ? `${out.join("\n")}\n` : "";
}
