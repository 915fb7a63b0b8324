// Synchronization progress for hastctl: bytes done and to go, a smoothed rate and an ETA while a
// pass runs, and how long the last completed pass took.
import type { LastSync, SyncProgress } from "../wire/control.ts";
import type { HookEvent } from "./ipc.ts";

const WINDOW_MS = 10_000;

export class SyncRate {
  private samples: { at_ms: number; done: number }[] = [];
  private started_ms: number | null = null;
  last: LastSync | undefined;

  /** The syncstart and syncdone hook events of the primary worker. */
  onEvent(event: HookEvent, done_bytes: () => number): void {
    if (event === "syncstart") this.started_ms = performance.now();
    if (event !== "syncdone" || this.started_ms === null) return;
    const seconds = (performance.now() - this.started_ms) / 1000;
    this.started_ms = null;
    this.last = { bytes: done_bytes(), seconds: Math.round(seconds * 1000) / 1000, finished: new Date().toISOString() };
  }

  progress(done: number, pending: number): SyncProgress {
    const now = Date.now();
    const last = this.samples.at(-1);
    if (last && done < last.done) this.samples = []; // a new pass started
    this.samples.push({ at_ms: now, done });
    while (this.samples.length > 2 && now - this.samples[0]!.at_ms > WINDOW_MS) this.samples.shift();
    const first = this.samples[0]!;
    const span_s = (now - first.at_ms) / 1000;
    const rate = span_s > 0 ? (done - first.done) / span_s : 0;
    return { done, total: done + pending, rate: Math.round(rate), eta: rate > 0 ? pending / rate : null };
  }
}
