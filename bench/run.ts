#!/usr/bin/env bun
// The benchmark suite (issue 7; docs/performance.md). On this machine, in one run, side by side on
// the same backing file: raw file I/O (fio psync / io_uring), nbdkit's file plugin, qemu-nbd, our
// NBD gate alone over the file, hastd's primary with `remote none`, and replicated pairs on
// loopback (memsync, fullsync, async); then the resync after an outage, a new pair's initial full sync and
// worker peak RSS on 1 GiB vs 16 GiB sparse devices. Prints tables and ratios, writes bench/results/latest.json.
//
//   bun bench/run.ts            full run: tmpfs and /var/tmp, ~13 min; also bench/results/ratios.svg
//                               and the results section of docs/performance.md
//   bun bench/run.ts --quick    tmpfs only, short runs, fewer targets: under 3 minutes
// Needs fio (with the nbd engine), nbdkit, qemu-nbd and dd. Run as root for per-workload peak RSS.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type LoopbackResult, measureLoopback } from "./lib/loopback.ts";
import { filesystemOf, machineInfo } from "./lib/machine.ts";
import { WORKLOADS } from "./lib/fio.ts";
import { Processes } from "./lib/procs.ts";
import { type BenchResults, checkGoals, computeRatios, consoleTables, markdownTables, type MediumResults, round } from "./lib/report.ts";
import { ratioChart } from "./lib/svg.ts";
import {
  ALL_TARGETS, DEVICE_BYTES, LARGE_DEVICE_BYTES, makeBackingFile, measureInitialSync, measureResync, measureTarget, measureWorkerRssGrowth, type TargetName,
} from "./lib/suite.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const RESULTS_JSON = join(ROOT, "bench/results/latest.json");
const RATIOS_SVG = join(ROOT, "bench/results/ratios.svg");
const PERFORMANCE_MD = join(ROOT, "docs/performance.md");
const DOCS_BEGIN = "<!-- bench:results:begin -->";
const DOCS_END = "<!-- bench:results:end -->";
const TOOLS = ["fio", "nbdkit", "qemu-nbd", "dd"];

interface Plan {
  quick: boolean;
  runtime_s: number;
  /** `disk`: a disk lies behind the page cache, so the cold-read workload means something there. */
  media: { name: MediumResults["name"]; base: string; disk: boolean }[];
  targets: TargetName[];
}

function plan(argv: string[]): Plan {
  for (const a of argv) if (a !== "--quick") throw new Error(`bench: unknown argument ${a} (usage: bun bench/run.ts [--quick])`);
  if (argv.includes("--quick")) {
    return { quick: true, runtime_s: 2, media: [{ name: "tmpfs", base: "/dev/shm", disk: false }], targets: ["raw_io_uring", "nbdkit", "qemu_nbd", "gate", "nbd", "memsync"] };
  }
  return { quick: false, runtime_s: 6, media: [{ name: "tmpfs", base: "/dev/shm", disk: false }, { name: "disk", base: "/var/tmp", disk: true }], targets: ALL_TARGETS };
}

