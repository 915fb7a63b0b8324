// Keeps the primary connected to its secondary (spec 6.6): connect, handshake, hand the link to
// PrimaryIo, watch request timeouts, reconnect after a loss. A refusal is logged when its reason
// changes (a split-brain is reported, and hooked, on every attempt, as HAST does).
import type { ResourceConfig } from "../config/index.ts";
import { countersMoved } from "../core/connect-decision.ts";
import type { Metadata } from "../core/metadata.ts";
import { cacheEpochKey, FLAG_SYNC_FULL_ON_CONNECT } from "../core/metadata.ts";
import { SYNC_RESUME_S, type PrimaryEngine } from "../core/primary-engine.ts";
import { bunPeerPrimitives } from "../io/peer-primitives.ts";
import { expectedBitmapBytes } from "../wire/peer/index.ts";
import type { HookEvent } from "./ipc.ts";
import type { Logger } from "./log.ts";
import { primaryHandshake } from "./primary-handshake.ts";
import type { PrimaryIo } from "./primary-io.ts";

const RECONNECT_FIRST_MS = 1_000;
/** Seconds between background flushes of a connected pair (see PrimaryIo.backgroundFlush). */
const BACKGROUND_FLUSH_TICKS = 2;
/** How often a connected (or peerless) primary looks whether its link is still there. */
const LINK_POLL_MS = 1_000;

/** The longest wait between attempts: HAST's 10 s; a short `timeout` shortens it. */
export function reconnectIntervalMs(timeout_s: number): number {
  return Math.min(10_000, Math.max(1_000, (timeout_s * 1000) / 2));
}

export interface ConnectorOptions {
  resource: ResourceConfig;
  node: string;
  meta: Metadata;
  engine: PrimaryEngine;
  io: PrimaryIo;
  log: Logger;
  emit: (event: HookEvent) => void;
}

export class PrimaryConnector {
  private stopped = false;
  private wake: (() => void) | null = null;
  private last_problem = "";
  private timer: ReturnType<typeof setInterval> | null = null;
  private ticks = 0;
  split_brain = false;

  constructor(private o: ConnectorOptions) {}

  start(): void {
    if (!this.o.resource.remote) {
      this.o.log.info("No remote node configured (remote none); running degraded.");
      return;
    }
    void this.loop();
    this.timer = setInterval(() => this.checkTimeouts(), 1_000);
  }

  /** A reload changed remote/source/timeout: drop the link and reconnect with the new values. */
  reconfigure(resource: ResourceConfig): void {
    const relink = linkSettingsDiffer(resource, this.o.resource);
    this.o.resource = resource;
    if (relink) this.o.io.closeLink("configuration changed");
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.o.io.closeLink("shutting down");
    this.wake?.();
  }

