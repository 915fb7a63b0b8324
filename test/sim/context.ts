// What the simulated processes share: clock, randomness, network, the run's configuration, the
// trace, the planted bug (if any), and the observer the checkers listen through.
import type { ReplicationMode } from "../../src/core/request-legs.ts";
import type { ChecksumKind, CompressionKind } from "../../src/wire/peer/types.ts";
import type { Host } from "./host.ts";
import type { Connection, Network } from "./network.ts";
import type { Rng } from "./random.ts";
import type { Scheduler } from "./scheduler.ts";

export interface SimConfig {
  resource: string;
  sector_bytes: number;
  extent_bytes: number;
  nextents: number;
  datasize: number;
  sectors: number;
  keepdirty: number;
  chunk_bytes: number;
  mode: ReplicationMode;
  checksum: ChecksumKind;
  compression: CompressionKind;
  /** A request without a reply for this long drops the link (hast.conf `timeout`). */
  timeout_ms: number;
  keepalive_ms: number;
  reconnect_ms: number;
  /** Latency of a synchronous metadata or activemap write plus flush. */
  meta_latency_ms_max: number;
  /** PrimaryEngine's changes_listed_max. */
  changes_listed_max: number;
  /** PrimaryEngine's stale_listed_max. */
  stale_listed_max: number;
  /** How often a secondary's activemap write fails (EIO, nothing written). */
  secondary_map_fail_rate: number;
  /** How often a secondary's activemap write that did not fail so fails in its flush (fdatasync):
   * with `linux_flush`, a write-back error that may drop data the map write's flush wrote back. */
  secondary_map_flush_fail_rate: number;
  /** How often a primary's activemap or metadata write fails (EIO from its pwrite, nothing written). */
  primary_control_fail_rate: number;
  /** How often one that did not so fails in its flush (fdatasync): the write may be on the disk or
   * not, and the worker takes it as a failed local flush. */
  primary_control_flush_fail_rate: number;
}

export const PLANTS = ["ack-before-map", "skip-resync-extent", "merge-split-brain", "ack-fullsync-early", "flush-not-sent"] as const;
export type Plant = (typeof PLANTS)[number];

/** Everything the checkers need to see; the simulation implements it. */
export interface Observer {
  /** A write or trim is about to reach a primary's disk; `peer_sees` is false when the link is down. */
  localModify(host: Host, peer_sees: boolean): void;
  /**
   * A change the peer does not see may be under way on `host`: a write or trim submitted while the
   * link is down (the engine bumps localcnt before the data write) or one the peer was sent but did
   * not make (bumped with the answer or at the end of the request). Until the data or the answer
   * comes, a crash may leave the bump without the change or the change without the bump.
   */
  mayDiverge(host: Host): void;
  /** A pass's final flush succeeded on both nodes: the primary's changes are all on its peer;
   * only the counters, about to be mirrored, may still tell otherwise after a crash. */
  changesOnPeer(primary: Host): void;
  /** A primary's metadata write is durable (a pass may just have mirrored the counters). */
  metadataDurable(primary: Host): void;
  /** The primary finished a handshake with the peer and its engine is connected. */
  connected(primary: Host, secondary: Host): void;
  /** The secondary refused a primary with a split-brain. */
  splitBrain(primary: Host, secondary: Host): void;
  /** The secondary refused a primary whose resuid is not its own. */
  resuidMismatch(primary: Host, secondary: Host): void;
  /** The secondary could not make a replicated write or trim (value 0) of sectors first+count. */
  secondaryModifyFailed(host: Host, first: number, count: number, value: number): void;
  /** The primary could not make its local write or trim (value 0) of sectors first+count: its
   * metadata or activemap could not be written first. */
  primaryLocalFailed(host: Host, first: number, count: number, value: number): void;
  /** A flush on the secondary failed (a FLUSH it answers with an error, or its main process's flush
   * for the cache epoch): what it had not confirmed durable may be gone, and the primary trusts none
   * of it. */
  secondaryFlushFailed(host: Host): void;
  /** The secondary made a replicated write or trim (value 0) of sectors first+count (in its cache). */
  secondaryModifyLanded(host: Host, first: number, count: number, value: number): void;
}

export interface SimContext {
  readonly clock: Scheduler;
  readonly rng: Rng;
  readonly net: Network;
  readonly cfg: SimConfig;
  readonly plant: Plant | null;
  /** Synchronizations to the secondary compare digests first (resync_digest). */
  readonly resync_digest: boolean;
  /** sync_rate and verify_rate in bytes per second, or null: the primary's timer paces its
   * synchronizations, its verifications. */
  readonly sync_rate: number | null;
  readonly verify_rate: number | null;
  readonly observer: Observer;
  trace(line: string): void;
  /** Counts an occurrence in the run's statistics (what the runs went through). */
  count(stat: "map_batches" | "own_flushes" | "stale_restarts" | "map_failures" | "primary_control_failures" | "verifications" | "verify_differ_chunks" | "sync_unchanged_chunks"): void;
  /** Opens a connection from `from` to the other node, or says why not. */
  dial(from: Host): { conn: Connection } | { refused: string };
  other(host: Host): Host;
}
