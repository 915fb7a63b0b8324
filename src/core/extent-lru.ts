// The keepdirty set (spec 4.3): the most recently written extents, left dirty on disk after their
// writes finish so that a hot extent does not cost a map write per request. Every write touches
// it, so it is an intrusive doubly linked list in typed arrays over capacity + 1 slots (a touch
// may hold one more before it evicts), with a Map from extent to slot: its memory follows
// keepdirty, not the device (a 16 TiB device has 8 M extents of 2 MiB), and a touch allocates
// nothing beyond the Map's own entry.
import { assert } from "./assert.ts";

const NONE = -1;

export class ExtentLru {
  readonly capacity: number;
  private readonly nextents: number;
  private readonly slot_of = new Map<number, number>();
  /** Per slot: the extent it holds, and its neighbours (free slots are chained through `next`). */
  private readonly extent: Float64Array;
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  /** Least recently touched. */
  private head = NONE;
  /** Most recently touched. */
  private tail = NONE;
  private free = NONE;

  constructor(nextents: number, capacity: number) {
    assert(Number.isSafeInteger(nextents) && nextents >= 0, () => `extent count ${nextents}`);
    assert(Number.isSafeInteger(capacity) && capacity >= 0 && capacity < 2 ** 30, () => `LRU capacity ${capacity}`);
    this.capacity = capacity;
    this.nextents = nextents;
    this.extent = new Float64Array(capacity + 1);
    this.next = new Int32Array(capacity + 1);
    this.prev = new Int32Array(capacity + 1);
    this.freeAll();
  }

  get size(): number {
    return this.slot_of.size;
  }

  has(e: number): boolean {
    return this.slot_of.has(e);
  }

  /** Makes e the most recent; returns the least recent extent it pushed out, if over capacity. */
  touch(e: number): number | null {
    assert(Number.isInteger(e) && e >= 0 && e < this.nextents, () => `extent ${e} outside the LRU`);
    const held = this.slot_of.get(e);
    if (held !== undefined) {
      if (this.tail !== held) {
        this.unlink(held);
        this.append(held);
      }
      return null;
    }
    const slot = this.free;
    assert(slot !== NONE, "LRU has no free slot");
    this.free = this.next[slot]!;
    this.extent[slot] = e;
    this.slot_of.set(e, slot);
    this.append(slot);
    if (this.slot_of.size <= this.capacity) return null;
    const oldest = this.head;
    const out = this.extent[oldest]!;
    this.unlink(oldest);
    this.slot_of.delete(out);
    this.next[oldest] = this.free;
    this.free = oldest;
    return out;
  }

  /** Empties the set; returns what it held, least recent first. */
  drain(): number[] {
    const out: number[] = [];
    for (let s = this.head; s !== NONE; s = this.next[s]!) out.push(this.extent[s]!);
    this.slot_of.clear();
    this.freeAll();
    return out;
  }

  private freeAll(): void {
    const slots = this.next.length;
    for (let s = 0; s < slots; s++) this.next[s] = s + 1 < slots ? s + 1 : NONE;
    this.free = 0;
    this.head = this.tail = NONE;
  }

  private append(s: number): void {
    this.prev[s] = this.tail;
    this.next[s] = NONE;
    if (this.tail === NONE) this.head = s;
    else this.next[this.tail] = s;
    this.tail = s;
  }

  private unlink(s: number): void {
    const p = this.prev[s]!;
    const n = this.next[s]!;
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
  }
}
