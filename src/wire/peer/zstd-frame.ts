// Structural check of a zstd frame before it is decompressed, so a hostile frame cannot make the
// decompressor produce more than the frame's logical length (a "zstd bomb"): exactly one frame,
// no dictionary, a declared content size, block sizes within zstd's limits, nothing trailing.
// Format: RFC 8878 §3.1.1.
import { ZSTD_MAX_BLOCK_BYTES } from "./constants.ts";

const ZSTD_MAGIC = 0xfd2fb528;

export type ZstdFrameCheck = { ok: true; content_bytes: number } | { ok: false; reason: string };

export function inspectZstdFrame(data: Uint8Array): ZstdFrameCheck {
  if (data.length < 6) return bad(`zstd frame of ${data.length} bytes is too short`);
  const magic = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
  if (magic !== ZSTD_MAGIC) return bad(`bad zstd magic 0x${magic.toString(16)}`);
  const descriptor = data[4]!;
  const fcs_flag = descriptor >> 6;
  const single_segment = (descriptor & 0x20) !== 0;
  const has_checksum = (descriptor & 0x04) !== 0;
  if ((descriptor & 0x08) !== 0) return bad("zstd frame descriptor reserved bit set");
  if ((descriptor & 0x03) !== 0) return bad("zstd frame uses a dictionary");
  const fcs_bytes = [single_segment ? 1 : 0, 2, 4, 8][fcs_flag]!;
  if (fcs_bytes === 0) return bad("zstd frame does not declare its content size");
  let at = 5 + (single_segment ? 0 : 1);
  if (at + fcs_bytes > data.length) return bad("zstd frame header truncated");
  let content_bytes = 0;
  for (let i = fcs_bytes - 1; i >= 0; i--) content_bytes = content_bytes * 256 + data[at + i]!;
  if (fcs_bytes === 2) content_bytes += 256;
  if (!Number.isSafeInteger(content_bytes)) return bad("zstd content size exceeds 2^53-1");
  at += fcs_bytes;
  return walkBlocks(data, at, content_bytes, has_checksum);
}

/** Every block is at least 3 bytes, so the loop ends within data.length / 3 iterations. */
function walkBlocks(data: Uint8Array, start: number, content_bytes: number, has_checksum: boolean): ZstdFrameCheck {
  let at = start;
  let known_output_bytes = 0;
  for (;;) {
    if (at + 3 > data.length) return bad("zstd block header truncated");
    const block_header = data[at]! | (data[at + 1]! << 8) | (data[at + 2]! << 16);
    at += 3;
    const last = (block_header & 1) === 1;
    const block_type = (block_header >> 1) & 3;
    const block_bytes = block_header >>> 3;
    if (block_type === 3) return bad("zstd reserved block type");
    if (block_bytes > ZSTD_MAX_BLOCK_BYTES) return bad(`zstd block of ${block_bytes} bytes exceeds ${ZSTD_MAX_BLOCK_BYTES}`);
    const stored_bytes = block_type === 1 ? 1 : block_bytes;
    if (at + stored_bytes > data.length) return bad("zstd block truncated");
    at += stored_bytes;
    if (block_type !== 2) known_output_bytes += block_bytes;
    if (known_output_bytes > content_bytes) return bad("zstd blocks exceed the declared content size");
    if (last) break;
  }
  if (has_checksum) at += 4;
  if (at !== data.length) return bad(at > data.length ? "zstd checksum truncated" : "bytes after the zstd frame");
  return { ok: true, content_bytes };
}

function bad(reason: string): ZstdFrameCheck {
  return { ok: false, reason };
}
