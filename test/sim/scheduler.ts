// Simulated clock and event queue: events run in time order, ties in the order they were
// scheduled, so a run depends only on its seed. Nothing here reads the real clock.

interface Event {
  at_ms: number;
  seq: number;
  run: () => void;
}

/** A run that schedules more events than this is looping; it fails instead of hanging. */
export const EVENTS_MAX = 2_000_000;

export class Scheduler {
  now_ms = 0;
  private readonly heap: Event[] = [];
  private seq = 0;
  private executed = 0;

  /** Runs `run` after `delay_ms` of simulated time (0: after everything already due now). */
  after(delay_ms: number, run: () => void): void {
    if (!(delay_ms >= 0)) throw new Error(`negative delay ${delay_ms}`);
    this.push({ at_ms: this.now_ms + delay_ms, seq: this.seq++, run });
  }

  at(at_ms: number, run: () => void): void {
    this.push({ at_ms: Math.max(at_ms, this.now_ms), seq: this.seq++, run });
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Runs every event due at or before `until_ms`, then sets the clock to it. */
  runUntil(until_ms: number): void {
    while (this.heap.length > 0 && this.heap[0]!.at_ms <= until_ms) this.runOne();
    this.now_ms = Math.max(this.now_ms, until_ms);
  }

  private runOne(): void {
    const event = this.pop();
    if (++this.executed > EVENTS_MAX) throw new Error(`more than ${EVENTS_MAX} events: the run does not settle`);
    this.now_ms = event.at_ms;
    event.run();
  }

  private push(event: Event): void {
    const h = this.heap;
    h.push(event);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): Event {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Event, b: Event): boolean {
  return a.at_ms < b.at_ms || (a.at_ms === b.at_ms && a.seq < b.seq);
}
