// A fixed-size bit set over bytes. Bit n lives in byte n >> 3 at bit n & 7, least
// significant bit first — the activemap's on-disk bit order, independent of machine words
// and endianness (HAST stored raw machine words; see docs/format.md).

import { assert } from "./assert.ts";

/** Sets these bits in a raw map image (an on-disk activemap region, a map sent to the peer). */
export function setBits(bytes: Uint8Array, bits: Iterable<number>): void {
  for (const bit of bits) bytes[bit >> 3]! |= 1 << (bit & 7);
}

/** A raw map image of `bytes` with bits 0..nbits-1 set and the padding bits past them zero (the
 * peer protocol requires it): every extent. */
export function allBits(bytes: number, nbits: number): Uint8Array {
  assert(nbits <= bytes * 8, () => `${nbits} bits do not fit in ${bytes} bytes`);
  const map = new Uint8Array(bytes);
  map.fill(0xff, 0, nbits >> 3);
  if (nbits & 7) map[nbits >> 3] = (1 << (nbits & 7)) - 1;
  return map;
}

export class Bitmap {
  readonly nbits: number;
  readonly bytes: Uint8Array;
  private set_count = 0;

  constructor(nbits: number) {
    assert(Number.isSafeInteger(nbits) && nbits >= 0, () => `bitmap size ${nbits} is not a count`);
    this.nbits = nbits;
    this.bytes = new Uint8Array(Math.ceil(nbits / 8));
  }

  /** Number of set bits, kept up to date on every change. */
  get count(): number {
    return this.set_count;
  }

  test(bit: number): boolean {
    this.check(bit);
    return (this.bytes[bit >> 3]! & (1 << (bit & 7))) !== 0;
  }

  /** Sets the bit; returns true when it was clear before. */
  set(bit: number): boolean {
    if (this.test(bit)) return false;
    this.bytes[bit >> 3]! |= 1 << (bit & 7);
    this.set_count++;
    return true;
  }

  /** Clears the bit; returns true when it was set before. */
  clear(bit: number): boolean {
    if (!this.test(bit)) return false;
    this.bytes[bit >> 3]! &= ~(1 << (bit & 7));
    this.set_count--;
    return true;
  }

  clearAll(): void {
    this.bytes.fill(0);
    this.set_count = 0;
  }

  /** Replaces the content with the first nbits of `source` (bits past nbits are ignored). */
  load(source: Uint8Array): void {
    assert(source.length >= this.bytes.length, () => `bitmap source has ${source.length} bytes, need ${this.bytes.length}`);
    this.bytes.set(source.subarray(0, this.bytes.length));
    const tail_bits = this.nbits & 7;
    if (tail_bits !== 0) this.bytes[this.bytes.length - 1]! &= (1 << tail_bits) - 1;
    let count = 0;
    for (const byte of this.bytes) count += popcount8(byte);
    this.set_count = count;
  }

  /** Index of the first set bit at or after `from`, or -1. Skips zero bytes whole. */
  findNextSet(from: number): number {
    if (from >= this.nbits) return -1;
    let index = from >> 3;
    let byte = this.bytes[index]! & (0xff << (from & 7));
    while (byte === 0) {
      index++;
      if (index >= this.bytes.length) return -1;
      byte = this.bytes[index]!;
    }
    const bit = (index << 3) + lowestSetBit(byte);
    return bit < this.nbits ? bit : -1;
  }

  private check(bit: number): void {
    assert(Number.isInteger(bit) && bit >= 0 && bit < this.nbits, () => `bit ${bit} outside bitmap of ${this.nbits}`);
  }
}

function popcount8(byte: number): number {
  let count = 0;
  for (let b = byte; b !== 0; b &= b - 1) count++;
  return count;
}

function lowestSetBit(byte: number): number {
  return 31 - Math.clz32(byte & -byte);
}
