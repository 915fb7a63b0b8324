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
// The main process serves every resource and the control socket: it waits on this component only
// on helper threads (stat, open, fdatasync, close), each given up after a while, one at a time.
//
// Elsewhere (FreeBSD) nothing is held: no epoch, and the primary trusts none of the secondary's
// unconfirmed changes.
import { stat } from "node:fs/promises";
import { CACHE_EPOCH_BYTES } from "../wire/peer/index.ts";
import { LocalDisk } from "./disk.ts";

export interface FlushAnswer {
  /** The cache epoch; null when the flush failed (the primary then trusts none of this node's
   * unconfirmed changes) or where nothing is held. */
  epoch: Uint8Array | null;
  /** Why the flush failed, or null. */
  flush_error: string | null;
}

/** How long a flush through the held descriptor (or the stat and open before it) may take before
 * it counts as failed (a hung disk must not hold role changes and shutdown forever; a large cache
 * on a slow disk may take a while). */
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
  /** The helper-thread call on this component (what it is) until it ends, given up on or not: no
   * other starts meanwhile (a hung disk holds one helper thread of the main process, not all). */
  #in_flight: string | null = null;

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
      const disk = await this.#open(path, wait_ms);
      await this.#pooled(`fdatasync ${path}`, wait_ms, () => disk.flushAsync(), (late) => {
        if (late instanceof Error) this.#failed(late.message);
      });
    } catch (err) {
      const error = (err as Error).message;
      this.#failed(error);
      return { epoch: null, flush_error: error };
    }
    this.#id ??= crypto.getRandomValues(new Uint8Array(CACHE_EPOCH_BYTES));
    return { epoch: this.#id.slice(), flush_error: null };
  }

  async #absorb(): Promise<void> {
    const held = this.#held;
    if (!held) return;
    try {
      await this.#pooled(`fdatasync ${held.path}`, HELD_FLUSH_WAIT_MS, () => held.disk.flushAsync());
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
   * `call` on a helper thread, failed once `wait_ms` passed. It goes on meanwhile, and no other
   * starts before it ends; `late` hears of its outcome if it comes after it was given up on.
   */
  async #pooled<T>(what: string, wait_ms: number, call: () => Promise<T>, late?: (outcome: Error | T) => void): Promise<T> {
    if (this.#in_flight !== null) throw new Error(`${this.#in_flight}: still running from an earlier call`);
    let given_up = false;
    const running = call();
    this.#in_flight = what;
    void running.then((v) => {
      if (given_up) late?.(v);
    }, (err: Error) => {
      if (given_up) late?.(err);
    }).finally(() => {
      this.#in_flight = null;
    });
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        given_up = true;
        reject(new Error(`${what}: not done after ${wait_ms / 1000} s`));
      }, wait_ms);
    });
    try {
      return await Promise.race([running, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The held descriptor of the component now at `path`: kept while it is the same file. */
  async #open(path: string, wait_ms: number): Promise<LocalDisk> {
    const st = await this.#pooled(`stat ${path}`, wait_ms, () => stat(path, { bigint: true }));
    const held = this.#held;
    if (held && held.path === path && held.dev === st.dev && held.ino === st.ino) return held.disk;
    await this.#close();
    // An open given up on closes what it opens in the end.
    const disk = await this.#pooled(`open ${path}`, wait_ms, () => LocalDisk.openReadAsync(path), (late) => {
      if (late instanceof LocalDisk) void late.closeAsync().catch(() => undefined);
    });
    this.#held = { disk, path, dev: st.dev, ino: st.ino };
    return disk;
  }

  async #close(): Promise<void> {
    this.#id = null;
    const held = this.#held;
    this.#held = null;
    if (!held) return;
    try {
      await this.#pooled(`close ${held.path}`, HELD_FLUSH_WAIT_MS, () => held.disk.closeAsync());
    } catch {
      // A call stuck in the kernel still uses the descriptor, or the close itself hangs: it stays.
    }
  }
}
