// The simulator's one source of randomness: every choice of a run comes from this seeded stream,
// so one seed is one exact run.
import { prng } from "../fuzz/prng.ts";

export class Rng {
  private readonly next: () => number;

  constructor(seed: number) {
    this.next = prng(seed);
  }

  float(): number {
    return this.next();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error("Rng.pick from an empty list");
    return items[this.int(items.length)]!;
  }

  /** A non-zero 64-bit value (resource ids). */
  u64(): bigint {
    for (;;) {
      const value = (BigInt(this.int(2 ** 32)) << 32n) | BigInt(this.int(2 ** 32));
      if (value !== 0n) return value;
    }
  }
}
