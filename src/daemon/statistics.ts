// Per-worker counters shown by hastctl list/status; they reset when the worker restarts.
import type { ResourceStatistics } from "../wire/control.ts";

export function newStatistics(): ResourceStatistics {
  return {
    reads: 0, writes: 0, deletes: 0, flushes: 0, activemap_updates: 0, direct_bytes: 0, sync_unchanged_bytes: 0,
    local_errors: { read: 0, write: 0, delete: 0, flush: 0 },
  };
}
