// Peak resident memory of a process: VmHWM from /proc/<pid>/status. Writing "5" to
// /proc/<pid>/clear_refs resets the peak (Linux >= 4.0, root), so each workload gets its own.
import { readFileSync, writeFileSync } from "node:fs";

export function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(status);
  if (!match) throw new Error(`/proc/${pid}/status has no VmHWM line`);
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
