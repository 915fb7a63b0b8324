// Turns measurements into ratios against the peers, checks them against the targets, and
// renders the console table and the markdown for docs/performance.md.
import type { FioResult, WorkloadName } from "./fio.ts";
import { PING_BYTES, PONG_BYTES } from "../loopback-peer.ts";
import type { LoopbackResult } from "./loopback.ts";
import type { MachineInfo } from "./machine.ts";
import type { InitialSyncResult, ResyncResult, TargetName, TargetResult } from "./suite.ts";

export interface MediumResults {
  name: "tmpfs" | "disk";
  path: string;
  filesystem: string;
  targets: Partial<Record<TargetName, TargetResult>>;
  resync?: ResyncResult;
  initial_sync?: InitialSyncResult;
}

export interface BenchResults {
  when: string;
  quick: boolean;
  runtime_s: number;
  machine: MachineInfo;
  /** What two Bun processes get from TCP on loopback with nothing else to do. */
  loopback?: LoopbackResult;
  media: MediumResults[];
  rss: Record<string, number>;
  ratios: Record<string, number>;
  targets: TargetCheck[];
}

export interface TargetCheck {
  key: string;
  goal: string;
  value: number;
  met: boolean;
}

/** The targets: key, comparison, threshold. */
const GOALS: { key: string; at_least?: number; at_most?: number }[] = [
  { key: "ratios.nbd_vs_nbdkit_randwrite_qd32", at_least: 1.0 },
  { key: "ratios.nbd_vs_nbdkit_seqwrite_1m", at_least: 0.9 },
  { key: "ratios.memsync_vs_nbd_randwrite_qd32", at_least: 0.8 },
  { key: "ratios.memsync_vs_nbd_seqwrite_1m", at_least: 0.8 },
  { key: "ratios.resync_vs_rawcopy", at_least: 0.9 },
  { key: "rss.worker_max_mib", at_most: 100 },
  { key: "rss.worker_growth_16g_vs_1g_mib", at_most: 4 },
];

/** The figure a workload is judged by: IOPS for 4 KiB, MiB/s for 1 MiB. */
export function figure(w: WorkloadName, r: FioResult | undefined): number | undefined {
  if (!r) return undefined;
  return w.endsWith("_1m") ? r.mib_s : r.iops;
}

const WORKLOAD_NAMES: WorkloadName[] = ["randwrite_qd1", "randwrite_qd32", "randwrite_flush_qd32", "randread_qd32", "randread_cold_qd32", "seqwrite_1m", "seqread_1m"];
/** ours vs theirs: every pair gets a ratio per workload. */
const PAIRS: [TargetName, TargetName, string][] = [
  ["nbd", "nbdkit", "nbd_vs_nbdkit"],
  ["nbd", "qemu_nbd", "nbd_vs_qemunbd"],
  ["nbd", "raw_io_uring", "nbd_vs_raw"],
  ["gate", "nbdkit", "gate_vs_nbdkit"],
  ["nbd", "gate", "nbd_vs_gate"],
  ["memsync", "nbd", "memsync_vs_nbd"],
  ["fullsync", "nbd", "fullsync_vs_nbd"],
  ["async", "nbd", "async_vs_nbd"],
];

export function computeRatios(media: MediumResults[], loopback?: LoopbackResult): Record<string, number> {
  const ratios: Record<string, number> = {};
  for (const m of media) {
    const suffix = m.name === "tmpfs" ? "" : `_${m.name}`;
    for (const [ours, theirs, name] of PAIRS) {
      for (const w of WORKLOAD_NAMES) {
        const a = figure(w, m.targets[ours]?.workloads[w]);
        const b = figure(w, m.targets[theirs]?.workloads[w]);
        if (a !== undefined && b !== undefined && b > 0) ratios[`${name}_${w}${suffix}`] = round(a / b, 3);
      }
    }
    if (m.resync) ratios[`resync_vs_rawcopy${suffix}`] = round(m.resync.resync_mib_s / m.resync.rawcopy_mib_s, 3);
    // No goal: how much of the stream two processes can carry the resync uses.
    if (m.resync && loopback) ratios[`resync_vs_loopback_stream${suffix}`] = round(m.resync.resync_mib_s / loopback.stream_mib_s, 3);
    if (m.initial_sync) ratios[`initial_sync_vs_rawcopy${suffix}`] = round(m.initial_sync.sync_mib_s / m.initial_sync.rawcopy_mib_s, 3);
  }
  return ratios;
}

