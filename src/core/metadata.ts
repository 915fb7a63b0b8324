// The metadata area: two 4096-byte slots at component offsets 0 and 4096, each a complete,
// checksummed copy of the resource metadata with a generation number. A write goes to the
// slot that does not hold the newest copy (generation g lives in slot (g - 1) % 2), so a
// torn write can only damage the older copy; readers take the valid slot with the highest
// generation. Byte layout: docs/format.md.

import { crc32c } from "./crc32c.ts";
import {
  checkExtentSize,
  checkSectorSize,
  extentCount,
  LayoutError,
  MAP_BLOCK_BYTES,
  mapBytesFor,
  METADATA_AREA_BYTES,
  METADATA_SLOT_BYTES,
} from "./layout.ts";

/** "HASTBUN\0" */
export const METADATA_MAGIC = new Uint8Array([0x48, 0x41, 0x53, 0x54, 0x42, 0x55, 0x4e, 0x00]);
export const METADATA_VERSION = 1;
/** A slot that carries a primary's stale extents (Metadata.stale). Written only then, so a build that
 * predates it refuses such a slot (bad-version) rather than read the older slot, and reads any other. */
export const METADATA_VERSION_STALE = 2;
export const MAX_RESOURCE_NAME_BYTES = 255;

/** Flag bit 0: the next connect must copy the whole device to the peer (forced initial sync). */
export const FLAG_SYNC_FULL_ON_CONNECT = 1 << 0;
/** The resuid was drawn by this node as a fresh primary and no secondary has confirmed it yet: it is
 * written before the first handshake so a restarted worker offers the same one. */
export const FLAG_RESUID_UNCONFIRMED = 1 << 1;
/** This node's copy lacks changes its peer has: a synchronization toward it has not completed, or
 * a write or flush failed here since. Set by a secondary, cleared by the primary's IN_SYNC; a node
 * with it refuses to become primary unless forced. */
export const FLAG_COPY_INCOMPLETE = 1 << 2;
export const KNOWN_FLAGS = FLAG_SYNC_FULL_ON_CONNECT | FLAG_RESUID_UNCONFIRMED | FLAG_COPY_INCOMPLETE;

export type Role = "init" | "primary" | "secondary";
/** HAST's numeric role codes (undef 0 is never stored). */
export const ROLE_CODES: Readonly<Record<Role, number>> = { init: 1, primary: 2, secondary: 3 };

// Slot field offsets (all little-endian).
const OFF_MAGIC = 0;
const OFF_VERSION = 8;
const OFF_HEADER_BYTES = 10;
const OFF_FLAGS = 12;
const OFF_GENERATION = 16;
const OFF_DATASIZE = 24;
const OFF_LOCALOFF = 32;
const OFF_RESUID = 40;
const OFF_LOCALCNT = 48;
const OFF_REMOTECNT = 56;
const OFF_EXTENTSIZE = 64;
const OFF_KEEPDIRTY = 68;
const OFF_MAPSIZE = 72;
const OFF_SECTORSIZE = 76;
const OFF_PREVROLE = 80;
const OFF_RESERVED = 81;
const OFF_NAME_BYTES = 82;
const OFF_NAME = 84;
/** The CRC-32C of bytes [0, OFF_CRC) sits in the last 4 bytes of the slot. */
export const OFF_CRC = METADATA_SLOT_BYTES - 4;
// The stale section of a version-2 slot, after the longest name.
const OFF_STALE_COUNT = 344;
const OFF_STALE_HAS_EPOCH = 348;
const OFF_STALE_EPOCH = 352;
const STALE_EPOCH_BYTES = 16;
const OFF_STALE_EXTENTS = OFF_STALE_EPOCH + STALE_EPOCH_BYTES;
/** Extent numbers a slot can list as stale; a primary with more stale extents marks its copy
 * incomplete instead (FLAG_COPY_INCOMPLETE: a restart is refused). */
export const STALE_EXTENTS_MAX = (OFF_CRC - OFF_STALE_EXTENTS) / 4;

/** A secondary's disk cache epoch (HANDSHAKE_REPLY `cache_epoch`) as the string two epochs compare
 * equal by (lowercase hex), or null: the engine's peer_cache_epoch and StaleExtents.peer_epoch. */
