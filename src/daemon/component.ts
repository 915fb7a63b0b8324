// Opening a resource's local component in a worker: locked, with its metadata checked against
// the configuration. Shared by the primary and the secondary.
import type { ResourceConfig } from "../config/index.ts";
import { MetadataError, type Metadata } from "../core/metadata.ts";
import { EX_CONFIG, EX_DATAERR, EX_IOERR, EX_NOINPUT, ExitError } from "../core/sysexits.ts";
import { LocalDisk } from "../io/disk.ts";
import { NativeError } from "../native.ts";
import type { MetadataStore } from "../io/metadata-store.ts";

export function openComponent(resource: ResourceConfig): LocalDisk {
  try {
    return LocalDisk.open(resource.localpath, { write: true, lock: true });
  } catch (err) {
    throw new ExitError(`Unable to open local component ${resource.localpath}: ${(err as Error).message}`, EX_NOINPUT);
  }
}

export function readMetadata(store: MetadataStore, resource: ResourceConfig): Metadata {
  try {
    const read = store.read();
    const meta = read.meta;
    if (meta.resource !== resource.name) {
      throw new ExitError(`Provider ${resource.localpath} is not part of resource ${resource.name} (metadata names ${meta.resource}).`, EX_CONFIG);
    }
    // The component shrank since `create`, or moved to a disk of larger sectors: serving would
    // turn every access past the end into a local I/O error, or break the map's alignment.
    const disk = store.disk;
    if (meta.localoff + meta.datasize > disk.size_bytes) {
      throw new ExitError(`Provider ${resource.localpath} is ${disk.size_bytes} bytes, smaller than its metadata's data area ` +
        `(${meta.localoff + meta.datasize} bytes): recreate it (hastctl create) or restore its size.`, EX_DATAERR);
    }
    if (meta.sectorsize % disk.sector_bytes !== 0) {
      throw new ExitError(`Provider ${resource.localpath} has ${disk.sector_bytes}-byte sectors, its metadata was made for ` +
        `${meta.sectorsize}: recreate it (hastctl create).`, EX_DATAERR);
    }
    return meta;
  } catch (err) {
    if (err instanceof MetadataError) {
      throw new ExitError(`Unable to read metadata from ${resource.localpath}: ${err.message}`, EX_NOINPUT);
    }
    // A slot that cannot be read is not taken for a torn one: it may hold the newest counters,
    // and the other slot's older ones would roll them back. A disk that fails here is failing.
    if (err instanceof NativeError) throw new ExitError(`Unable to read metadata from ${resource.localpath}: ${err.message}`, EX_IOERR);
    throw err;
  }
}