export function checkGoals(flat: Record<string, number>): TargetCheck[] {
  const out: TargetCheck[] = [];
  for (const g of GOALS) {
    const value = flat[g.key];
    if (value === undefined) continue;
    const met = g.at_least !== undefined ? value >= g.at_least : value <= g.at_most!;
    out.push({ key: g.key, goal: g.at_least !== undefined ? `>= ${g.at_least}` : `<= ${g.at_most}`, value, met });
  }
  return out;
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function cell(w: WorkloadName, r: FioResult | undefined): string {
  const v = figure(w, r);
  return v === undefined ? "-" : v.toFixed(0);
}

/** One markdown table per medium: a row per target, IOPS / MiB/s per workload, QD1 latency. */
export function markdownTables(results: BenchResults): string {
  const lines: string[] = [];
  const f = results.loopback;
  if (f) {
    lines.push(`Loopback floor (two Bun processes on 127.0.0.1, nothing else running): a ${PING_BYTES / 1024} KiB message and a ` +
      `${PONG_BYTES}-byte answer, one at a time, take ${f.rtt_p50_us.toFixed(0)} µs (p50) / ${f.rtt_p99_us.toFixed(0)} µs (p99); ` +
      `a one-way stream of 1 MiB writes carries ${f.stream_mib_s.toFixed(0)} MiB/s.`, "");
  }
  for (const m of results.media) {
    lines.push(`### ${m.name} (${m.path}, ${m.filesystem})`, "");
    lines.push("| target | randwrite 4k QD1 IOPS | randwrite 4k QD32 IOPS | randwrite 4k QD32 + flush/32 IOPS | randread 4k QD32 IOPS | randread 4k QD32, page cache dropped, IOPS | seq write 1M MiB/s | seq read 1M MiB/s | QD1 write p50 µs | QD1 write p99 µs |");
    lines.push("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for (const [name, t] of Object.entries(m.targets) as [TargetName, TargetResult][]) {
      const lat = t.workloads.randwrite_qd1;
      lines.push(`| ${name} | ${WORKLOAD_NAMES.map((w) => cell(w, t.workloads[w])).join(" | ")} | ${lat ? lat.clat_p50_us.toFixed(0) : "-"} | ${lat ? lat.clat_p99_us.toFixed(0) : "-"} |`);
    }
    if (m.resync) {
      const r = m.resync;
      lines.push("", `Resync of ${r.bytes >> 20} MiB dirtied while the secondary was down: ${r.resync_mib_s.toFixed(0)} MiB/s ` +
        `(pass ${r.resync_s.toFixed(2)} s; ${r.end_to_end_s.toFixed(2)} s from the role change, reconnect included); ` +
        `dd copying the same bytes and flushing them: ${r.rawcopy_mib_s.toFixed(0)} MiB/s.`);
    }
    if (m.initial_sync) {
      const r = m.initial_sync;
      lines.push("", `Initial full synchronization of a new pair (${(r.bytes / 2 ** 20).toFixed(0)} MiB of zeroes, sent as holes): ` +
        `${r.sync_mib_s.toFixed(0)} MiB/s (pass ${r.sync_s.toFixed(2)} s); dd copying the component and flushing it: ${r.rawcopy_mib_s.toFixed(0)} MiB/s.`);
    }
    lines.push("");
  }
  lines.push("### Targets", "", "| figure | goal | measured | met |", "|---|---|--:|---|");
  for (const t of results.targets) lines.push(`| \`${t.key}\` | ${t.goal} | ${t.value} | ${t.met ? "yes" : "**no**"} |`);
  lines.push("", "### RSS (MiB: peaks are VmHWM; `_settled_` is VmRSS 2 s after the load)", "", "| figure | MiB |", "|---|--:|");
  for (const [k, v] of Object.entries(results.rss)) lines.push(`| \`rss.${k}\` | ${v} |`);
  return lines.join("\n");
}

/** The console version: the same tables with aligned columns and no markdown rules. */
export function consoleTables(results: BenchResults): string {
  const out: string[] = [];
  let table: string[][] = [];
  const flush = () => {
    if (table.length === 0) return;
    const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => (row[c] ?? "").length)));
    for (const row of table) out.push(row.map((v, c) => (c === 0 ? v.padEnd(widths[c]!) : v.padStart(widths[c]!))).join("  "));
    table = [];
  };
  for (const line of markdownTables(results).split("\n")) {
    if (/^\|[-:|]+\|$/.test(line)) continue;
    if (line.startsWith("|")) table.push(line.slice(1, -1).split("|").map((v) => v.trim().replaceAll("`", "").replaceAll("**", "")));
    else {
      flush();
      out.push(line.replace(/^### /, "== "));
    }
  }
  flush();
  return out.join("\n");
}
