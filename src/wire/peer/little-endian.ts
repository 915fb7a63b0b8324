// Little-endian fields of peer frames read and written byte by byte. A DataView would make the
// engine materialize the ArrayBuffer behind every fresh frame (docs/performance.md, tenth round).
// Values are wrapped as DataView's setters wrap them.
const TWO_32 = 0x1_0000_0000;

export function putU16(b: Uint8Array, at: number, value: number): void {
  b[at] = value;
  b[at + 1] = value >>> 8;
}

export function putU32(b: Uint8Array, at: number, value: number): void {
  b[at] = value;
  b[at + 1] = value >>> 8;
  b[at + 2] = value >>> 16;
  b[at + 3] = value >>> 24;
}

/** `value` is a wire integer (at most 2^53 − 1): the caller checks. */
export function putU64(b: Uint8Array, at: number, value: number): void {
  putU32(b, at, value % TWO_32);
  putU32(b, at + 4, Math.floor(value / TWO_32));
}

export function getU16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

export function getU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** May exceed 2^53 − 1 (then inexact): the caller rejects what is over. */
export function getU64(b: Uint8Array, at: number): number {
  return getU32(b, at) + getU32(b, at + 4) * TWO_32;
}