export function cacheEpochKey(epoch: Uint8Array | null): string | null {
  return epoch === null ? null : Array.from(epoch, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Extents of a primary's copy whose newest changes only the peer holds (a local write or flush
 * failed there, the peer's succeeded): a restarted primary copies them back from the peer before
 * it trusts them, as the process that knew them would have.
 */
export interface StaleExtents {
  /** Extent numbers, ascending, 1 to STALE_EXTENTS_MAX of them. */
  extents: readonly number[];
  /** The peer's disk cache epoch (hex) when they were listed, or null: the copy back trusts the
   * peer's copy only if the peer reports the same epoch again (it did not reboot since). */
  peer_epoch: string | null;
}

export interface Metadata {
  /** Resource name, 1..255 bytes of UTF-8. */
  resource: string;
  /** Bytes exposed as the device. */
  datasize: number;
  /** Dirty-tracking granularity in bytes (power of two). */
  extentsize: number;
  /** Size of the keepdirty LRU (extents). */
  keepdirty: number;
  /** Component offset of data byte 0 (= 8192 + mapsize). */
  localoff: number;
  /** Activemap region bytes. */
  mapsize: number;
  /** Sector size of the component when it was created. */
  sectorsize: number;
  /** Random resource identity; 0n = never used. */
  resuid: bigint;
  /** This node's modification generation. */
  localcnt: bigint;
  /** What this node knows of the peer's generation. */
  remotecnt: bigint;
  /** Role at the last metadata write; informational. */
  prevrole: Role;
  /** FLAG_* bits. */
  flags: number;
  /** A primary's stale extents, if it has any (a version-2 slot). */
  stale?: StaleExtents;
}

/** This node's copy lacks changes its peer has: marked incomplete, or stale in listed extents. */
export function copyIncomplete(meta: Pick<Metadata, "flags" | "stale">): boolean {
  return (meta.flags & FLAG_COPY_INCOMPLETE) !== 0 || meta.stale !== undefined;
}

export type MetadataErrorReason =
  | "blank"
  | "bad-magic"
  | "bad-version"
  | "bad-checksum"
  | "bad-field"
  | "both-invalid"
  | "bad-size";

export class MetadataError extends Error {
  readonly reason: MetadataErrorReason;
  constructor(reason: MetadataErrorReason, message: string) {
    super(message);
    this.name = "MetadataError";
    this.reason = reason;
  }
}

export type SlotIndex = 0 | 1;

export type SlotState =
  | { slot: SlotIndex; status: "valid"; generation: bigint; meta: Metadata }
  | { slot: SlotIndex; status: "blank" }
  | { slot: SlotIndex; status: "invalid"; error: MetadataError };

export interface MetadataRead {
  meta: Metadata;
  slot: SlotIndex;
  generation: bigint;
  /** Both slots as found, for `hastctl dump`. */
  slots: [SlotState, SlotState];
}

export interface SlotWrite {
  /** Component offset: 0 or 4096. */
  offset: number;
  /** Exactly METADATA_SLOT_BYTES bytes. */
  bytes: Uint8Array;
  generation: bigint;
}

/** Slot that holds `generation`: 1 → slot 0, 2 → slot 1, 3 → slot 0, ... */
export function slotForGeneration(generation: bigint): SlotIndex {
  return generation % 2n === 1n ? 0 : 1;
}

/** Encodes `meta` as the slot for `generation` (newest generation read + 1). */
export function encodeMetadataSlot(meta: Metadata, generation: bigint): SlotWrite {
  if (generation < 1n || generation > 0xffffffffffffffffn) {
    throw new MetadataError("bad-field", `metadata generation ${generation} is out of range`);
  }
  const name = checkFields(meta, "encode");
  const bytes = new Uint8Array(METADATA_SLOT_BYTES);
  const view = new DataView(bytes.buffer);
  bytes.set(METADATA_MAGIC, OFF_MAGIC);
  view.setUint16(OFF_VERSION, meta.stale ? METADATA_VERSION_STALE : METADATA_VERSION, true);
  view.setUint16(OFF_HEADER_BYTES, OFF_NAME + name.length, true);
  view.setUint32(OFF_FLAGS, meta.flags, true);
  view.setBigUint64(OFF_GENERATION, generation, true);
  view.setBigUint64(OFF_DATASIZE, BigInt(meta.datasize), true);
  view.setBigUint64(OFF_LOCALOFF, BigInt(meta.localoff), true);
  view.setBigUint64(OFF_RESUID, meta.resuid, true);
  view.setBigUint64(OFF_LOCALCNT, meta.localcnt, true);
  view.setBigUint64(OFF_REMOTECNT, meta.remotecnt, true);
  view.setUint32(OFF_EXTENTSIZE, meta.extentsize, true);
  view.setUint32(OFF_KEEPDIRTY, meta.keepdirty, true);
  view.setUint32(OFF_MAPSIZE, meta.mapsize, true);
  view.setUint32(OFF_SECTORSIZE, meta.sectorsize, true);
  view.setUint8(OFF_PREVROLE, ROLE_CODES[meta.prevrole]);
  view.setUint16(OFF_NAME_BYTES, name.length, true);
  bytes.set(name, OFF_NAME);
  if (meta.stale) encodeStale(meta.stale, bytes, view);
  view.setUint32(OFF_CRC, crc32c(bytes.subarray(0, OFF_CRC)), true);
  return { offset: slotForGeneration(generation) * METADATA_SLOT_BYTES, bytes, generation };
}

/** Decodes one slot without throwing; `slot` says where the bytes came from. */
export function decodeMetadataSlot(bytes: Uint8Array, slot: SlotIndex): SlotState {
  if (bytes.length !== METADATA_SLOT_BYTES) {
    const error = new MetadataError("bad-size", `metadata slot ${slot} has ${bytes.length} bytes, expected ${METADATA_SLOT_BYTES}`);
    return { slot, status: "invalid", error };
  }
  if (bytes.every((b) => b === 0)) return { slot, status: "blank" };
  try {
    const { meta, generation } = parseSlot(bytes, slot);
    return { slot, status: "valid", generation, meta };
  } catch (error) {
    if (error instanceof MetadataError) return { slot, status: "invalid", error };
    throw error;
  }
}

/**
 * Decodes the 8192-byte metadata area and returns the newest valid copy. Throws
 * MetadataError when neither slot holds valid metadata, or when a slot was written by a
 * newer format version (reading the older slot instead would roll the metadata back).
 */
export function decodeMetadataArea(area: Uint8Array): MetadataRead {
  if (area.length !== METADATA_AREA_BYTES) {
    throw new MetadataError("bad-size", `metadata area has ${area.length} bytes, expected ${METADATA_AREA_BYTES}`);
  }
  const slots: [SlotState, SlotState] = [
    decodeMetadataSlot(area.subarray(0, METADATA_SLOT_BYTES), 0),
    decodeMetadataSlot(area.subarray(METADATA_SLOT_BYTES), 1),
  ];
  for (const state of slots) {
    if (state.status === "invalid" && state.error.reason === "bad-version") throw state.error;
  }
  let best: Extract<SlotState, { status: "valid" }> | null = null;
  for (const state of slots) {
    if (state.status === "valid" && (best === null || state.generation > best.generation)) best = state;
  }
  if (best !== null) return { meta: best.meta, slot: best.slot, generation: best.generation, slots };
  if (slots.every((s) => s.status === "blank")) {
    throw new MetadataError("blank", "no metadata (blank component — run hastctl create)");
  }
  const why = slots.map((s) => (s.status === "invalid" ? s.error.message : `slot ${s.slot} is blank`));
  throw new MetadataError("both-invalid", `both metadata slots invalid: ${why.join("; ")}`);
}

function parseSlot(bytes: Uint8Array, slot: SlotIndex): { meta: Metadata; generation: bigint } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (!METADATA_MAGIC.every((b, i) => bytes[OFF_MAGIC + i] === b)) {
    throw new MetadataError("bad-magic", `bad magic in slot ${slot} (not a hast component?)`);
  }
  const version = view.getUint16(OFF_VERSION, true);
  if (version !== METADATA_VERSION && version !== METADATA_VERSION_STALE) {
    throw new MetadataError(
      "bad-version",
      `unsupported format version ${version} in slot ${slot} (this hastd reads versions ${METADATA_VERSION} and ${METADATA_VERSION_STALE})`,
    );
  }
  if (view.getUint32(OFF_CRC, true) !== crc32c(bytes.subarray(0, OFF_CRC))) {
    throw new MetadataError("bad-checksum", `checksum mismatch in slot ${slot}`);
  }
  const bad = (what: string) => new MetadataError("bad-field", `invalid field in slot ${slot}: ${what}`);
  const name_bytes = view.getUint16(OFF_NAME_BYTES, true);
  const header_bytes = view.getUint16(OFF_HEADER_BYTES, true);
  if (name_bytes > MAX_RESOURCE_NAME_BYTES) throw bad(`resource name length ${name_bytes} exceeds ${MAX_RESOURCE_NAME_BYTES}`);
  if (header_bytes !== OFF_NAME + name_bytes) throw bad(`header length ${header_bytes} does not match name length ${name_bytes}`);
  const stale = version === METADATA_VERSION_STALE ? decodeStale(bytes, view, bad) : undefined;
  const defined_end = stale ? OFF_STALE_COUNT : OFF_CRC;
  const unused_from = stale ? OFF_STALE_EXTENTS + 4 * stale.extents.length : OFF_CRC;
  if (bytes[OFF_RESERVED] !== 0 || !bytes.subarray(header_bytes, defined_end).every((b) => b === 0) ||
    !bytes.subarray(unused_from, OFF_CRC).every((b) => b === 0)) {
    throw bad("reserved bytes are not zero");
  }
  const generation = view.getBigUint64(OFF_GENERATION, true);
  if (generation === 0n || slotForGeneration(generation) !== slot) {
    throw bad(`generation ${generation} does not belong in slot ${slot}`);
  }
  let resource: string;
  try {
    resource = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(OFF_NAME, header_bytes));
  } catch {
    throw bad("resource name is not UTF-8");
  }
  const role = Object.entries(ROLE_CODES).find(([, code]) => code === bytes[OFF_PREVROLE]);
  if (role === undefined) throw bad(`prevrole code ${bytes[OFF_PREVROLE]} is not init (1), primary (2) or secondary (3)`);
  const meta: Metadata = {
    resource,
    datasize: safeNumber(view.getBigUint64(OFF_DATASIZE, true), "datasize", bad),
    extentsize: view.getUint32(OFF_EXTENTSIZE, true),
    keepdirty: view.getUint32(OFF_KEEPDIRTY, true),
    localoff: safeNumber(view.getBigUint64(OFF_LOCALOFF, true), "localoff", bad),
    mapsize: view.getUint32(OFF_MAPSIZE, true),
    sectorsize: view.getUint32(OFF_SECTORSIZE, true),
    resuid: view.getBigUint64(OFF_RESUID, true),
    localcnt: view.getBigUint64(OFF_LOCALCNT, true),
    remotecnt: view.getBigUint64(OFF_REMOTECNT, true),
    prevrole: role[0] as Role,
    flags: view.getUint32(OFF_FLAGS, true),
    ...(stale ? { stale } : {}),
  };
  try {
    checkFields(meta, "decode");
  } catch (error) {
    if (error instanceof MetadataError) throw bad(error.message);
    throw error;
  }
  return { meta, generation };
}

