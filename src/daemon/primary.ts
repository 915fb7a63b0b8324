// A primary worker (spec 3.5, 6.4): opens and locks the local component, loads metadata and
// the activemap, serves the resource over NBD and, unless `device off`, as /dev/hast/<provname>.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import type { ResourceConfig } from "../config/index.ts";
import { formatAddress } from "../config/index.ts";
import { ActiveMap } from "../core/activemap.ts";
import { MetadataError, type Metadata } from "../core/metadata.ts";
import { EX_CONFIG, EX_NOINPUT, ExitError } from "../core/sysexits.ts";
import { cleanupStaleDevice, createDevice, devdir, type DeviceGate } from "../gate/device.ts";
import { NbdServer } from "../gate/nbd-server.ts";
import { LocalDisk } from "../io/disk.ts";
import { MetadataStore } from "../io/metadata-store.ts";
import type { WorkerStatus } from "./ipc.ts";
import type { Logger } from "./log.ts";
import { PrimaryIo } from "./primary-io.ts";
import { newStatistics } from "./statistics.ts";

const DEFAULT_RUNDIR = "/var/run/hast";

export class PrimaryWorker {
  private constructor(
    private resource: ResourceConfig,
    private disk: LocalDisk,
    private meta: Metadata,
    private map: ActiveMap,
    private stats: ReturnType<typeof newStatistics>,
    private nbd: NbdServer,
    private device: DeviceGate | null,
    private log: Logger,
  ) {}

  static async start(resource: ResourceConfig, log: Logger): Promise<PrimaryWorker> {
    const disk = openComponent(resource);
    try {
      const store = new MetadataStore(disk);
      const meta = readMetadata(store, resource);
      if (meta.resuid === 0n && (meta.localcnt !== 0n || meta.remotecnt !== 0n)) {
        meta.localcnt = 0n;
        meta.remotecnt = 0n;
        store.write(meta);
      }
      const map = new ActiveMap({
        datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: meta.keepdirty,
        sectorsize: disk.sector_bytes, mapsize: meta.mapsize, metaflush: resource.metaflush,
      });
      map.copyIn(store.readMap(meta.mapsize));
      const stats = newStatistics();
      const io = new PrimaryIo({ disk, store, meta, map, stats, log });
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
        const rundir = resource.nbd.kind === "uds" ? dirname(resource.nbd.path) : DEFAULT_RUNDIR;
        const where = { provname: resource.provname, rundir, devdir: devdir(), log: (m: string) => log.info(m) };
        try {
          await cleanupStaleDevice(where);
          device = await createDevice({ ...where, uri: nbd.address, size_bytes: meta.datasize, sector_bytes: disk.sector_bytes });
          log.info(`Device ${device.path} created (${device.mechanism}).`);
        } catch (err) {
          await nbd.stop();
          throw err;
        }
      }
      return new PrimaryWorker(resource, disk, meta, map, stats, nbd, device, log);
    } catch (err) {
      disk.close();
      throw err;
    }
  }

  status(): WorkerStatus {
    return {
      status: "degraded",
      extentsize: this.meta.extentsize,
      keepdirty: this.meta.keepdirty,
      dirty: this.map.dirtyBytes(),
      statistics: this.stats,
      device: this.device ? { path: this.device.path, mechanism: this.device.mechanism } : null,
    };
  }

  reload(resource: ResourceConfig): void {
    this.resource = resource;
    this.map.setMetaflush(resource.metaflush);
    this.log.info("Configuration reloaded.");
  }

  /** SIGTERM: the device goes first (forcibly), then the endpoint, then the component. */
  async stop(): Promise<void> {
    if (this.device) {
      await this.device.destroy();
      this.log.info(`Device ${this.device.path} destroyed.`);
    }
    await this.nbd.stop();
    this.disk.flush();
    this.disk.close();
    this.log.debug(`Worker for ${this.resource.name} stopped.`);
  }
}

function openComponent(resource: ResourceConfig): LocalDisk {
  try {
    return LocalDisk.open(resource.localpath, { write: true, lock: true });
  } catch (err) {
    throw new ExitError(`Unable to open local component ${resource.localpath}: ${(err as Error).message}`, EX_NOINPUT);
  }
}

function readMetadata(store: MetadataStore, resource: ResourceConfig): Metadata {
  try {
    const read = store.read();
    if (read.meta.resource !== resource.name) {
      throw new ExitError(`Provider ${resource.localpath} is not part of resource ${resource.name} (metadata names ${read.meta.resource}).`, EX_CONFIG);
    }
    return read.meta;
  } catch (err) {
    if (err instanceof MetadataError) {
      throw new ExitError(`Unable to read metadata from ${resource.localpath}: ${err.message}`, EX_NOINPUT);
    }
    throw err;
  }
}
