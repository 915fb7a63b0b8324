// Where metadata, activemap and data live on a local component, and the checks
// `hastctl create` applies before writing them (spec 2.1, 4; docs/format.md).
//
//   0            8192              localoff = 8192 + mapsize
//   | metadata   | activemap       | data (datasize bytes) ............ |
//   | 2 x 4 KiB  | mapsize bytes   |                                    |

export const METADATA_SLOT_BYTES = 4096;
export const METADATA_AREA_BYTES = 2 * METADATA_SLOT_BYTES;
/** The activemap region starts right after the two metadata slots. */
export const ACTIVEMAP_OFFSET = METADATA_AREA_BYTES;
/**
 * Unit of activemap region size and of activemap writes. Sector sizes are limited to
 * 4096, so a 4 KiB block is always a whole number of sectors and keeps localoff 4 KiB
 * aligned for O_DIRECT.
 */
export const MAP_BLOCK_BYTES = 4096;
export const MIN_SECTOR_BYTES = 512;
export const MAX_SECTOR_BYTES = 4096;
export const DEFAULT_EXTENT_BYTES = 2 * 1024 * 1024;
export const MAX_EXTENT_BYTES = 2 ** 31;
export const DEFAULT_KEEPDIRTY = 64;
export const MAX_KEEPDIRTY = 0xffffffff;

export class LayoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LayoutError";
  }
}

export interface LayoutInput {
  /** Bytes of the component to use (`create -m`, or the component size). */
  mediasize: number;
  sectorsize: number;
  /** 0 or undefined means DEFAULT_EXTENT_BYTES. */
  extentsize?: number;
  /** 0 or undefined means DEFAULT_KEEPDIRTY. */
  keepdirty?: number;
}

export interface Layout {
  sectorsize: number;
  extentsize: number;
  keepdirty: number;
  /** Activemap region bytes, a multiple of MAP_BLOCK_BYTES. */
  mapsize: number;
  /** Offset of data byte 0 on the component: METADATA_AREA_BYTES + mapsize. */
  localoff: number;
  /** Bytes exposed as the device, a multiple of sectorsize. */
  datasize: number;
  nextents: number;
}

export function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && 2 ** Math.round(Math.log2(value)) === value;
}

/** Extents needed to cover `datasize` bytes. */
export function extentCount(datasize: number, extentsize: number): number {
  return Math.ceil(datasize / extentsize);
}

/** Activemap region bytes for `nextents` extents: one bit each, rounded up to MAP_BLOCK_BYTES. */
export function mapBytesFor(nextents: number): number {
  const bitmap_bytes = Math.ceil(nextents / 8);
  return Math.max(MAP_BLOCK_BYTES, Math.ceil(bitmap_bytes / MAP_BLOCK_BYTES) * MAP_BLOCK_BYTES);
}

/**
 * Sizes for a new component. Like HAST, the map is first sized for the extents of
 * (mediasize - metadata); since the map itself takes room, fewer extents may be needed, so
 * the map is then shrunk one block at a time while it still covers the data it leaves
 * (smallest such map, more room for data). datasize is rounded down to whole sectors.
 */
export function computeLayout(input: LayoutInput): Layout {
  const sectorsize = checkSectorSize(input.sectorsize);
  const extentsize = checkExtentSize(input.extentsize ?? 0, sectorsize);
  const keepdirty = checkKeepdirty(input.keepdirty ?? 0);
  const mediasize = input.mediasize;
  if (!Number.isSafeInteger(mediasize) || mediasize < 0) {
    throw new LayoutError(`media size ${mediasize} is not a byte count`);
  }
  const minimum = METADATA_AREA_BYTES + MAP_BLOCK_BYTES + extentsize;
  if (mediasize < minimum) {
    throw new LayoutError(
      `media size ${mediasize} is too small: need at least ${minimum} bytes ` +
        `(${METADATA_AREA_BYTES} metadata + ${MAP_BLOCK_BYTES} activemap + one ${extentsize}-byte extent)`,
    );
  }
  const dataFor = (mapsize: number) =>
    Math.floor((mediasize - METADATA_AREA_BYTES - mapsize) / sectorsize) * sectorsize;
  const covers = (mapsize: number) => mapBytesFor(extentCount(dataFor(mapsize), extentsize)) <= mapsize;

  let mapsize = mapBytesFor(extentCount(mediasize - METADATA_AREA_BYTES, extentsize));
  // Coverage is monotonic in mapsize (a bigger map leaves less data), so the walk stops
  // at the smallest covering map; it is bounded by the starting block count.
  while (mapsize > MAP_BLOCK_BYTES && covers(mapsize - MAP_BLOCK_BYTES)) mapsize -= MAP_BLOCK_BYTES;
  const datasize = dataFor(mapsize);
  return {
    sectorsize,
    extentsize,
    keepdirty,
    mapsize,
    localoff: METADATA_AREA_BYTES + mapsize,
    datasize,
    nextents: extentCount(datasize, extentsize),
  };
}

export function checkSectorSize(sectorsize: number): number {
  if (!isPowerOfTwo(sectorsize)) throw new LayoutError(`sector size ${sectorsize} is not a power of two`);
  if (sectorsize < MIN_SECTOR_BYTES || sectorsize > MAX_SECTOR_BYTES) {
    throw new LayoutError(
      `sector size ${sectorsize} is not supported: must be ${MIN_SECTOR_BYTES} to ${MAX_SECTOR_BYTES} bytes ` +
        `(metadata slots are ${METADATA_SLOT_BYTES} bytes)`,
    );
  }
  return sectorsize;
}

export function checkExtentSize(extentsize: number, sectorsize: number): number {
  const size = extentsize === 0 ? DEFAULT_EXTENT_BYTES : extentsize;
  if (!Number.isSafeInteger(size) || size < 0) throw new LayoutError(`extent size ${size} is not a byte count`);
  if (size < sectorsize) throw new LayoutError(`extent size ${size} is smaller than the sector size ${sectorsize}`);
  if (size % sectorsize !== 0) {
    throw new LayoutError(`extent size ${size} is not a multiple of the sector size ${sectorsize}`);
  }
  if (!isPowerOfTwo(size)) throw new LayoutError(`extent size ${size} is not a power of two`);
  if (size > MAX_EXTENT_BYTES) throw new LayoutError(`extent size ${size} is larger than ${MAX_EXTENT_BYTES}`);
  return size;
}

export function checkKeepdirty(keepdirty: number): number {
  if (!Number.isSafeInteger(keepdirty) || keepdirty < 0 || keepdirty > MAX_KEEPDIRTY) {
    throw new LayoutError(`keepdirty ${keepdirty} is not a count from 0 to ${MAX_KEEPDIRTY}`);
  }
  return keepdirty === 0 ? DEFAULT_KEEPDIRTY : keepdirty;
}
