// Online verification for hastctl: the running one's progress with a rate and an ETA, and what the
// last one found, when it ended and how long it ran.
import type { VerifyCounts, VerifyResult } from "../core/verify-pass.ts";
import type { LastVerify, VerifyCompare, VerifyProgress } from "../wire/control.ts";
import { SyncRate } from "./sync-rate.ts";

export class VerifyLog {
  private rate = new SyncRate();
  private started_ms: number | null = null;
  private compare: VerifyCompare = "sha256";
  last: LastVerify | undefined;

  started(compare: VerifyCompare): void {
    this.rate = new SyncRate();
    this.started_ms = performance.now();
    this.compare = compare;
  }

  progress(c: VerifyCounts): VerifyProgress {
    const { done_bytes, total_bytes, same_bytes: _, ...found } = c;
    return { ...this.rate.progress(done_bytes, total_bytes - done_bytes), ...found, compare: this.compare };
  }

  /** Why `hastctl verify --resume` has nothing to go on from, or null (last.resume_offset). */
  resumeRefusal(): string | null {
    if (this.last === undefined) return "no verification ended early since this worker started; run one without --resume";
    const last = this.last;
    if (last.ended === "complete" || last.resume_offset >= last.from_offset + last.total_bytes) {
      return "the last verification compared everything; run a new one without --resume";
    }
    return null;
  }

  ended(r: VerifyResult): void {
    const seconds = this.started_ms === null ? 0 : (performance.now() - this.started_ms) / 1000;
    this.started_ms = null;
    const { done_bytes: _, ...found } = r;
    this.last = { finished: new Date().toISOString(), seconds: Math.round(seconds * 1000) / 1000, ...found, compare: this.compare };
  }
}
