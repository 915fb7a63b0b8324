// The secondary's disk cache epoch (HANDSHAKE_REPLY, docs/protocol.md): the kernel's boot id,
// reported only after the component's cache was flushed. Two connections that see the same epoch
// know that this host did not reboot between them, and the flush that whatever its cache took
// meanwhile is on the disk now (a write-back error the kernel has not reported yet fails it). The
// primary then copies an extent it lost to a failed flush back from here even when this node had
// not confirmed the changes durable (docs/operations.md, "A failed cache flush").
import { readFileSync } from "node:fs";
import { CACHE_EPOCH_BYTES } from "../wire/peer/index.ts";
import type { LocalDisk } from "./disk.ts";

/** Linux's random id of the running kernel, fixed until the next boot. */
const BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id";

/** The boot id as CACHE_EPOCH_BYTES, or null where the system has none (FreeBSD) or it is unreadable. */
export function bootId(path = BOOT_ID_PATH): Uint8Array | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return null;
  }
  const hex = text.trim().replaceAll("-", "");
  if (!/^[0-9a-f]+$/i.test(hex) || hex.length !== CACHE_EPOCH_BYTES * 2) return null;
  return Uint8Array.from(hex.match(/../g)!, (b) => Number.parseInt(b, 16));
}

/**
 * Flushes the disk and returns the epoch; null where the system has no boot id or the flush failed
 * (`flush_error`): the primary then trusts none of this node's unconfirmed changes.
 */
export function cacheEpoch(disk: LocalDisk, boot_id = bootId()): { epoch: Uint8Array | null; flush_error: string | null } {
  if (boot_id === null) return { epoch: null, flush_error: null };
  try {
    disk.flush();
  } catch (err) {
    return { epoch: null, flush_error: (err as Error).message };
  }
  return { epoch: boot_id, flush_error: null };
}
