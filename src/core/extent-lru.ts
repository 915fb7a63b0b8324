// The keepdirty set (spec 4.3): the most recently written extents, left dirty on disk after their
// writes finish so that a hot extent does not cost a map write per request. Every write touches
// it, so it is an intrusive doubly linked list over extent numbers in typed arrays: no hashing
// and no allocation per touch.
import { assert } from "./assert.ts";

const NONE = -1;

export class ExtentLru {
  readonly capacity: number;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly member: Uint8Array;
  /** Least recently touched. */
  private head = NONE;
  /** Most recently touched. */
  private tail = NONE;
  private count = 0;

  constructor(nextents: number, capacity: number) {
    assert(Number.isSafeInteger(nextents) && nextents >= 0, () => `extent count ${nextents}`);
    assert(Number.isSafeInteger(capacity) && capacity >= 0, () => `LRU capacity ${capacity}`);
    this.capacity = capacity;
    this.next = new Int32Array(nextents).fill(NONE);
    this.prev = new Int32Array(nextents).fill(NONE);
    this.member = new Uint8Array(nextents);
  }

  get size(): number {
    return this.count;
  }

  has(e: number): boolean {
    return this.member[e] === 1;
  }

  /** Makes e the most recent; returns the least recent extent it pushed out, if over capacity. */
  touch(e: number): number | null {
    assert(Number.isInteger(e) && e >= 0 && e < this.member.length, () => `extent ${e} outside the LRU`);
    if (this.member[e] === 1) {
      if (this.tail !== e) {
        this.unlink(e);
        this.append(e);
      }
      return null;
    }
    this.member[e] = 1;
    this.count++;
    this.append(e);
    if (this.count <= this.capacity) return null;
    const oldest = this.head;
    this.unlink(oldest);
    this.member[oldest] = 0;
    this.count--;
    return oldest;
  }

  /** Empties the set; returns what it held, least recent first. */
  drain(): number[] {
    const out: number[] = [];
    for (let e = this.head; e !== NONE; e = this.next[e]!) out.push(e);
    for (const e of out) {
      this.member[e] = 0;
      this.next[e] = NONE;
      this.prev[e] = NONE;
    }
    this.head = this.tail = NONE;
    this.count = 0;
    return out;
  }

  private append(e: number): void {
    this.prev[e] = this.tail;
    this.next[e] = NONE;
    if (this.tail === NONE) this.head = e;
    else this.next[this.tail] = e;
    this.tail = e;
  }

  private unlink(e: number): void {
    const p = this.prev[e]!;
    const n = this.next[e]!;
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
    this.prev[e] = NONE;
    this.next[e] = NONE;
  }
}
