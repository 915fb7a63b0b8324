// Reads and writes a component's metadata area and activemap region (docs/format.md) through
// LocalDisk. Every metadata write is made durable before it returns: callers rely on it to
// order "metadata, then data". A daemon's store does its I/O through the component's twin (an
// open file of its own): an fdatasync of data on the other one cannot take the write-back error
// of a metadata or map page, leaving that write to pass for durable (format.md rule 10).
import {
  decodeMetadataArea, encodeMetadataSlot, type Metadata, type MetadataRead,
} from "../core/metadata.ts";
import { ACTIVEMAP_OFFSET, METADATA_AREA_BYTES } from "../core/layout.ts";
import { NativeError } from "../native.ts";
import type { LocalDisk } from "./disk.ts";

const ZERO_CHUNK_BYTES = 1024 * 1024;

export interface MapPiece {
  /** Offset within the activemap region. */
  offset: number;
  bytes: Uint8Array;
}

export class MetadataStore {
  private generation = 0n;
  /** Where the store's own I/O goes: `disk`, or the daemon's twin of it. */
  private readonly io: LocalDisk;

  /** `own_file`: through disk.twin() (the daemons); else through `disk` itself (hastctl). */
  constructor(readonly disk: LocalDisk, own_file = false) {
    this.io = own_file ? disk.twin() : disk;
  }

  readArea(): Uint8Array {
    const area = new Uint8Array(METADATA_AREA_BYTES);
    this.io.read(area, 0);
    return area;
  }

  /** Newest valid metadata; throws MetadataError when there is none. */
  read(): MetadataRead {
    const read = decodeMetadataArea(this.readArea());
    this.generation = read.generation;
    return read;
  }

  /** Writes the next generation into the other slot and flushes: a torn write keeps the old copy. */
  write(meta: Metadata): void {
    const next = encodeMetadataSlot(meta, this.generation + 1n);
    this.io.write(next.bytes, next.offset);
    this.io.flush();
    this.generation = next.generation;
  }

  /**
   * hastctl create: invalidate both slots, zero the map, then write generation 1. A crash part-way
   * leaves no valid metadata (the operator runs create again), never old metadata over a new map.
   */
  initialize(meta: Metadata): void {
    this.io.write(new Uint8Array(METADATA_AREA_BYTES), 0);
    this.io.flush();
    this.zeroMap(meta.mapsize);
    this.io.flush();
    this.generation = 0n;
    this.write(meta);
  }

  readMap(mapsize: number): Uint8Array {
    const map = new Uint8Array(mapsize);
    this.io.read(map, ACTIVEMAP_OFFSET);
    return map;
  }

  /**
   * Applies an activemap update with the flushes it asks for (see MapWrite in src/core/activemap.ts):
   * `flush_before` flushes the whole component (the data a clean bit vouches for); `flush` needs
   * only the map's own pieces durable, so they are written through to the disk alone, not with
   * every data page the component holds dirty.
   */
  writeMap(write: { pieces: readonly MapPiece[]; flush: boolean; flush_before: boolean }): void {
    if (write.flush_before) this.io.flush();
    for (const p of write.pieces) {
      if (write.flush) this.io.writeDurable(p.bytes, ACTIVEMAP_OFFSET + p.offset);
      else this.io.write(p.bytes, ACTIVEMAP_OFFSET + p.offset);
    }
  }

  /** A whole map image from the start of the activemap, durable on return (no clear relies on it:
   * no flush before). */
  writeMapImage(bytes: Uint8Array): void {
    this.writeMap({ pieces: [{ offset: 0, bytes }], flush: true, flush_before: false });
  }

  zeroMap(mapsize: number): void {
    const zero = new Uint8Array(Math.min(mapsize, ZERO_CHUNK_BYTES));
    for (let off = 0; off < mapsize; off += zero.length) {
      this.io.write(zero.subarray(0, Math.min(zero.length, mapsize - off)), ACTIVEMAP_OFFSET + off);
    }
  }
}

/**
 * A metadata or map write that failed in its fdatasync. Linux reports a write-back error to one
 * fsync only: the changes it dropped may be any written since the last good flush, which the next
 * FLUSH would then vouch for unless the worker fails it (or what it covered) in its place.
 */
export function failedInFlush(err: unknown): boolean {
  return err instanceof NativeError && err.op === "fdatasync";
}