async function main(): Promise<void> {
  const p = plan(process.argv.slice(2));
  const missing = TOOLS.filter((t) => !Bun.which(t));
  if (missing.length > 0) throw new Error(`bench: missing ${missing.join(", ")}; install fio, nbdkit and qemu-utils (apt-get install fio nbdkit qemu-utils)`);
  const started = performance.now();
  const procs = new Processes();
  const dirs: string[] = [];
  const log = (msg: string) => console.log(msg);
  const media: MediumResults[] = [];
  const rss: Record<string, number> = {};
  /** Every sparse-device run's worker peak (rss.worker_max_mib counts them all). */
  const sparse_peaks: number[] = [];
  let loopback: LoopbackResult | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    console.error("bench: interrupted; stopping everything it started");
    void procs.stopAll().then(() => {
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const floor_dir = mkdtempSync(join(p.media[0]!.base, "hast-bench-"));
    dirs.push(floor_dir);
    log("== loopback floor");
    loopback = await measureLoopback({ procs, runtime_s: p.runtime_s, log }, floor_dir);
    for (const medium of p.media) {
      const dir = mkdtempSync(join(medium.base, "hast-bench-"));
      dirs.push(dir);
      const ctx = { procs, runtime_s: p.runtime_s, log };
      const file = join(dir, "disk.img");
      log(`== ${medium.name}: ${dir} (${filesystemOf(dir)}), ${DEVICE_BYTES >> 20} MiB backing file, ${p.runtime_s} s per workload`);
      await makeBackingFile(file, DEVICE_BYTES);
      const m: MediumResults = { name: medium.name, path: medium.base, filesystem: filesystemOf(dir), targets: {} };
      media.push(m);
      const workloads = WORKLOADS.filter((w) => w.cold !== true || medium.disk);
      for (const target of p.targets) {
        if (interrupted) return;
        m.targets[target] = await measureTarget(ctx, target, dir, file, workloads);
      }
      m.resync = await measureResync(ctx, dir, file);
      m.initial_sync = await measureInitialSync(ctx, dir);
      if (medium.name === "tmpfs") {
        const growth = await measureWorkerRssGrowth(ctx, dir, DEVICE_BYTES, LARGE_DEVICE_BYTES);
        rss.worker_1g_mib = round(growth.small_mib, 1);
        rss.worker_16g_mib = round(growth.large_mib, 1);
        rss.worker_growth_16g_vs_1g_mib = round(growth.large_mib - growth.small_mib, 1);
        // No goal: what stays after the load, next to the peak above.
        rss.worker_1g_settled_mib = round(growth.small_settled_mib, 1);
        rss.worker_16g_settled_mib = round(growth.large_settled_mib, 1);
        rss.worker_growth_settled_16g_vs_1g_mib = round(growth.large_settled_mib - growth.small_settled_mib, 1);
        sparse_peaks.push(...growth.small_runs, ...growth.large_runs);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    await procs.stopAll();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  }
  Object.assign(rss, peakRss(media, sparse_peaks));
  const ratios = computeRatios(media, loopback);
  const flat: Record<string, number> = {};
  for (const [k, v] of Object.entries(ratios)) flat[`ratios.${k}`] = v;
  for (const [k, v] of Object.entries(rss)) flat[`rss.${k}`] = v;
  const results: BenchResults = {
    when: new Date().toISOString(), quick: p.quick, runtime_s: p.runtime_s, machine: machineInfo(), loopback, media, rss, ratios, targets: checkGoals(flat),
  };
  log("");
  log(consoleTables(results));
  log("");
  log("Ratios (ours / peer, higher is better):");
  for (const [k, v] of Object.entries(ratios)) log(`  ratios.${k.padEnd(44)} ${v.toFixed(3)}`);
  writeFileSync(RESULTS_JSON, `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwrote ${RESULTS_JSON}`);
  if (!p.quick) {
    writeFileSync(RATIOS_SVG, chart(results));
    updateDocs(results);
    log(`wrote ${RATIOS_SVG} and the results section of ${PERFORMANCE_MD}`);
  }
  log(`bench: done in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

/** Largest peak RSS seen per process kind over every workload, the resync and the sparse-device runs included. */
function peakRss(media: MediumResults[], sparse_workers: number[]): Record<string, number> {
  let worker = Math.max(0, ...sparse_workers);
  let main = 0;
  for (const m of media) {
    const samples = [...Object.values(m.targets).flatMap((t) => Object.values(t.rss)), ...(m.resync ? [m.resync.rss] : [])];
    for (const s of samples) {
      for (const [k, v] of Object.entries(s)) {
        if (k.endsWith("_worker")) worker = Math.max(worker, v);
        else main = Math.max(main, v);
      }
    }
  }
  return { worker_max_mib: round(worker, 1), main_max_mib: round(main, 1) };
}

const GOAL_OF: Record<string, number> = {
  nbd_vs_nbdkit_randwrite_qd32: 1.0, nbd_vs_nbdkit_seqwrite_1m: 0.9,
  memsync_vs_nbd_randwrite_qd32: 0.8, memsync_vs_nbd_seqwrite_1m: 0.8, resync_vs_rawcopy: 0.9,
};

function chart(results: BenchResults): string {
  // Flushes cost nothing on tmpfs and every read is cached there, so the flush and cold-read
  // workloads are shown on the disk medium too.
  const keys = Object.keys(results.ratios).filter((k) => (!k.endsWith("_disk") || k.includes("_flush_") || k.includes("_cold_")) &&
    /^(nbd_vs_nbdkit|gate_vs_nbdkit|memsync_vs_nbd|async_vs_nbd|fullsync_vs_nbd|resync|initial_sync)/.test(k));
  const bars = keys.map((k) => ({ label: k, value: results.ratios[k]!, goal: GOAL_OF[k] }));
  return ratioChart(`hast on Bun vs peers, tmpfs; _disk: /var/tmp (${results.machine.cpus} CPUs, ${results.when.slice(0, 10)})`, bars);
}

function updateDocs(results: BenchResults): void {
  const m = results.machine;
  const section = [
    DOCS_BEGIN,
    `Measured ${results.when} by \`bun bench/run.ts\` (${results.runtime_s} s per workload) on ${m.cpus} × ${m.cpu_model}, ` +
      `${m.memory_gib} GiB RAM, Linux ${m.kernel}, Bun ${m.bun}; ${Object.values(m.tools).join("; ")}.`,
    "",
    markdownTables(results),
    "",
    "![ratios](../bench/results/ratios.svg)",
    DOCS_END,
  ].join("\n");
  const doc = readFileSync(PERFORMANCE_MD, "utf8");
  const a = doc.indexOf(DOCS_BEGIN);
  const b = doc.indexOf(DOCS_END);
  if (a < 0 || b < a) throw new Error(`${PERFORMANCE_MD}: markers ${DOCS_BEGIN} / ${DOCS_END} not found; results not written there`);
  writeFileSync(PERFORMANCE_MD, doc.slice(0, a) + section + doc.slice(b + DOCS_END.length));
}

try {
  await main();
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}
