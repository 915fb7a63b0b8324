// Opening a resource's local component in a worker: locked, with its metadata checked against
// the configuration. Shared by the primary and the secondary.
import type { ResourceConfig } from "../config/index.ts";
import { MetadataError, type Metadata } from "../core/metadata.ts";
import { EX_CONFIG, EX_NOINPUT, ExitError } from "../core/sysexits.ts";
import { LocalDisk } from "../io/disk.ts";
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
