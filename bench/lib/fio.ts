// fio jobs and the figures we take from its JSON output. One workload definition serves every
// target: a file (psync / io_uring engines) or an NBD URI (fio's libnbd engine).
import { runOk } from "./procs.ts";

export type WorkloadName = "randwrite_qd1" | "randwrite_qd32" | "randwrite_flush_qd32" | "randread_qd32" | "randread_cold_qd32" | "seqwrite_1m" | "seqread_1m";

export interface Workload {
  name: WorkloadName;
  rw: "randwrite" | "randread" | "write" | "read";
  block_bytes: number;
  iodepth: number;
  /** fio --fsync: a flush (NBD_CMD_FLUSH, fsync on files) after every this many writes. */
  fsync_every?: number;
  /** The backing file's pages are dropped from the page cache first, so reads wait for the disk
   * (and the cache warms as the run goes on, alike for every target). Media with a disk only. */
  cold?: boolean;
}

export const WORKLOADS: Workload[] = [
  { name: "randwrite_qd1", rw: "randwrite", block_bytes: 4096, iodepth: 1 },
  { name: "randwrite_qd32", rw: "randwrite", block_bytes: 4096, iodepth: 32 },
  // Flush-heavy, as a database or a journaling filesystem is.
  { name: "randwrite_flush_qd32", rw: "randwrite", block_bytes: 4096, iodepth: 32, fsync_every: 32 },
  { name: "randread_qd32", rw: "randread", block_bytes: 4096, iodepth: 32 },
  { name: "randread_cold_qd32", rw: "randread", block_bytes: 4096, iodepth: 32, cold: true },
  { name: "seqwrite_1m", rw: "write", block_bytes: 1 << 20, iodepth: 8 },
  { name: "seqread_1m", rw: "read", block_bytes: 1 << 20, iodepth: 8 },
];

export type FioTarget =
  | { kind: "file"; path: string; engine: "psync" | "io_uring"; size_bytes: number }
  | { kind: "nbd"; uri: string };

export interface FioResult {
  iops: number;
  mib_s: number;
  clat_p50_us: number;
  clat_p99_us: number;
}

/** Extra time a fio run may take beyond its runtime (connect, ramp, teardown) before it is killed. */
const FIO_SLACK_MS = 60_000;

export async function runFio(target: FioTarget, w: Workload, runtime_s: number, work_dir: string): Promise<FioResult> {
  const argv = [
    "fio", "--name=bench", `--rw=${w.rw}`, `--bs=${w.block_bytes}`, `--iodepth=${w.iodepth}`,
    `--runtime=${runtime_s}`, "--time_based", "--ramp_time=0", "--norandommap", "--randrepeat=0",
    "--output-format=json", `--directory=${work_dir}`,
  ];
  if (w.fsync_every !== undefined) argv.push(`--fsync=${w.fsync_every}`);
  if (target.kind === "file") argv.push(`--filename=${target.path}`, `--ioengine=${target.engine}`, `--size=${target.size_bytes}`);
  else argv.push("--ioengine=nbd", `--uri=${target.uri}`);
  const out = await runOk(argv, runtime_s * 1000 + FIO_SLACK_MS);
  return parseFioJson(out, w);
}

/** fio's nbd engine prints "fio: connected to NBD server" before the JSON. */
export function parseFioJson(text: string, w: Workload): FioResult {
  const start = text.indexOf("{");
  if (start < 0) throw new Error(`fio printed no JSON: ${text.slice(0, 200)}`);
  const job = JSON.parse(text.slice(start)).jobs?.[0];
  if (!job) throw new Error("fio JSON has no job");
  if (job.error !== 0) throw new Error(`fio job failed with error ${job.error}`);
  const side = w.rw === "randread" || w.rw === "read" ? job.read : job.write;
  const pct = side.clat_ns?.percentile ?? {};
  return {
    iops: side.iops,
    mib_s: side.bw_bytes / (1 << 20),
    clat_p50_us: (pct["50.000000"] ?? 0) / 1000,
    clat_p99_us: (pct["99.000000"] ?? 0) / 1000,
  };
}

/** Drops a file's pages from the page cache (written out first: dirty pages would stay). GNU dd's
 * `nocache` is posix_fadvise(POSIX_FADV_DONTNEED), which needs no privilege. */
export async function evictFromPageCache(path: string): Promise<void> {
  await runOk(["dd", `of=${path}`, "oflag=nocache", "conv=notrunc,fdatasync", "count=0", "status=none"]);
}

/** Sequential write of `bytes` from offset 0 through NBD, as fast as the target takes it (resync setup). */
export async function fillViaNbd(uri: string, bytes: number, work_dir: string): Promise<void> {
  await runOk([
    "fio", "--name=fill", "--rw=write", "--bs=1M", "--iodepth=8", `--size=${bytes}`, "--ioengine=nbd",
    `--uri=${uri}`, `--directory=${work_dir}`, "--output-format=json",
  ], FIO_SLACK_MS * 5);
}
