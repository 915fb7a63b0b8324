// A rate in bytes per second for background work, so it leaves the disks and the link to the
// application: verify_rate (an online verification's reads on each node) and sync_rate (what a
// synchronization copies to the peer). While the work may run, a timer hands the engine its
// allowance (PrimaryEngine.allowVerify, allowSync); without a rate the engine is told once that it
// is not paced.

/** How often the allowance grows: small enough that chunks start evenly. */
const TICK_MS = 100;
/** The allowance saved up while nothing uses it (chunks wait for writes or the peer, no pass runs)
 * is at most this many seconds' worth, so a pause is not followed by a burst. */
const BURST_S = 0.25;

export class Pacer {
  private timer: ReturnType<typeof setInterval> | null = null;
  private last_ms = 0;
  /** The paced work may run (between start and stop). */
  private running = false;

  constructor(
    private rate: number | null,
    /** PrimaryEngine.allowVerify or allowSync, its actions carried out. */
    private readonly allow: (bytes: number, cap: number) => void,
  ) {}

  /** Before the work starts (a verification; a connection, for the synchronizations on it). */
  start(): void {
    this.stop();
    this.running = true;
    if (this.rate === null) return this.allow(Infinity, Infinity);
    this.allow(0, this.cap(this.rate));
    this.last_ms = performance.now();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /** Once it ended (the verification; the connection). */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.running = false;
  }

  /** A reload changed the rate: work running goes on at the new rate (or none). */
  setRate(rate: number | null): void {
    this.rate = rate;
    if (this.running) this.start();
  }

  private tick(): void {
    const now = performance.now();
    const rate = this.rate!;
    this.allow((rate * (now - this.last_ms)) / 1000, this.cap(rate));
    this.last_ms = now;
  }

  private cap(rate: number): number {
    return Math.max(1, rate * BURST_S);
  }
}
