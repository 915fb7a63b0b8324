// A primary worker (spec 3.5, 6.4): opens and locks the local component, loads metadata and
// the activemap, serves the resource over NBD and, unless `device off`, as /dev/hast/<provname>.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { ResourceConfig } from "../config/index.ts";
import { formatAddress } from "../config/index.ts";
import { ActiveMap } from "../core/activemap.ts";
import { allBits } from "../core/bitmap.ts";
import { extentCount } from "../core/layout.ts";
import { expectedBitmapBytes } from "../wire/peer/index.ts";
import { PrimaryEngine } from "../core/primary-engine.ts";
import { FLAG_COPY_INCOMPLETE, FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../core/metadata.ts";
import { EX_IOERR, ExitError } from "../core/sysexits.ts";
import { cleanupStaleDevice, createDevice, deviceWhere, type DeviceGate } from "../gate/device.ts";
import { NbdServer } from "../gate/nbd-server.ts";
import type { LocalDisk } from "../io/disk.ts";
import { MetadataStore } from "../io/metadata-store.ts";
import { WORKER_EXIT_REFUSED, type HookEvent, type VerifyAction, type WorkerStatus } from "./ipc.ts";
import { PrimaryConnector } from "./primary-connector.ts";
import { SyncRate } from "./sync-rate.ts";
import { VerifyLog } from "./verify-log.ts";
import type { Logger } from "./log.ts";
import { PrimaryIo } from "./primary-io.ts";
import { newStatistics } from "./statistics.ts";
import { openComponent, readMetadata } from "./component.ts";

/** How long an orderly stop waits for its last flush through the peer. */
const STOP_SETTLE_MS = 5_000;

export interface PrimaryParts {
  resource: ResourceConfig;
  disk: LocalDisk;
  meta: Metadata;
  map: ActiveMap;
  engine: PrimaryEngine;
  io: PrimaryIo;
  connector: PrimaryConnector;
  stats: ReturnType<typeof newStatistics>;
  nbd: NbdServer;
  device: DeviceGate | null;
  log: Logger;
}

export class PrimaryWorker {
  private constructor(private p: PrimaryParts, private readonly rate: SyncRate, private readonly verifies: VerifyLog) {}

  /** `force`: take this node's copy as the good one even if it is incomplete (acceptIncomplete).
   * `main_flush_error`: why the main process's flush of the component before this start failed. */
  static async start(
    resource: ResourceConfig, node: string, start: { force: boolean; main_flush_error: string | null; restart: boolean },
    log: Logger, emit: (event: HookEvent) => void,
  ): Promise<PrimaryWorker> {
    const { force, main_flush_error } = start;
    const disk = openComponent(resource);
    try {
      // Flushed before the twin opens: an error the start takes here is not the twin's to report.
      const own_flush_error = flushAtStart(disk);
      const store = new MetadataStore(disk, true);
      const flush_error = main_flush_error ?? own_flush_error;
      const meta = readMetadata(store, resource);
      if (flush_error !== null) lostAtStart(store, meta, flush_error, log);
      acceptIncomplete(store, meta, force, log);
      if (meta.resuid === 0n && (meta.localcnt !== 0n || meta.remotecnt !== 0n)) {
        meta.localcnt = 0n;
        meta.remotecnt = 0n;
        store.write(meta);
      }
      const map = new ActiveMap({
        datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: meta.keepdirty,
        sectorsize: disk.sector_bytes, mapsize: meta.mapsize, metaflush: resource.metaflush,
        // With a peer, a background flush runs every few seconds (PrimaryIo.backgroundFlush).
        defer_clears: resource.remote !== null,
      });
      map.copyIn(store.readMap(meta.mapsize), meta.stale?.extents);
      if (meta.stale) {
        log.warn(`${meta.stale.extents.length} extents of this node's copy are stale (a write or flush failed here that the secondary took): ` +
          "reads of them go to the secondary, and they are copied back from it once it connects.");
      }
      const stats = newStatistics();
      const engine = new PrimaryEngine(map, { resuid: meta.resuid, localcnt: meta.localcnt, remotecnt: meta.remotecnt, flags: meta.flags }, resource.replication,
        meta.stale ? { stale: meta.stale } : {});
      const rate = new SyncRate();
      const emitAndTime = (event: HookEvent) => {
        rate.onEvent(event, () => engine.syncProgress().done_bytes);
        emit(event);
      };
      const verifies = new VerifyLog();
      const io = new PrimaryIo({ disk, store, meta, engine, stats, log, emit: emitAndTime, verified: (result) => verifies.ended(result),
        verify_rate: resource.verify_rate, sync_rate: resource.sync_rate, resync_digest: resource.resync_digest,
      });
      const connector = new PrimaryConnector({ resource, node, meta, engine, io, log, emit: emitAndTime });
      // The default endpoint lives in /var/run/hast, which nothing else creates.
      if (resource.nbd.kind === "uds") mkdirSync(dirname(resource.nbd.path), { recursive: true, mode: 0o755 });
      const listen = resource.nbd.kind === "uds" ? { unix: resource.nbd.path } : { hostname: resource.nbd.host, port: resource.nbd.port };
      const nbd = await NbdServer.start({
        listen, export_name: resource.provname, description: `hast resource ${resource.name}`, backend: io,
        log: (level, msg) => (level === "debug" ? log.debug(msg) : log[level](msg)),
      });
      log.info(`Serving ${resource.provname} (${meta.datasize} bytes) at ${formatAddress(resource.nbd)}.`);
      let device: DeviceGate | null = null;
      if (resource.device) {
        const where = deviceWhere(resource, (m) => log.info(m));
        try {
          await cleanupStaleDevice(where);
          device = await createDevice({ ...where, backend: io, uri: nbd.address, size_bytes: meta.datasize, sector_bytes: disk.sector_bytes, takeover: start.restart });
          log.info(`Device ${device.path} created (${device.mechanism}).`);
        } catch (err) {
          await nbd.stop();
          throw err;
        }
      }
      connector.start();
      return new PrimaryWorker({ resource, disk, meta, map, engine, io, connector, stats, nbd, device, log }, rate, verifies);
    } catch (err) {
      disk.close();
      throw err;
    }
  }

  status(): WorkerStatus {
    const p = this.p;
    const progress = p.engine.syncProgress();
    const status: WorkerStatus = {
      status: p.io.connected ? "complete" : "degraded",
      extentsize: p.meta.extentsize,
      keepdirty: p.meta.keepdirty,
      dirty: p.map.dirtyBytes(),
      statistics: p.stats,
      device: p.device ? { path: p.device.path, mechanism: p.device.mechanism } : null,
      split_brain: p.connector.split_brain,
    };
    if (p.engine.stale_extents > 0) status.stale_extents = p.engine.stale_extents;
    if (progress.active) status.sync = this.rate.progress(progress.done_bytes, progress.pending_bytes);
    if (this.rate.last) status.last_sync = this.rate.last;
    const verify = p.engine.verifyProgress();
    if (verify) status.verify = this.verifies.progress(verify);
    if (this.verifies.last) status.last_verify = this.verifies.last;
    return status;
  }

  /** `hastctl verify [--stop | --resume | --from offset]`: null once done, else why not. */
  verify(action: VerifyAction): string | null {
    if (action.op === "stop") return this.p.io.stopVerify() ? null : "no verification is running";
    const datasize = this.p.map.datasize;
    const refused = this.p.engine.verifyRefusal() ?? (action.op === "resume" ? this.verifies.resumeRefusal()
      : action.from >= datasize ? `offset ${action.from} is not below the device's size (${datasize} bytes)` : null);
    if (refused !== null) return refused;
    const from = action.op === "resume" ? this.verifies.last!.resume_offset : action.from;
    this.verifies.started(this.p.io.verifyCompare); // before the start: a pass with nothing to compare ends within it
    this.p.io.startVerify(from);
    return null;
  }

  reload(resource: ResourceConfig): void {
    const p = this.p;
    p.resource = resource;
    p.map.setMetaflush(resource.metaflush);
    p.engine.setMode(resource.replication);
    p.io.reconfigure(resource);
    p.connector.reconfigure(resource);
    p.log.info("Configuration reloaded.");
  }

  /** SIGTERM: the device goes first (forcibly), then the endpoint, the peer link, the component. */
  async stop(): Promise<void> {
    const p = this.p;
    if (p.device) {
      await p.device.destroy();
      p.log.info(`Device ${p.device.path} destroyed.`);
    }
    await p.nbd.stop();
    await Promise.race([p.io.settleForStop(), Bun.sleep(STOP_SETTLE_MS)]);
    p.connector.stop();
    // Unbounded: a flush stuck in a dead disk holds the process in the kernel anyway.
    await p.io.localIoSettled();
    const written = p.io.writeBeforeStop();
    p.disk.flush();
    // Not an orderly end (EX_OK) then: the main process keeps what its descriptor will see.
    if (!written) throw new Error("the metadata or the activemap could not be written at stop");
    p.disk.close();
    p.log.debug(`Worker for ${p.resource.name} stopped.`);
  }
}

/**
 * The component's cache is flushed before its map and metadata are relied on: a worker killed
 * between a map write and its fdatasync left the mark in the page cache only, and this worker,
 * taking it as on the disk, would write in that extent unmarked. The main process flushed it just
 * before, through a descriptor that meets a write-back error the dead worker took; this one meets
 * an error nobody took yet. The error of a failed flush, or null.
 */
function flushAtStart(disk: LocalDisk): string | null {
  try {
    disk.flush();
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/**
 * The flush at start failed: the previous worker's writes that had not reached the disk may be gone,
 * its marks among them (Linux drops the pages; with `metaflush off` they were never flushed), so no
 * map says where. Every extent is marked, then the copy incomplete: whichever node is primary next
 * copies all of it here (acceptIncomplete refuses this copy unless forced).
 */
function lostAtStart(store: MetadataStore, meta: Metadata, flush_error: string, log: Logger): void {
  log.error(`The flush at start failed (${flush_error}): writes of the previous worker may be lost here, and no map says where. This node's copy is marked incomplete, every extent dirty.`);
  meta.flags |= FLAG_COPY_INCOMPLETE;
  try {
    store.writeMapImage(allBits(expectedBitmapBytes(meta.datasize, meta.extentsize), extentCount(meta.datasize, meta.extentsize)));
    store.write(meta);
  } catch (err) {
    throw new ExitError(`Unable to mark this node's copy incomplete after the failed flush at start: ${(err as Error).message}. ` +
      "Do not promote this node again before checking its component; bring the other node back as primary.", EX_IOERR);
  }
}

/**
 * This node's copy lacks changes the other node has (as a secondary, a synchronization toward it
 * did not finish, or a write or flush failed here since; as a primary, more extents went stale
 * than its metadata lists): serving it would mix old and new data. Refused unless forced; forced,
 * this copy becomes the good one and the next secondary gets all of it, so the two nodes cannot
 * stay different where this one is behind. Forced, listed stale extents are taken as they are
 * too (unforced, the worker copies them back from the secondary once it connects).
 */
function acceptIncomplete(store: MetadataStore, meta: Metadata, force: boolean, log: Logger): void {
  const incomplete = (meta.flags & FLAG_COPY_INCOMPLETE) !== 0;
  if (!incomplete && !(force && meta.stale)) return;
  const why = incomplete
    ? "this node's copy is incomplete: a synchronization toward it did not finish, or a write or flush failed here that the other node took"
    : `${meta.stale!.extents.length} extents of this node's copy are stale: a write or flush failed here that the other node took`;
  if (!force) {
    throw new ExitError(`Not promoted: ${why}. Bring the other node back as primary, or promote this one with hastctl role --force primary to keep its data as it is.`, WORKER_EXIT_REFUSED);
  }
  log.warn(`Promoted by force although ${why}: its data is kept as it is, and the next secondary gets a full copy of it.`);
  meta.flags = (meta.flags & ~FLAG_COPY_INCOMPLETE) | FLAG_SYNC_FULL_ON_CONNECT;
  delete meta.stale;
  store.write(meta);
}
