// The GEOM Gate receive thread (src/gate/ggate.ts): a Worker that loops on the blocking
// G_GATE_CMD_START ioctl, each time into a free slot of the shared slot pool, and tells the
// main thread which slot holds a request. It never touches the backend and never calls DONE.
// UNTESTED ON FREEBSD: written to platform.md 4.3/5.6, never run against a real /dev/ggctl.
import { native, NativeError } from "../native.ts";
import { openSlotPool, SLOT_BUSY, SLOT_FREE, type GgateWorkerInit, type GgateWorkerMessage } from "./ggate.ts";

/** How long one wait for a free slot lasts before the stop flag is looked at again. */
const FREE_SLOT_WAIT_MS = 1_000;

declare const self: Worker;

function post(message: GgateWorkerMessage): void {
  self.postMessage(message);
}

/** Claims a free slot; blocks this thread (never the main one) while every slot is busy. */
function claimSlot(pool: ReturnType<typeof openSlotPool>, init: GgateWorkerInit): number | null {
  for (;;) {
    if (Atomics.load(pool.control, 0) !== 0) return null; // stopping
    for (let slot = 0; slot < init.slot_count; slot++) {
      if (Atomics.compareExchange(pool.states, slot, SLOT_FREE, SLOT_BUSY) === SLOT_FREE) return slot;
    }
    Atomics.wait(pool.control, 1, Atomics.load(pool.control, 1), FREE_SLOT_WAIT_MS);
  }
}

function receiveLoop(init: GgateWorkerInit): void {
  const pool = openSlotPool(init);
  const ECANCELED = native.errnoValue("ECANCELED");
  const ENOMEM = native.errnoValue("ENOMEM");
  for (;;) {
    const slot = claimSlot(pool, init);
    if (slot === null) return post({ kind: "stopped", reason: "stopping" });
    let rc: number;
    try {
      rc = native.ggateStart(init.ctl_fd, init.unit, pool.io(slot), pool.data(slot));
    } catch (err) {
      Atomics.store(pool.states, slot, SLOT_FREE);
      const message = err instanceof NativeError ? err.message : String(err);
      return post({ kind: "failed", message });
    }
    if (rc === 0) {
      post({ kind: "request", slot });
      continue;
    }
    Atomics.store(pool.states, slot, SLOT_FREE);
    if (rc === ECANCELED) return post({ kind: "stopped", reason: "device destroyed" });
    // ENOMEM: a WRITE longer than a slot. Slots are MAXPHYS-sized, so the kernel broke its own bound.
    const why = rc === ENOMEM ? `a WRITE needs more than the ${init.slot_data_bytes}-byte slot` : `gctl_error ${native.errnoName(rc)}`;
    return post({ kind: "failed", message: `ggate-start ggate unit ${init.unit}: ${why}` });
  }
}

self.onmessage = (event: MessageEvent<GgateWorkerInit>) => {
  receiveLoop(event.data);
};
