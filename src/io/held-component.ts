// The main hastd process's descriptor of a resource's component, held across its workers.
// Linux reports a write-back error to one fsync per open file (errseq): a worker that took one
// and died before it acted on it (killed inside fdatasync, or its FLUSH's EIO answer lost with the
// link) leaves the next worker's own descriptor none the wiser, and its flush succeeds. A flush
// through this descriptor meets every such error since its last one. The main process flushes
// through it before it starts any worker that relies on what the disk holds:
//
// - a primary worker (primary.ts flushAtStart): a failed flush marks this node's copy incomplete;
// - a secondary worker, whose HANDSHAKE_REPLY names the disk cache epoch (docs/protocol.md): a
//   random id kept here, drawn anew when the descriptor is opened (hastd started, the component
//   replaced) and after a failed flush (which answers
//   none). Two connections that see the same epoch know that the secondary's cache lasted between
//   them: any write-back error since was acted on by a worker that lived on (it keeps what that
//   flush covered marked), or fails this flush. The primary then copies an extent it lost to a
//   failed flush back from the secondary even when that node had not confirmed the changes
//   durable (docs/operations.md, "A failed cache flush").
//
// Elsewhere (FreeBSD) nothing is held: no epoch, and the primary trusts none of the secondary's
// unconfirmed changes.
import { statSync } from "node:fs";
import { CACHE_EPOCH_BYTES } from "../wire/peer/index.ts";
import { LocalDisk } from "./disk.ts";

export interface FlushAnswer {
  /** The cache epoch; null when the flush failed (the primary then trusts none of this node's
   * unconfirmed changes) or where nothing is held. */
  epoch: Uint8Array | null;
  /** Why the flush failed, or null. */
  flush_error: string | null;
}

/** How long a flush through the held descriptor may take before it counts as failed (a hung disk
 * must not hold role changes and shutdown forever; a large cache on a slow disk may take a while). */
export const HELD_FLUSH_WAIT_MS = 120_000;

/** A failed flush no primary worker has acted on yet (HeldComponent.acted). */
export interface Unacted {
  readonly error: string;
}

export class HeldComponent {
  #held: { disk: LocalDisk; path: string; dev: bigint; ino: bigint } | null = null;
  #id: Uint8Array | null = null;
  /** The error this descriptor took is gone from the kernel once taken: it is kept here until a
   * primary worker marked its copy incomplete for it, whatever ends the workers in between. */
  #unacted: Unacted | null = null;
  /** One flush at a time: a flush that succeeds while another takes the error must not hand out
   * the id that error ends. */
  #turn: Promise<unknown> = Promise.resolve();
  /** The descriptor's fdatasync until it ends, given up on or not: no other starts meanwhile. */
  #in_flight: Promise<void> | null = null;

  /** `supported`: the system reports write-back errors to every open file (Linux since 4.13). */
  constructor(private readonly supported = process.platform === "linux") {}

  /** Flushes the component at `path` (opened first if need be) and answers with the epoch. */
  flush(path: string, wait_ms = HELD_FLUSH_WAIT_MS): Promise<FlushAnswer> {
    return this.#inTurn(() => this.#flush(path, wait_ms));
  }

  /**
   * A worker ended in order, its last flush successful: it saw every write-back error until then
   * through its own descriptor and acted on it. This descriptor takes them too (a flush, its result
   * dropped, the epoch kept), so the next flush reports only what came after; a worker that
   * handled a failed flush does not make the next start or epoch fail.
   */
  absorb(): Promise<void> {
    return this.#inTurn(() => this.#absorb());
  }

  /** The descriptor goes (hastd stops, the resource is removed); the next flush opens a new id. */
  close(): Promise<void> {
    return this.#inTurn(() => this.#close());
  }

  /** Runs `step` after every step queued before it (#turn). */
  #inTurn<T>(step: () => T | Promise<T>): Promise<T> {
    const done = this.#turn.then(step);
    this.#turn = done.catch(() => undefined);
    return done;
  }

  /** A flush failed here that no primary worker has acted on yet, or null. */
  get unacted(): Unacted | null {
    return this.#unacted;
  }

  /** A primary worker started on `unacted` marked its copy incomplete (or was forced past it). */
  acted(unacted: Unacted): void {
    if (this.#unacted === unacted) this.#unacted = null;
  }

  async #flush(path: string, wait_ms: number): Promise<FlushAnswer> {
    if (!this.supported) return { epoch: null, flush_error: null };
    try {
      this.#open(path);
      await this.#flushWithin(this.#held!.disk, wait_ms, (late) => this.#failed(late));
    } catch (err) {
      const error = (err as Error).message;
      this.#failed(error);
      return { epoch: null, flush_error: error };
    }
    this.#id ??= crypto.getRandomValues(new Uint8Array(CACHE_EPOCH_BYTES));
    return { epoch: this.#id.slice(), flush_error: null };
  }

  async #absorb(): Promise<void> {
    if (!this.#held) return;
    try {
      await this.#flushWithin(this.#held.disk, HELD_FLUSH_WAIT_MS);
    } catch {
      // What it reports, the worker saw before its own last flush succeeded. One not done in time
      // fails the flushes that come while it runs (conservative).
    }
  }

  #failed(error: string): void {
    this.#id = null;
    this.#unacted = { error };
  }

  /**
   * The disk's flush, failed once `wait_ms` passed. It goes on in the kernel meanwhile, and no
   * other starts on this descriptor before it ends (a hung disk holds one helper thread of the main
   * process, not all of them); `late` hears of it if it fails after it was given up on.
   */
  async #flushWithin(disk: LocalDisk, wait_ms: number, late?: (error: string) => void): Promise<void> {
    if (this.#in_flight) throw new Error(`fdatasync ${disk.path}: an earlier one is not done yet`);
    let given_up = false;
    const flushing = disk.flushAsync();
    this.#in_flight = flushing.then(() => undefined, (err: Error) => {
      if (given_up) late?.(err.message);
    }).finally(() => {
      this.#in_flight = null;
    });
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        given_up = true;
        reject(new Error(`fdatasync ${disk.path}: not done after ${wait_ms / 1000} s`));
      }, wait_ms);
    });
    try {
      await Promise.race([flushing, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #open(path: string): void {
    const st = statSync(path, { bigint: true });
    const held = this.#held;
    if (held && held.path === path && held.dev === st.dev && held.ino === st.ino) return;
    this.#close();
    this.#held = { disk: LocalDisk.open(path, { write: false }), path, dev: st.dev, ino: st.ino };
  }

  #close(): void {
    this.#id = null;
    const held = this.#held;
    this.#held = null;
    try {
      held?.disk.close();
    } catch {
      // A flush stuck in the kernel still uses the descriptor: it stays open.
    }
  }
}
