// Bun implementation of the peer codec's primitives (src/wire/peer stays free of Bun APIs).
import { native } from "../native.ts";
import { isAllZero } from "../wire/peer/payload.ts";
import type { PeerPrimitives } from "../wire/peer/types.ts";
import { inspectZstdFrame } from "../wire/peer/zstd-frame.ts";

/** Fast level: replication is latency-bound; zstd level 1 still removes most redundancy. */
const ZSTD_LEVEL = 1;
/** From this size the hole check is native (memcmp, ~8x the JavaScript loop on a MiB of zeroes);
 * below it the call would cost more than the loop, which stops at the first non-zero word. */
const NATIVE_ZERO_CHECK_MIN_BYTES = 64 * 1024;

export const bunPeerPrimitives: PeerPrimitives = {
  crc32: (data) => Bun.hash.crc32(data) >>> 0,
  sha256: (data) => bytes(new Bun.CryptoHasher("sha256").update(data).digest()),
  hmacSha256: (key, data) => bytes(new Bun.CryptoHasher("sha256", key).update(data).digest()),
  zstdCompress: (data) => bytes(Bun.zstdCompressSync(data, { level: ZSTD_LEVEL })),
  zstdDecompress(data, max_bytes) {
    // Bun decompresses frames without a declared size (or several frames) to any length, so the
    // frame is checked first; with one frame and a declared size, libzstd enforces that size.
    const check = inspectZstdFrame(data);
    if (!check.ok) throw new Error(check.reason);
    if (check.content_bytes > max_bytes) throw new Error(`zstd content of ${check.content_bytes} bytes exceeds ${max_bytes}`);
    const out = Bun.zstdDecompressSync(data);
    if (out.length !== check.content_bytes) throw new Error(`zstd produced ${out.length} bytes, frame declares ${check.content_bytes}`);
    return bytes(out);
  },
  randomBytes: (n) => crypto.getRandomValues(new Uint8Array(n)),
  isZero: (data) => (data.length >= NATIVE_ZERO_CHECK_MIN_BYTES ? native.isZero(data) : isAllZero(data)),
};

/** Plain Uint8Array view of a Buffer (no copy). */
function bytes(buffer: Uint8Array): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
