// Byte ranges held exclusively, so a sync chunk and an overlapping application write never
// run at the same time (spec 8). Bookkeeping only: a caller that gets null queues its
// waiter and retries when a token is unlocked.

import { assert } from "./assert.ts";

export const DEFAULT_MAX_RANGE_LOCKS = 1024;

export type RangeLockToken = number;

export class RangeLock {
  private readonly held = new Map<RangeLockToken, { start: number; end: number }>();
  private next_token = 1;
  private readonly max_locks: number;

  /** max_locks bounds the locks held at once; exceeding it is a caller bug. */
  constructor(max_locks = DEFAULT_MAX_RANGE_LOCKS) {
    assert(Number.isSafeInteger(max_locks) && max_locks > 0, () => `max_locks ${max_locks}`);
    this.max_locks = max_locks;
  }

  get size(): number {
    return this.held.size;
  }

  /** Locks [offset, offset + length) unless it overlaps a held range; null if it does. */
  tryLock(offset: number, length: number): RangeLockToken | null {
    checkRange(offset, length);
    if (this.isLocked(offset, length)) return null;
    assert(this.held.size < this.max_locks, () => `more than ${this.max_locks} range locks held`);
    const token = this.next_token++;
    this.held.set(token, { start: offset, end: offset + length });
    return token;
  }

  unlock(token: RangeLockToken): void {
    assert(this.held.delete(token), () => `range lock token ${token} is not held`);
  }

  /** True when any byte of [offset, offset + length) is locked. */
  isLocked(offset: number, length: number): boolean {
    checkRange(offset, length);
    if (this.held.size === 0) return false;
    const end = offset + length;
    for (const range of this.held.values()) {
      if (range.start < end && offset < range.end) return true;
    }
    return false;
  }
}

function checkRange(offset: number, length: number): void {
  assert(
    Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length > 0,
    () => `bad lock range ${offset}+${length}`,
  );
}
