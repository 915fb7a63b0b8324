// verify_rate: an online verification reads at most this many bytes per second on each node, so
// it leaves the disks to the application. While one runs, a timer hands the engine its allowance
// (PrimaryEngine.allowVerify); without a rate the engine is told once that it is not paced.

/** How often the allowance grows: small enough that chunks start evenly. */
const TICK_MS = 100;
/** The allowance saved up while chunks wait (for writes, for the peer) is at most this many
 * seconds' worth, so a pause is not followed by a burst. */
const BURST_S = 0.25;

export class VerifyPacer {
  private timer: ReturnType<typeof setInterval> | null = null;
  private last_ms = 0;
  /** A verification runs (between start and stop). */
  private running = false;

  constructor(
    private rate: number | null,
    /** PrimaryEngine.allowVerify, its actions carried out. */
    private readonly allow: (bytes: number, cap: number) => void,
  ) {}

  /** Before a verification starts. */
  start(): void {
    this.stop();
    this.running = true;
    if (this.rate === null) return this.allow(Infinity, Infinity);
    this.allow(0, this.cap(this.rate));
    this.last_ms = performance.now();
    this.timer = setInterval(() => this.tick(), TICK_MS);
  }

  /** Once it ended. */
  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.running = false;
  }

  /** A reload changed verify_rate: a verification running goes on at the new rate (or none). */
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
