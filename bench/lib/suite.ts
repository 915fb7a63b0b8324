// The measurements: every target over every workload on one medium, the resync after an outage,
// and the worker's peak RSS on a small and a large sparse device.
import { mkdirSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { evictFromPageCache, type FioResult, type FioTarget, fillViaNbd, runFio, type Workload, WORKLOADS } from "./fio.ts";
import { HastDeployment, type Replication } from "./hast.ts";
import { startGate, startNbdkit, startQemuNbd } from "./peers.ts";
import { type Processes, runOk, waitFor } from "./procs.ts";
import { peakRssMiB, resetPeakRss, rssMiB } from "./rss.ts";

export const DEVICE_BYTES = 1 << 30;
export const LARGE_DEVICE_BYTES = 16 * 2 ** 30;
export const RESYNC_BYTES = 256 << 20;
const RESYNC_WAIT_MS = 300_000;
/** Each status query costs the primary worker milliseconds of IPC serialization (see docs/performance.md):
 * polling faster than this slows the resync it measures. */
const RESYNC_POLL_MS = 100;

export type TargetName = "raw_psync" | "raw_io_uring" | "nbdkit" | "qemu_nbd" | "gate" | "nbd" | Replication;
export const ALL_TARGETS: TargetName[] = ["raw_psync", "raw_io_uring", "nbdkit", "qemu_nbd", "gate", "nbd", "memsync", "fullsync", "async"];

/** Peak RSS (MiB) of each hastd process during one workload. */
export type RssSample = Record<string, number>;

export interface TargetResult {
  workloads: Partial<Record<Workload["name"], FioResult>>;
  rss: Partial<Record<Workload["name"], RssSample>>;
}

export interface Context {
  procs: Processes;
  runtime_s: number;
  log: (msg: string) => void;
  /** When set, the gate target runs under Bun's CPU profiler and leaves a markdown profile here. */
  profile_dir?: string;
}

/** A fully allocated file (zeroes written), so no target pays for first-touch allocation, and none
 * of it left in the page cache (see runWorkload). */
export async function makeBackingFile(path: string, bytes: number): Promise<void> {
  writeFileSync(path, "");
  await runOk(["dd", "if=/dev/zero", `of=${path}`, "bs=1M", `count=${bytes >> 20}`, "conv=notrunc", "status=none"]);
  await evictFromPageCache(path);
}

export async function measureTarget(ctx: Context, target: TargetName, dir: string, file: string, workloads: Workload[] = WORKLOADS): Promise<TargetResult> {
  const result: TargetResult = { workloads: {}, rss: {} };
  if (target === "raw_psync" || target === "raw_io_uring") {
    const fio: FioTarget = { kind: "file", path: file, engine: target === "raw_psync" ? "psync" : "io_uring", size_bytes: DEVICE_BYTES };
    for (const w of workloads) result.workloads[w.name] = await runWorkload(ctx, target, fio, w, dir, [file]);
    return result;
  }
  if (target === "nbdkit" || target === "qemu_nbd" || target === "gate") {
    const server = target === "nbdkit" ? await startNbdkit(ctx.procs, dir, file)
      : target === "qemu_nbd" ? await startQemuNbd(ctx.procs, dir, file)
      : await startGate(ctx.procs, dir, file, ctx.profile_dir);
    try {
      for (const w of workloads) result.workloads[w.name] = await runWorkload(ctx, target, { kind: "nbd", uri: server.uri }, w, dir, [file]);
    } finally {
      await ctx.procs.stop(server.started);
    }
    return result;
  }
  const hast_dir = join(dir, `hast-${target}`);
  mkdirSync(hast_dir);
  const secondary = join(dir, "secondary.img");
  if (target !== "nbd") await makeBackingFile(secondary, DEVICE_BYTES);
  const hast = await HastDeployment.start(ctx.procs, {
    dir: hast_dir, local: { alpha: file, beta: target === "nbd" ? undefined : secondary }, replication: target === "nbd" ? "memsync" : target,
  });
  try {
    for (const w of workloads) {
      const pids = await hast.pids();
      for (const p of pids) for (const pid of [p.main, p.worker]) if (pid > 0) resetPeakRss(pid);
      result.workloads[w.name] = await runWorkload(ctx, target, { kind: "nbd", uri: hast.uri }, w, dir, target === "nbd" ? [file] : [file, secondary]);
      const sample: RssSample = {};
      for (const p of pids) {
        sample[`${p.node}_main`] = peakRssMiB(p.main);
        if (p.worker > 0) sample[`${p.node}_worker`] = peakRssMiB(p.worker);
      }
      result.rss[w.name] = sample;
    }
  } finally {
    await hast.stop();
    rmSync(hast_dir, { recursive: true, force: true });
    if (target !== "nbd") rmSync(secondary, { force: true });
  }
  return result;
}

/**
 * Writes start from the same page cache for every target: none of the files' pages. What earlier
 * workloads left there would decide the figure otherwise: on ext4 a 4 KiB write into a large folio
 * (as dd's and 1 MiB writes leave them) does work for every block of the folio
 * (ext4_block_write_begin), 3-4× fewer IOPS for nbdkit and `nbd` alike (docs/performance.md,
 * sixteenth round). tmpfs keeps its pages whatever is asked.
 */
async function runWorkload(ctx: Context, target: TargetName, fio: FioTarget, w: Workload, dir: string, files: string[]): Promise<FioResult> {
  if (w.cold === true || w.rw === "randwrite" || w.rw === "write") for (const f of files) await evictFromPageCache(f);
  const r = await runFio(fio, w, ctx.runtime_s, dir);
  const figure = w.block_bytes >= 1 << 20 ? `${r.mib_s.toFixed(0)} MiB/s` : `${r.iops.toFixed(0)} IOPS`;
  ctx.log(`  ${target.padEnd(12)} ${w.name.padEnd(15)} ${figure.padStart(12)}  p50 ${r.clat_p50_us.toFixed(0)} us  p99 ${r.clat_p99_us.toFixed(0)} us`);
  return r;
}

export interface ResyncResult {
  bytes: number;
  /** The pass itself, as the primary reports it (status `last_sync`): first chunk to final flush. */
  resync_s: number;
  resync_mib_s: number;
  /** From the role change on the secondary to dirty 0: adds the primary's reconnect and handshake. */
  end_to_end_s: number;
  rawcopy_s: number;
  rawcopy_mib_s: number;
  rss: RssSample;
}

/** Secondary down, RESYNC_BYTES written through the primary, secondary back: the pass's duration.
 * Compared with dd copying the same bytes between the same two files and flushing them (the pass
 * ends with a flush on both nodes). */
export async function measureResync(ctx: Context, dir: string, file: string): Promise<ResyncResult> {
  const hast_dir = join(dir, "hast-resync");
  mkdirSync(hast_dir);
  const secondary = join(dir, "secondary.img");
  await makeBackingFile(secondary, DEVICE_BYTES);
  const hast = await HastDeployment.start(ctx.procs, { dir: hast_dir, local: { alpha: file, beta: secondary }, replication: "memsync" });
  try {
    await hast.setRole("beta", "init");
    await waitFor("the primary to notice the secondary left", async () => (await hast.status("alpha"))?.status === "degraded", 30_000);
    await fillViaNbd(hast.uri, RESYNC_BYTES, dir);
    const dirty = (await hast.status("alpha"))?.dirty ?? 0;
    if (dirty < RESYNC_BYTES) throw new Error(`resync setup: only ${dirty} bytes dirty after writing ${RESYNC_BYTES}`);
    const pids = await hast.pids();
    for (const p of pids) resetPeakRss(p.main);
    const started = performance.now();
    await hast.setRole("beta", "secondary");
    await waitFor("the resync to finish", async () => {
      // last_sync appears after the pass's final flush, which follows the last chunk (dirty 0).
      const s = await hast.status("alpha");
      return s?.status === "complete" && s.dirty === 0 && (s.last_sync?.bytes ?? 0) >= RESYNC_BYTES;
    }, RESYNC_WAIT_MS, RESYNC_POLL_MS);
    const end_to_end_s = (performance.now() - started) / 1000;
    const last = (await hast.status("alpha"))?.last_sync;
    if (!last || last.bytes < RESYNC_BYTES) throw new Error(`resync: the primary reports ${JSON.stringify(last)} as its last pass`);
    const resync_s = last.seconds;
    const rss: RssSample = {};
    for (const p of await hast.pids()) {
      rss[`${p.node}_main`] = peakRssMiB(p.main);
      if (p.worker > 0) rss[`${p.node}_worker`] = peakRssMiB(p.worker);
    }
    await hast.stop();
    const copy_started = performance.now();
    await runOk(["dd", `if=${file}`, `of=${secondary}`, "bs=1M", `count=${RESYNC_BYTES >> 20}`, "conv=notrunc,fdatasync", "status=none"]);
    const rawcopy_s = (performance.now() - copy_started) / 1000;
    const mib = RESYNC_BYTES / 2 ** 20;
    const r = { bytes: RESYNC_BYTES, resync_s, resync_mib_s: mib / resync_s, end_to_end_s, rawcopy_s, rawcopy_mib_s: mib / rawcopy_s, rss };
    ctx.log(`  resync ${mib} MiB: ${r.resync_mib_s.toFixed(0)} MiB/s (pass ${resync_s.toFixed(2)} s, ${end_to_end_s.toFixed(2)} s from the role change); ` +
      `dd copy ${r.rawcopy_mib_s.toFixed(0)} MiB/s`);
    return r;
  } finally {
    await hast.stop();
    rmSync(hast_dir, { recursive: true, force: true });
    rmSync(secondary, { force: true });
  }
}

export interface InitialSyncResult {
  bytes: number;
  /** The pass, as the primary reports it (status `last_sync`). */
  sync_s: number;
  sync_mib_s: number;
  rawcopy_s: number;
  rawcopy_mib_s: number;
}

/** A new pair's first full synchronization over two components of zeroes (a fresh device: the
 * primary sends holes), against dd copying the same file and flushing it. */
export async function measureInitialSync(ctx: Context, dir: string): Promise<InitialSyncResult> {
  const hast_dir = join(dir, "hast-initial");
  mkdirSync(hast_dir);
  const files = { alpha: join(dir, "initial-a.img"), beta: join(dir, "initial-b.img") };
  for (const f of Object.values(files)) await makeBackingFile(f, DEVICE_BYTES);
  const hast = await HastDeployment.start(ctx.procs, { dir: hast_dir, local: files, replication: "memsync", initial_sync: "full" });
  try {
    const last = await waitFor("the initial sync to finish", async () => {
      const s = await hast.status("alpha");
      return s?.status === "complete" && s.dirty === 0 ? s.last_sync : undefined;
    }, RESYNC_WAIT_MS, RESYNC_POLL_MS);
    await hast.stop();
    const copy_started = performance.now();
    await runOk(["dd", `if=${files.alpha}`, `of=${files.beta}`, "bs=1M", "conv=notrunc,fdatasync", "status=none"]);
    const rawcopy_s = (performance.now() - copy_started) / 1000;
    const mib = last.bytes / 2 ** 20;
    const r = { bytes: last.bytes, sync_s: last.seconds, sync_mib_s: mib / last.seconds, rawcopy_s, rawcopy_mib_s: DEVICE_BYTES / 2 ** 20 / rawcopy_s };
    ctx.log(`  initial sync ${mib.toFixed(0)} MiB of zeroes: ${r.sync_mib_s.toFixed(0)} MiB/s (pass ${r.sync_s.toFixed(2)} s); dd copy ${r.rawcopy_mib_s.toFixed(0)} MiB/s`);
    return r;
  } finally {
    await hast.stop();
    rmSync(hast_dir, { recursive: true, force: true });
    for (const f of Object.values(files)) rmSync(f, { force: true });
  }
}

/** Rounds of the device-size RSS check: a single pair of runs moved ±3 MiB on its own. */
export const RSS_GROWTH_ROUNDS = 3;

/**
 * What the worker holds once a load has ended: the allocator's purge delay (WORKER_PURGE_DELAY_MS,
 * 250 ms) and a collection or two have passed. The peak during the load includes garbage not yet
 * collected; this is what stays.
 */
const SETTLE_MS = 2_000;

/** The worker's RSS on a small and a large sparse device, measured alternately RSS_GROWTH_ROUNDS
 * times: the median of each size, and the peaks themselves. */
export interface RssGrowth {
  /** Medians of the worker's peak (VmHWM) during the load. */
  small_mib: number;
  large_mib: number;
  small_runs: number[];
  large_runs: number[];
  /** Medians of its resident memory SETTLE_MS after the load (VmRSS): what stays. */
  small_settled_mib: number;
  large_settled_mib: number;
}

export async function measureWorkerRssGrowth(ctx: Context, dir: string, small_bytes: number, large_bytes: number): Promise<RssGrowth> {
  const small: WorkerRss[] = [];
  const large: WorkerRss[] = [];
  for (let round = 0; round < RSS_GROWTH_ROUNDS; round++) {
    small.push(await measureWorkerRss(ctx, dir, small_bytes));
    large.push(await measureWorkerRss(ctx, dir, large_bytes));
  }
  return {
    small_mib: median(small.map((r) => r.peak_mib)), large_mib: median(large.map((r) => r.peak_mib)),
    small_runs: small.map((r) => r.peak_mib), large_runs: large.map((r) => r.peak_mib),
    small_settled_mib: median(small.map((r) => r.settled_mib)), large_settled_mib: median(large.map((r) => r.settled_mib)),
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

interface WorkerRss {
  peak_mib: number;
  settled_mib: number;
}

/** Worker RSS under 4 KiB random writes spread over a sparse device of `bytes`: its peak during
 * the load, and what it holds SETTLE_MS after it. */
export async function measureWorkerRss(ctx: Context, dir: string, bytes: number): Promise<WorkerRss> {
  const hast_dir = join(dir, `hast-rss-${bytes}`);
  mkdirSync(hast_dir);
  const file = join(dir, `sparse-${bytes}.img`);
  writeFileSync(file, "");
  truncateSync(file, bytes);
  const hast = await HastDeployment.start(ctx.procs, { dir: hast_dir, local: { alpha: file }, replication: "memsync" });
  try {
    const worker = (await hast.pids())[0]!.worker;
    resetPeakRss(worker);
    await runFio({ kind: "nbd", uri: hast.uri }, WORKLOADS.find((w) => w.name === "randwrite_qd32")!, ctx.runtime_s, dir);
    const peak_mib = peakRssMiB(worker);
    await Bun.sleep(SETTLE_MS);
    const settled_mib = rssMiB(worker);
    ctx.log(`  worker RSS on a ${bytes / 2 ** 30} GiB sparse device: peak ${peak_mib.toFixed(1)} MiB, ${settled_mib.toFixed(1)} MiB ${SETTLE_MS / 1000} s after`);
    return { peak_mib, settled_mib };
  } finally {
    await hast.stop();
    rmSync(hast_dir, { recursive: true, force: true });
    rmSync(file, { force: true });
  }
}
