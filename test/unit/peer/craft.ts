// Builders for hostile input: valid frames with one field changed and checksums fixed up, so the
// decoder's deeper checks are reached.
import { crc32c } from "../../../src/core/crc32c.ts";
import { HEADER_BYTES } from "../../../src/wire/peer/constants.ts";

export const OFF = { magic: 0, format: 4, type: 5, flags: 6, seq: 8, offset: 16, length: 24, payload: 32, error: 36, reserved: 38 } as const;

/** Copy of `frame` with its header changed by `edit`, header CRC recomputed. */
export function editHeader(frame: Uint8Array, edit: (view: DataView) => void): Uint8Array {
  const out = frame.slice();
  const view = new DataView(out.buffer);
  edit(view);
  view.setUint32(HEADER_BYTES - 4, crc32c(out.subarray(0, HEADER_BYTES - 4)), true);
  return out;
}

/** Control frame with body replaced: payload length, body CRC and header CRC recomputed. */
export function withBody(frame: Uint8Array, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + body.length + 4);
  out.set(frame.subarray(0, HEADER_BYTES));
  out.set(body, HEADER_BYTES);
  new DataView(out.buffer).setUint32(HEADER_BYTES + body.length, crc32c(body), true);
  return editHeader(out, (v) => v.setUint32(OFF.payload, body.length + 4, true));
}

export function bodyOf(frame: Uint8Array): Uint8Array {
  return frame.slice(HEADER_BYTES, frame.length - 4);
}

/** A zstd frame of RLE blocks (128 KiB of 'A' each); `declared` = content size field or null for none. */
export function zstdRleFrame(blocks: number, declared: number | null): Uint8Array {
  const bytes: number[] = [0x28, 0xb5, 0x2f, 0xfd];
  if (declared === null) bytes.push(0x00, 0x50);
  else bytes.push(0xa0, declared & 0xff, (declared >>> 8) & 0xff, (declared >>> 16) & 0xff, (declared >>> 24) & 0xff);
  for (let i = 0; i < blocks; i++) {
    const header = (i === blocks - 1 ? 1 : 0) | (1 << 1) | ((128 * 1024) << 3);
    bytes.push(header & 0xff, (header >>> 8) & 0xff, (header >>> 16) & 0xff, 0x41);
  }
  return new Uint8Array(bytes);
}
