// Resident memory of a process: its peak (VmHWM) and now (VmRSS) from /proc/<pid>/status. Writing "5" to
// /proc/<pid>/clear_refs resets the peak (Linux >= 4.0, root), so each workload gets its own.
import { readFileSync, writeFileSync } from "node:fs";

export function peakRssMiB(pid: number): number {
  return statusMiB(pid, "VmHWM");
}

/** Resident memory now (VmRSS). */
export function rssMiB(pid: number): number {
  return statusMiB(pid, "VmRSS");
}

function statusMiB(pid: number, field: "VmHWM" | "VmRSS"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no ${field} line`);
  return Number(match[1]) / 1024;
}

/** Resets the peak to the current RSS; false when the kernel or our privileges do not allow it. */
export function resetPeakRss(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}
