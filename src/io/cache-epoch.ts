// The secondary's disk cache epoch (HANDSHAKE_REPLY, docs/protocol.md): a random id that the main
// hastd process keeps for a resource's component and hands to each secondary worker once the
// component's cache was flushed. Two connections that see the same epoch know that every write-back
// error the component took between them failed a flush the primary was told of (so the primary
// copies again what that flush covered). The primary then copies an extent it lost to a failed
// flush back from here even when this node had not confirmed the changes durable
// (docs/operations.md, "A failed cache flush").
//
// Linux reports a write-back error to one fsync per open file (errseq). A worker whose FLUSH took
// one and whose answer was lost with the link, or that was killed inside fdatasync, leaves the next
// worker's descriptor none the wiser: its flush succeeds. The main process keeps one descriptor
// open across workers, so its flush here sees every such error since its last one. The id is
// drawn anew when that flush fails, when a worker (primary or secondary) reports a failed flush
// (spoil: a disk cache flush error is not kept for other files), and when the descriptor is opened
// (hastd started, resource removed and added again, component replaced). It lasts across role
// changes: what a primary worker wrote meanwhile either reached the disk, or failed a flush that
// the main process's descriptor or the worker's report tells of. Elsewhere (FreeBSD) there is no
// epoch: the primary then trusts none of the secondary's unconfirmed changes.
import { statSync } from "node:fs";
import { CACHE_EPOCH_BYTES } from "../wire/peer/index.ts";
import { LocalDisk } from "./disk.ts";

export interface EpochAnswer {
  /** null: the primary trusts none of this node's unconfirmed changes. */
  epoch: Uint8Array | null;
  /** Why the flush failed, or null. */
  flush_error: string | null;
}

export class CacheEpoch {
  #held: { disk: LocalDisk; path: string; dev: bigint; ino: bigint } | null = null;
  #id: Uint8Array | null = null;
  /** One flush at a time: a flush that succeeds while another takes the error must not hand out
   * the id that error ends. */
  #turn: Promise<unknown> = Promise.resolve();

  /** `supported`: the system reports write-back errors to every open file (Linux since 4.13). */
  constructor(private readonly supported = process.platform === "linux") {}

  /** Flushes the component at `path` and answers with the epoch (null when the flush failed). */
  take(path: string): Promise<EpochAnswer> {
    const answer = this.#turn.then(() => this.#take(path));
    this.#turn = answer.catch(() => undefined);
    return answer;
  }

  /** A worker's flush of the component failed: no epoch handed out so far matches a later one. */
  spoil(): void {
    this.#id = null;
  }

  /** The descriptor goes (hastd stops, the resource is removed); the next take opens a new id. */
  close(): Promise<void> {
    const closed = this.#turn.then(() => this.#close());
    this.#turn = closed.catch(() => undefined);
    return closed;
  }

  async #take(path: string): Promise<EpochAnswer> {
    if (!this.supported) return { epoch: null, flush_error: null };
    try {
      this.#open(path);
      await this.#held!.disk.flushAsync();
    } catch (err) {
      this.#id = null;
      return { epoch: null, flush_error: (err as Error).message };
    }
    this.#id ??= crypto.getRandomValues(new Uint8Array(CACHE_EPOCH_BYTES));
    return { epoch: this.#id.slice(), flush_error: null };
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
    held?.disk.close();
  }
}
