// When a replicated request may be answered, and when it is finished (spec 9, 6.4).
// Every write, delete and flush has a local leg and a remote leg. The answer to the application
// ("ack") and the end of the request ("final": the activemap may let go of the extent) are
// separate moments: memsync and async answer before the peer has the data on disk.
//
// Differences from FreeBSD, both on the safe side:
// - a request whose local leg failed is answered only when the peer's disk write is done
//   (HAST may answer on the peer's early "received" in memsync);
// - a remote leg that fails after it was sent keeps the extent dirty (sharp edge 17): the
//   caller sees `remote_ok: false` at final and marks the range for resync.
import { assert } from "./assert.ts";

export type ReplicationMode = "fullsync" | "memsync" | "async";

export type RemoteLeg = "pending" | "received" | "ok" | "failed" | "unsent";

export interface Ack {
  ok: boolean;
  /** The leg whose error is reported when both failed (spec 6.4: the local one). */
  error_from: "local" | "remote" | null;
}

export interface Final {
  local_ok: boolean;
  remote_ok: boolean;
}

export interface LegOutcome {
  ack?: Ack;
  final?: Final;
}

export class RequestLegs {
  private local: "pending" | "ok" | "failed" = "pending";
  private remote: RemoteLeg;
  private acked = false;
  private local_lost = false;
  private finished = false;

  /**
   * sent: the remote leg went out on a live connection; otherwise it failed before sending.
   * remote_required: only the peer's copy counts (the primary is being synchronized from the
   * secondary, so its own copy of the extent is not authoritative): answered once the peer's disk
   * write is done, and ok only if it succeeded.
   */
  constructor(
    readonly mode: ReplicationMode,
    sent: boolean,
    readonly remote_required = false,
  ) {
    this.remote = sent ? "pending" : "unsent";
  }

  get remote_state(): RemoteLeg {
    return this.remote;
  }

  localDone(ok: boolean): LegOutcome {
    assert(this.local === "pending", "local leg completed twice");
    this.local = ok ? "ok" : "failed";
    return this.settle();
  }

  /**
   * A flush of the local disk failed after this leg succeeded: its data may have been dropped, so
   * it counts as failed (the answer, if not given yet, then waits for the peer's leg).
   */
  localLost(): void {
    if (this.local !== "ok" || this.finished) return;
    this.local = "failed";
    this.local_lost = true;
  }

  /** The local leg wrote, but a failed flush may have dropped what it wrote (localLost). */
  get local_written_maybe(): boolean {
    return this.local_lost;
  }

  /** memsync early acknowledgement: the peer holds the data in memory. */
  remoteReceived(): LegOutcome {
    assert(this.remote === "pending", () => `early ack on a remote leg in state ${this.remote}`);
    this.remote = "received";
    return this.settle();
  }

  remoteDone(ok: boolean): LegOutcome {
    assert(this.remote === "pending" || this.remote === "received", () => `remote leg completed in state ${this.remote}`);
    this.remote = ok ? "ok" : "failed";
    return this.settle();
  }

  private remoteFinal(): boolean {
    return this.remote === "ok" || this.remote === "failed" || this.remote === "unsent";
  }

  private ackReady(): boolean {
    if (this.local === "pending") return false;
    if (this.local === "failed" || this.remote_required) return this.remoteFinal();
    switch (this.mode) {
      case "async":
        return true;
      case "memsync":
        return this.remote !== "pending";
      case "fullsync":
        return this.remoteFinal();
    }
  }

  private settle(): LegOutcome {
    const out: LegOutcome = {};
    if (!this.acked && this.ackReady()) {
      this.acked = true;
      const remote_ok = this.remote === "ok" || this.remote === "received";
      const ok = this.remote_required ? this.remote === "ok" : this.local === "ok" || remote_ok;
      out.ack = { ok, error_from: ok ? null : "local" };
    }
    if (!this.finished && this.local !== "pending" && this.remoteFinal()) {
      assert(this.acked, "request finished before it was answered");
      this.finished = true;
      out.final = { local_ok: this.local === "ok", remote_ok: this.remote === "ok" };
    }
    return out;
  }
}
