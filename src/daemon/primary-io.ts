// The primary's I/O path (spec 6.4, 5.2): what a frontend request does to the local component
// and the activemap. Trace of a write: writeStart marks the extent dirty and, when that changes
// the on-disk map, the map is written and flushed BEFORE the data (write-ahead dirty bit); the
// data goes to the local disk; with no peer the extent is kept for the next sync (needSync);
// writeComplete releases it. Reads are served locally.
//
// Local I/O is synchronous (src/io/disk.ts), so requests run one at a time in arrival order and
// map writes are durable in the order the activemap hands them out.
import type { ActiveMap, MapWrite } from "../core/activemap.ts";
import type { Metadata } from "../core/metadata.ts";
import type { LocalDisk } from "../io/disk.ts";
import type { MetadataStore } from "../io/metadata-store.ts";
import { BackendError, type BlockBackend } from "../gate/block-backend.ts";
import type { ResourceStatistics } from "../wire/control.ts";
import type { Logger } from "./log.ts";

const ZERO_WRITE_CHUNK_BYTES = 1024 * 1024;

export interface PrimaryIoOptions {
  disk: LocalDisk;
  store: MetadataStore;
  meta: Metadata;
  map: ActiveMap;
  stats: ResourceStatistics;
  log: Logger;
}

export class PrimaryIo implements BlockBackend {
  readonly size_bytes: number;
  readonly block_bytes: number;
  private readonly disk: LocalDisk;
  private readonly store: MetadataStore;
  private readonly meta: Metadata;
  private readonly map: ActiveMap;
  private readonly stats: ResourceStatistics;
  private readonly log: Logger;
  private readonly localoff: number;
  /** The peer's remotecnt from the last handshake (0 before any). */
  private peer_remotecnt = 0n;

  constructor(o: PrimaryIoOptions) {
    this.disk = o.disk;
    this.store = o.store;
    this.meta = o.meta;
    this.map = o.map;
    this.stats = o.stats;
    this.log = o.log;
    this.size_bytes = o.meta.datasize;
    this.block_bytes = o.disk.sector_bytes;
    this.localoff = o.meta.localoff;
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    this.stats.reads++;
    try {
      this.disk.read(into, this.localoff + offset);
    } catch (err) {
      this.stats.local_errors.read++;
      this.log.error(`Local read failed: ${(err as Error).message}`);
      throw asBackendError(err);
    }
  }

  async write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    this.stats.writes++;
    this.modify(offset, data.length, "write", () => this.disk.write(data, this.localoff + offset));
    if (fua) await this.flush();
  }

  async writeZeroes(offset: number, length: number, may_trim: boolean): Promise<void> {
    this.stats.writes++;
    this.modify(offset, length, "write", () => {
      if (may_trim) {
        this.disk.zero(this.localoff + offset, length);
        return;
      }
      const zero = new Uint8Array(Math.min(length, ZERO_WRITE_CHUNK_BYTES));
      for (let done = 0; done < length; done += zero.length) {
        this.disk.write(zero.subarray(0, Math.min(zero.length, length - done)), this.localoff + offset + done);
      }
    });
  }

  /** Unlike HAST (which never tracks deletes), a trim the peer did not get keeps its extent dirty,
   * so a resync makes both replicas byte-identical again. */
  async trim(offset: number, length: number): Promise<void> {
    this.stats.deletes++;
    this.modify(offset, length, "delete", () => this.disk.discard(this.localoff + offset, length));
  }

  async flush(): Promise<void> {
    this.stats.flushes++;
    try {
      this.disk.flush();
    } catch (err) {
      this.stats.local_errors.flush++;
      this.log.error(`Local flush failed: ${(err as Error).message}`);
      throw asBackendError(err);
    }
  }

  /** Dirty bit first, then the local change; with no peer the extent stays marked for sync. */
  private modify(offset: number, length: number, kind: "write" | "delete", local: () => void): void {
    this.applyMap(this.map.writeStart(offset, length));
    let failure: unknown = null;
    try {
      this.noteDisconnectedChange();
    } catch (err) {
      // The change must not land while the metadata does not record it: fail the request.
      failure = err;
      this.stats.local_errors.write++;
      this.log.error(`Unable to update metadata: ${(err as Error).message}`);
    }
    if (!failure) {
      try {
        local();
      } catch (err) {
        failure = err;
        this.stats.local_errors[kind]++;
        this.log.error(`Local ${kind} failed: ${(err as Error).message}`);
      }
    }
    // No peer in this build of the path: the remote leg "could not be sent" (spec 5.2 need sync).
    this.applyMap(this.map.needSync(offset, length));
    this.applyMap(this.map.writeComplete(offset, length));
    if (failure) throw asBackendError(failure);
  }

  /** Spec 4.4: the first change made while the peer cannot see it bumps localcnt, durably, so the
   * next connect knows this node has news (decision table rows 3, 5, 6). */
  private noteDisconnectedChange(): void {
    if (this.meta.localcnt !== this.peer_remotecnt) return;
    // Memory follows disk: after a failed write the next change tries the bump again.
    this.store.write({ ...this.meta, localcnt: this.meta.localcnt + 1n, prevrole: "primary" });
    this.meta.localcnt += 1n;
    this.meta.prevrole = "primary";
    this.log.debug(`First change while disconnected: localcnt is now ${this.meta.localcnt}.`);
  }

  private applyMap(write: MapWrite | null): void {
    if (!write) return;
    this.stats.activemap_updates++;
    try {
      this.store.writeMap(write.pieces, write.flush);
    } catch (err) {
      // HAST counts it and carries on; the data write that follows still gets its chance.
      this.stats.local_errors.write++;
      this.log.error(`Unable to update the activemap: ${(err as Error).message}`);
    }
  }
}

function asBackendError(err: unknown): BackendError {
  const code = (err as { code?: unknown }).code;
  return new BackendError(typeof code === "string" ? code : "EIO", (err as Error).message);
}
