// Sector contents on the wire: a sector holding version v is sector_bytes of v as little-endian
// u32s, so real frames (checksums, hole compression, zstd) carry the simulated data.

export function sectorsToBytes(versions: Uint32Array, sector_bytes: number): Uint8Array {
  const words = sector_bytes / 4;
  const out = new Uint32Array(versions.length * words);
  for (let i = 0; i < versions.length; i++) out.fill(versions[i]!, i * words, (i + 1) * words);
  return new Uint8Array(out.buffer);
}

export function bytesToSectors(bytes: Uint8Array, sector_bytes: number): Uint32Array {
  if (bytes.length % sector_bytes !== 0) throw new Error(`${bytes.length} data bytes are not whole ${sector_bytes}-byte sectors`);
  const words = new Uint32Array(new Uint8Array(bytes).buffer); // a copy: Buffer#slice would be a view
  const per = sector_bytes / 4;
  const out = new Uint32Array(bytes.length / sector_bytes);
  for (let i = 0; i < out.length; i++) {
    const v = words[i * per]!;
    for (let w = 1; w < per; w++) {
      if (words[i * per + w] !== v) throw new Error(`sector ${i} of a payload is not uniform: the codec corrupted data`);
    }
    out[i] = v;
  }
  return out;
}