function encodeStale(stale: StaleExtents, bytes: Uint8Array, view: DataView): void {
  view.setUint32(OFF_STALE_COUNT, stale.extents.length, true);
  if (stale.peer_epoch !== null) {
    bytes[OFF_STALE_HAS_EPOCH] = 1;
    for (let i = 0; i < STALE_EPOCH_BYTES; i++) bytes[OFF_STALE_EPOCH + i] = Number.parseInt(stale.peer_epoch.slice(2 * i, 2 * i + 2), 16);
  }
  stale.extents.forEach((e, i) => view.setUint32(OFF_STALE_EXTENTS + 4 * i, e, true));
}

/** The section's shape; checkFields checks the extent numbers against the layout. */
function decodeStale(bytes: Uint8Array, view: DataView, bad: (what: string) => MetadataError): StaleExtents {
  const count = view.getUint32(OFF_STALE_COUNT, true);
  if (count < 1 || count > STALE_EXTENTS_MAX) throw bad(`stale extent count ${count} must be 1 to ${STALE_EXTENTS_MAX}`);
  const has_epoch = bytes[OFF_STALE_HAS_EPOCH]!;
  const epoch = bytes.subarray(OFF_STALE_EPOCH, OFF_STALE_EXTENTS);
  if (has_epoch > 1 || bytes[OFF_STALE_HAS_EPOCH + 1] !== 0 || view.getUint16(OFF_STALE_HAS_EPOCH + 2, true) !== 0 ||
    (has_epoch === 0 && !epoch.every((b) => b === 0))) {
    throw bad("stale section's epoch fields are not 0 or 1 and a cache epoch");
  }
  const extents: number[] = [];
  for (let i = 0; i < count; i++) extents.push(view.getUint32(OFF_STALE_EXTENTS + 4 * i, true));
  const peer_epoch = cacheEpochKey(has_epoch === 1 ? epoch : null);
  return { extents, peer_epoch };
}

