// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, runtime-agnostic.
// Used by the metadata slot checksum and every peer frame header (twice per replicated write:
// once sent, once received), so it is sliced by 8: eight bytes take eight independent table
// loads instead of eight dependent ones.
// Core code may not use Bun.hash.

const POLYNOMIAL_REFLECTED = 0x82f63b78;
const SLICES = 8;

/** TABLES[k * 256 + n]: the CRC of byte n followed by k zero bytes. */
const TABLES: Uint32Array = (() => {
  const t = new Uint32Array(SLICES * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL_REFLECTED : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let k = 1; k < SLICES; k++) {
    for (let n = 0; n < 256; n++) {
      const prev = t[(k - 1) * 256 + n]!;
      t[k * 256 + n] = (t[prev & 0xff]! ^ (prev >>> 8)) >>> 0;
    }
  }
  return t;
})();

/** CRC-32C of `bytes[start..end)` (all of it by default); crc32c(ASCII "123456789") === 0xe3069283. */
export function crc32c(bytes: Uint8Array, start = 0, end = bytes.length): number {
  const t = TABLES;
  let crc = 0xffffffff;
  let i = start;
  for (; i + SLICES <= end; i += SLICES) {
    const lo = crc ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
    crc =
      t[7 * 256 + (lo & 0xff)]! ^ t[6 * 256 + ((lo >>> 8) & 0xff)]! ^
      t[5 * 256 + ((lo >>> 16) & 0xff)]! ^ t[4 * 256 + (lo >>> 24)]! ^
      t[3 * 256 + bytes[i + 4]!]! ^ t[2 * 256 + bytes[i + 5]!]! ^
      t[256 + bytes[i + 6]!]! ^ t[bytes[i + 7]!]!;
  }
  for (; i < end; i++) crc = t[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