  /**
   * HAST retries every 10 s. Here a lost link is retried after 1 s, then 2, 4, ... up to the
   * reconnect interval, so a peer that comes back is rejoined (and resynchronized) quickly while a
   * peer that stays away costs little.
   */
  private async loop(): Promise<void> {
    let retry_ms = RECONNECT_FIRST_MS;
    while (!this.stopped) {
      let wait_ms = LINK_POLL_MS;
      if (this.o.io.connected || !this.o.resource.remote) {
        retry_ms = RECONNECT_FIRST_MS;
      } else {
        await this.attempt();
        if (!this.o.io.connected) {
          wait_ms = retry_ms;
          retry_ms = Math.min(2 * retry_ms, reconnectIntervalMs(this.o.resource.timeout_s));
        }
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait_ms);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  private problem(message: string, level: "warn" | "error" = "warn"): void {
    if (message !== this.last_problem) this.o.log[level](message);
    else this.o.log.debug(message);
    this.last_problem = message;
  }

  /** `again`: this is the attempt made at once after one whose counters or settings went stale
   * while it connected (below). */
  private async attempt(again = false): Promise<void> {
    const { engine, meta, resource } = this.o;
    const fresh = engine.resuid_unconfirmed;
    // Claiming "virgin" tells the secondary that no copy is needed, so it is claimed only when
    // `hastctl create --initial-sync none` said so.
    const virgin = fresh && (engine.generation.flags & FLAG_SYNC_FULL_ON_CONNECT) === 0;
    const outcome = await primaryHandshake({
      resource, node: this.o.node, generation: () => engine.generation, virgin,
      datasize: meta.datasize, extentsize: meta.extentsize, prims: bunPeerPrimitives,
      // A brand-new pair's resuid is drawn once a secondary answered and proved itself (spec 4.4:
      // a primary that never reached its peer keeps none, and the roles may still be swapped), and
      // is on disk before the HANDSHAKE carries it: a secondary may adopt it from an attempt whose
      // answer is lost, or this worker may restart meanwhile, and one drawn again would not match.
      beforeHandshake: () => {
        if (engine.generation.resuid === 0n) this.o.io.apply(engine.setResuid(randomResuid()));
        return this.o.io.metadataWritten() ? null : "the metadata (resuid and counters) could not be written";
      },
    });
    if (this.stopped) {
      if (outcome.kind === "connected") outcome.link.close("shutting down");
      return;
    }
    if (outcome.kind === "failed") return this.problem(`Unable to connect to ${resource.remote_text}: ${outcome.reason}`);
    if (outcome.kind === "refused") {
      const e = outcome.error;
      if (!outcome.authenticated) {
        // Not proved to be the peer: nothing it says is acted on (a split-brain claim would stop
        // failover scripts), it is only reported.
        return this.problem(`${resource.remote_text} refused the connection before authenticating (${e.code}): ${e.message}`,
          e.code === "NOT_SECONDARY" ? "warn" : "error");
      }
      if (e.code === "SPLIT_BRAIN") {
        this.split_brain = true;
        this.problem(`Split-brain detected with ${resource.remote_text}: both nodes changed data while apart. Recovery: docs/operations.md.`, "error");
        this.o.emit("split-brain");
        return;
      }
      return this.problem(`${resource.remote_text} refused the connection (${e.code}): ${e.message}`, e.code === "NOT_SECONDARY" ? "warn" : "error");
    }
    const { link, reply, bitmap, sent } = outcome;
    if (linkSettingsDiffer(this.o.resource, resource)) {
      // A reload changed how to connect while this attempt was under way (reconfigure had no link
      // to drop yet): this one used the old settings.
      link.close("configuration changed");
      return again ? undefined : this.attempt(true);
    }
    if (countersMoved(sent, engine.generation)) {
      link.close("this node's counters changed during the handshake");
      this.o.log.info(`This node changed data while connecting to ${resource.remote_text}; connecting again so that the decision counts it.`);
      // At most once in a row: the counters change once per disconnection.
      return again ? undefined : this.attempt(true);
    }
    this.split_brain = false;
    this.last_problem = "";
    const actions = engine.confirmResuid();
    const peer_map = bitmap.length > 0 ? bitmap : new Uint8Array(expectedBitmapBytes(meta.datasize, meta.extentsize));
    if (reply.syncsrc === "none") {
      link.close("secondary sent no sync direction");
      return this.problem(`${resource.remote_text} answered the handshake without a sync direction.`, "error");
    }
    actions.push(...engine.connect({
      syncsrc: reply.syncsrc, peer_localcnt: reply.localcnt, peer_remotecnt: reply.remotecnt, peer_map, virgin: reply.virgin,
      peer_cache_epoch: cacheEpochKey(reply.cache_epoch),
    }));
    this.o.log.info(`Connected to ${resource.remote_text} (${link.remote}), sync source: ${reply.syncsrc}.`);
    this.o.emit("connect");
    link.startTimers({ keepalive_ms: reconnectIntervalMs(resource.timeout_s), idle_receive_ms: 0 });
    this.o.io.attach(link, outcome.version, actions);
  }

  /** Spec 6.6: a request without a reply for `timeout` seconds drops the connection. */
  private checkTimeouts(): void {
    if (++this.ticks % BACKGROUND_FLUSH_TICKS === 0) this.o.io.backgroundFlush();
    if (this.ticks % SYNC_RESUME_S === 0) this.o.io.resumeSync();
    const oldest = this.o.io.oldestRemoteMs();
    const limit_ms = this.o.resource.timeout_s * 1000;
    if (oldest !== null && Date.now() - oldest > limit_ms) {
      this.o.io.closeLink(`no reply from the secondary for ${this.o.resource.timeout_s} s`);
    }
  }
}

/** Settings the link was made with: a change needs a new connection. */
function linkSettingsDiffer(a: ResourceConfig, b: ResourceConfig): boolean {
  return JSON.stringify([a.remote, a.source, a.secret, a.checksum, a.compression]) !== JSON.stringify([b.remote, b.source, b.secret, b.checksum, b.compression]);
}

function randomResuid(): bigint {
  for (;;) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    const value = new DataView(bytes.buffer).getBigUint64(0, true);
    if (value !== 0n) return value;
  }
}