function safeNumber(value: bigint, field: string, bad: (what: string) => MetadataError): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(`${field} ${value} is too large`);
  return Number(value);
}

/**
 * Checks that the fields describe a consistent layout and fit their encodings; returns
 * the UTF-8 name. Messages name the field, the value and the rule.
 */
function checkFields(meta: Metadata, direction: "encode" | "decode"): Uint8Array {
  const fail = (what: string) =>
    new MetadataError("bad-field", direction === "encode" ? `cannot write metadata: ${what}` : what);
  const name = new TextEncoder().encode(meta.resource);
  if (name.length === 0 || name.length > MAX_RESOURCE_NAME_BYTES) {
    throw fail(`resource name must be 1 to ${MAX_RESOURCE_NAME_BYTES} bytes of UTF-8, got ${name.length}`);
  }
  // checkExtentSize reads 0 as "default"; stored metadata always carries the real size.
  if (meta.extentsize === 0) throw fail("extentsize is 0");
  try {
    checkSectorSize(meta.sectorsize);
    checkExtentSize(meta.extentsize, meta.sectorsize);
  } catch (error) {
    if (error instanceof LayoutError) throw fail(error.message);
    throw error;
  }
  if (!isCount(meta.keepdirty, 1, 0xffffffff)) throw fail(`keepdirty ${meta.keepdirty} must be 1 to ${0xffffffff}`);
  if (!isCount(meta.datasize, meta.sectorsize, Number.MAX_SAFE_INTEGER) || meta.datasize % meta.sectorsize !== 0) {
    throw fail(`datasize ${meta.datasize} is not a positive multiple of the sector size ${meta.sectorsize}`);
  }
  const needed = mapBytesFor(extentCount(meta.datasize, meta.extentsize));
  if (!isCount(meta.mapsize, needed, 0xffffffff) || meta.mapsize % MAP_BLOCK_BYTES !== 0) {
    throw fail(`mapsize ${meta.mapsize} must be a multiple of ${MAP_BLOCK_BYTES} and at least ${needed}`);
  }
  if (meta.localoff !== METADATA_AREA_BYTES + meta.mapsize) {
    throw fail(`localoff ${meta.localoff} is not ${METADATA_AREA_BYTES} + mapsize ${meta.mapsize}`);
  }
  for (const field of ["resuid", "localcnt", "remotecnt"] as const) {
    if (meta[field] < 0n || meta[field] > 0xffffffffffffffffn) throw fail(`${field} ${meta[field]} is not a u64`);
  }
  if (!(meta.prevrole in ROLE_CODES)) throw fail(`prevrole ${String(meta.prevrole)} is not init, primary or secondary`);
  if (!isCount(meta.flags, 0, 0xffffffff) || (meta.flags & ~KNOWN_FLAGS) !== 0) {
    throw fail(`flags 0x${meta.flags.toString(16)} has unknown bits`);
  }
  if (meta.stale) checkStale(meta.stale, extentCount(meta.datasize, meta.extentsize), fail);
  return name;
}

function checkStale(stale: StaleExtents, nextents: number, fail: (what: string) => MetadataError): void {
  const { extents, peer_epoch } = stale;
  if (extents.length < 1 || extents.length > STALE_EXTENTS_MAX) throw fail(`${extents.length} stale extents: must be 1 to ${STALE_EXTENTS_MAX}`);
  extents.forEach((e, i) => {
    if (!isCount(e, 0, nextents - 1)) throw fail(`stale extent ${e} is not an extent of the ${nextents}`);
    if (i > 0 && e <= extents[i - 1]!) throw fail(`stale extents are not in ascending order at ${e}`);
  });
  if (peer_epoch !== null && !new RegExp(`^[0-9a-f]{${2 * STALE_EPOCH_BYTES}}$`).test(peer_epoch)) {
    throw fail(`stale extents' peer epoch ${peer_epoch} is not ${STALE_EPOCH_BYTES} bytes of lowercase hex`);
  }
}

function isCount(value: number, min: number, max: number): boolean {
  return Number.isSafeInteger(value) && value >= min && value <= max;
}
