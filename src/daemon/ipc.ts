// Messages between the main hastd process and a resource worker (Bun IPC, structured clone).
// The main process owns roles, hooks and the control socket; a worker owns one resource's I/O.
import type { ResourceConfig, Role } from "../config/index.ts";
import type { EventName, ResourceStatus } from "../wire/control.ts";
import type { FlushAnswer } from "../io/held-component.ts";
import type { Handshake } from "../wire/peer/index.ts";

/** The events a worker raises; the main process raises `role` itself. */
export type HookEvent = Exclude<EventName, "role" | "copy">;

export interface LogSetup {
  verbosity: number;
  sink: { kind: "stderr" } | { kind: "file"; path: string } | { kind: "syslog" };
}

export type ToWorker =
  | {
      type: "init"; resource: ResourceConfig; node: string; log: LogSetup;
      role: Exclude<Role, "init">;
      /** A secondary starts with the primary's HANDSHAKE (the main process checked everything before
       * it) and the peer protocol version the listener negotiated with that primary. */
      peer?: SecondaryPeer;
      /** A primary promoted with `hastctl role --force`. */
      force?: boolean;
      /** A primary: why the main process's flush of the component before this start failed
       * (held-component.ts), or null. */
      start_flush_error?: string | null;
      /** A primary restarted within the same primary period: a GEOM Gate device its predecessor left
       * is taken over with the requests queued on it; in a new period it is destroyed first. */
      restart?: boolean;
    }
  | { type: "status"; id: number }
  /** Start, end, or go on with an online verification; answered with a "verify" message. */
  | { type: "verify"; id: number; action: VerifyAction }
  | { type: "reload"; resource: ResourceConfig };

/** `hastctl verify` (start, at `from`: 0, or `--from`), `--stop`, `--resume`. */
export type VerifyAction = { op: "start"; from: number } | { op: "stop" } | { op: "resume" };

export interface SecondaryPeer {
  handshake: Handshake;
  protocol_version: number;
  /** The main process's flush for this connection, with the cache epoch (null below
   * VERSION_CACHE_EPOCH). */
  cache: FlushAnswer | null;
}

/** Live fields a worker adds to the main process's configuration view of a resource. */
export type WorkerStatus = Pick<ResourceStatus,
  "status" | "extentsize" | "keepdirty" | "dirty" | "statistics" | "device" | "sync" | "last_sync" | "split_brain" | "stale_extents" | "verify" | "last_verify">;

export type FromWorker =
  | { type: "ready" }
  | { type: "status"; id: number; status: WorkerStatus }
  /** `refused`: why the verification request was not carried out, or null. */
  | { type: "verify"; id: number; refused: string | null }
  | { type: "event"; event: HookEvent; args?: string[] }
  /** A secondary's copy state (FLAG_COPY_INCOMPLETE), at its start and at each change. */
  | { type: "copy"; complete: boolean };

/** Exit code a worker uses to ask for a restart (spec 3.7: killed by a signal or EX_TEMPFAIL). */
export { EX_TEMPFAIL as WORKER_EXIT_RESTART } from "../core/sysexits.ts";
/** Exit code of a primary worker that refused to serve this node's copy (it is incomplete). */
export { EX_NOPERM as WORKER_EXIT_REFUSED } from "../core/sysexits.ts";
