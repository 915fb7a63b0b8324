import { describe, expect, test } from "bun:test";
import { crc32c } from "../../../src/core/crc32c.ts";
import { computeLayout, METADATA_AREA_BYTES, METADATA_SLOT_BYTES } from "../../../src/core/layout.ts";
import {
  decodeMetadataArea,
  decodeMetadataSlot,
  encodeMetadataSlot,
  FLAG_SYNC_FULL_ON_CONNECT,
  type Metadata,
  MetadataError,
  type MetadataErrorReason,
  OFF_CRC,
  type SlotWrite,
  type StaleExtents,
  STALE_EXTENTS_MAX,
} from "../../../src/core/metadata.ts";

const layout = computeLayout({ mediasize: 64 * 1024 * 1024, sectorsize: 512 });
const META: Metadata = {
  resource: "shared",
  datasize: layout.datasize,
  extentsize: layout.extentsize,
  keepdirty: layout.keepdirty,
  localoff: layout.localoff,
  mapsize: layout.mapsize,
  sectorsize: layout.sectorsize,
  resuid: 0xfedcba9876543210n,
  localcnt: 7n,
  remotecnt: 0xffffffffffffffffn,
  prevrole: "secondary",
  flags: FLAG_SYNC_FULL_ON_CONNECT,
};

function apply(area: Uint8Array, write: SlotWrite): Uint8Array {
  area.set(write.bytes, write.offset);
  return area;
}

/** `hastctl create` (docs/format.md): both slots zeroed, then generation 1 into slot 0. */
function freshArea(meta: Metadata = META): Uint8Array {
  const area = new Uint8Array(METADATA_AREA_BYTES);
  return apply(area, encodeMetadataSlot(meta, 1n));
}

function decodeError(area: Uint8Array): MetadataError {
  try {
    decodeMetadataArea(area);
  } catch (error) {
    expect(error).toBeInstanceOf(MetadataError);
    return error as MetadataError;
  }
  throw new Error("decode unexpectedly succeeded");
}

function expectError(area: Uint8Array, reason: MetadataErrorReason, message: string): void {
  const error = decodeError(area);
  expect(error.reason).toBe(reason);
  expect(error.message).toBe(message);
}

/** Re-seals a slot after a test edits a field, so the field check (not the CRC) fires. */
function reseal(slot: Uint8Array): Uint8Array {
  new DataView(slot.buffer, slot.byteOffset).setUint32(OFF_CRC, crc32c(slot.subarray(0, OFF_CRC)), true);
  return slot;
}

describe("metadata codec", () => {
  test("round trip keeps every field, including u64 extremes and flags", () => {
    const read = decodeMetadataArea(freshArea());
    expect(read.meta).toEqual(META);
    expect(read.slot).toBe(0);
    expect(read.generation).toBe(1n);
    expect(read.slots[1].status).toBe("blank");
  });

  test("byte layout: magic, version, header length, generation, crc position", () => {
    const { bytes, offset } = encodeMetadataSlot(META, 1n);
    expect(offset).toBe(0);
    expect(bytes.length).toBe(METADATA_SLOT_BYTES);
    expect(new TextDecoder().decode(bytes.subarray(0, 8))).toBe("HASTBUN\0");
    const view = new DataView(bytes.buffer);
    expect(view.getUint16(8, true)).toBe(1);
    expect(view.getUint16(10, true)).toBe(84 + 6);
    expect(view.getUint32(12, true)).toBe(1);
    expect(view.getBigUint64(16, true)).toBe(1n);
    expect(view.getBigUint64(24, true)).toBe(BigInt(META.datasize));
    expect(view.getUint8(80)).toBe(3);
    expect(new TextDecoder().decode(bytes.subarray(84, 90))).toBe("shared");
    expect(bytes.subarray(90, OFF_CRC).every((b) => b === 0)).toBe(true);
    expect(view.getUint32(OFF_CRC, true)).toBe(crc32c(bytes.subarray(0, OFF_CRC)));
  });

  test("generations alternate slots and the highest valid generation wins", () => {
    const area = freshArea();
    let generation = 1n;
    for (let i = 0; i < 5; i++) {
      const read = decodeMetadataArea(area);
      expect(read.generation).toBe(generation);
      const next = encodeMetadataSlot({ ...read.meta, localcnt: read.meta.localcnt + 1n }, read.generation + 1n);
      expect(next.offset).toBe(read.slot === 0 ? METADATA_SLOT_BYTES : 0);
      apply(area, next);
      generation++;
    }
    const read = decodeMetadataArea(area);
    expect(read.generation).toBe(6n);
    expect(read.slot).toBe(1);
    expect(read.meta.localcnt).toBe(12n);
    expect(read.slots.map((s) => s.status)).toEqual(["valid", "valid"]);
  });

  test("torn write: a half-written new slot loses to the older good slot", () => {
    const area = freshArea();
    const next = encodeMetadataSlot({ ...META, localcnt: 8n }, 2n);
    for (const cut of [1, 512, 2048, 4000, 4095]) {
      const torn = area.slice();
      torn.set(next.bytes.subarray(0, cut), next.offset);
      torn.fill(0x5a, next.offset + cut, next.offset + METADATA_SLOT_BYTES);
      const read = decodeMetadataArea(torn);
      expect(read.generation).toBe(1n);
      expect(read.meta.localcnt).toBe(7n);
      const state = read.slots[1];
      expect(state.status).toBe("invalid");
    }
    // A torn write over old content of the same slot (new prefix, old suffix) also fails.
    apply(area, next);
    const third = encodeMetadataSlot({ ...META, localcnt: 9n }, 3n);
    const torn = area.slice();
    torn.set(third.bytes.subarray(0, 100), third.offset);
    expect(decodeMetadataArea(torn).meta.localcnt).toBe(8n);
  });

  test("blank component", () => {
    expectError(new Uint8Array(METADATA_AREA_BYTES), "blank", "no metadata (blank component — run hastctl create)");
  });

  test("bad magic", () => {
    const area = freshArea();
    area[0] = 0x58;
    expectError(area, "both-invalid", "both metadata slots invalid: bad magic in slot 0 (not a hast component?); slot 1 is blank");
    const state = decodeMetadataSlot(area.subarray(0, METADATA_SLOT_BYTES), 0);
    expect(state.status === "invalid" && state.error.reason).toBe("bad-magic");
  });

  test("unsupported format version wins over an older valid slot", () => {
    const area = freshArea();
    apply(area, encodeMetadataSlot(META, 2n));
    area[METADATA_SLOT_BYTES + 8] = 3;
    expectError(area, "bad-version", "unsupported format version 3 in slot 1 (this hastd reads versions 1 and 2)");
  });

  test("a primary's stale extents round-trip in a version-2 slot; without them the slot stays version 1", () => {
    const stale: StaleExtents = { extents: [0, 5, 31], peer_epoch: "00112233445566778899aabbccddeeff" };
    const plain = encodeMetadataSlot(META, 1n);
    expect(plain.bytes[8]).toBe(1);
    const listed = encodeMetadataSlot({ ...META, stale }, 1n);
    expect(listed.bytes[8]).toBe(2);
    expect(decodeMetadataArea(apply(new Uint8Array(METADATA_AREA_BYTES), listed)).meta).toEqual({ ...META, stale });
    const full: StaleExtents = { extents: Array.from({ length: STALE_EXTENTS_MAX }, (_, i) => i), peer_epoch: null };
    const big = { ...META, datasize: STALE_EXTENTS_MAX * META.extentsize };
    expect(decodeMetadataArea(apply(new Uint8Array(METADATA_AREA_BYTES), encodeMetadataSlot({ ...big, stale: full }, 1n))).meta.stale).toEqual(full);
    expect(STALE_EXTENTS_MAX).toBeGreaterThan(900);
  });

  test("a stale section that could not be read back is refused, written or read", () => {
    const nextents = Math.ceil(META.datasize / META.extentsize);
    const cases: [StaleExtents, string][] = [
      [{ extents: [], peer_epoch: null }, "cannot write metadata: 0 stale extents: must be 1 to " + STALE_EXTENTS_MAX],
      [{ extents: [3, 3], peer_epoch: null }, "cannot write metadata: stale extents are not in ascending order at 3"],
      [{ extents: [nextents], peer_epoch: null }, `cannot write metadata: stale extent ${nextents} is not an extent of the ${nextents}`],
      [{ extents: [1], peer_epoch: "abc" }, "cannot write metadata: stale extents' peer epoch abc is not 16 bytes of lowercase hex"],
    ];
    for (const [stale, message] of cases) expect(() => encodeMetadataSlot({ ...META, stale }, 1n)).toThrow(message);
    // Read side: the same rules, and the section's own fields.
    const slot = () => encodeMetadataSlot({ ...META, stale: { extents: [2, 4], peer_epoch: null } }, 1n).bytes;
    const edits: [(b: Uint8Array) => void, string][] = [
      [(b) => { b[344] = 0; }, "stale extent count 0 must be 1 to " + STALE_EXTENTS_MAX],
      [(b) => { b[348] = 2; }, "stale section's epoch fields are not 0 or 1 and a cache epoch"],
      [(b) => { b[352] = 9; }, "stale section's epoch fields are not 0 or 1 and a cache epoch"],
      [(b) => { b[372] = 1; }, "stale extents are not in ascending order at 1"],
      [(b) => { b[376] = 7; }, "reserved bytes are not zero"],
      [(b) => { b[8] = 1; }, "reserved bytes are not zero"],
    ];
    for (const [edit, message] of edits) {
      const b = slot();
      edit(b);
      const state = decodeMetadataSlot(reseal(b), 0);
      expect(state.status === "invalid" && state.error.message).toBe(`invalid field in slot 0: ${message}`);
    }
  });

  test("checksum mismatch: one flipped byte anywhere in the slot", () => {
    for (const at of [16, 30, 85, 2000, OFF_CRC + 1]) {
      const area = freshArea();
      area[at]! ^= 0x01;
      expectError(area, "both-invalid", "both metadata slots invalid: checksum mismatch in slot 0; slot 1 is blank");
    }
  });

  test("both slots invalid", () => {
    const area = freshArea();
    apply(area, encodeMetadataSlot(META, 2n));
    area[100]! ^= 0xff;
    area[METADATA_SLOT_BYTES]! ^= 0xff;
    expectError(
      area,
      "both-invalid",
      "both metadata slots invalid: checksum mismatch in slot 0; bad magic in slot 1 (not a hast component?)",
    );
  });

  test("random garbage is never accepted", () => {
    let x = 12345;
    for (let i = 0; i < 50; i++) {
      const area = new Uint8Array(METADATA_AREA_BYTES).map(() => ((x = (x * 1103515245 + 12345) >>> 0), x >>> 24));
      expect(decodeError(area).reason).toBe("both-invalid");
    }
  });

  test("area of the wrong size", () => {
    expectError(new Uint8Array(4096), "bad-size", "metadata area has 4096 bytes, expected 8192");
  });

  test("a checksummed slot with inconsistent fields is still rejected", () => {
    const edits: [number, (v: DataView) => void, string][] = [
      [0, (v) => v.setUint32(64, 3000, true), "extent size 3000 is not a multiple of the sector size 512"],
      [0, (v) => v.setUint32(76, 1000, true), "sector size 1000 is not a power of two"],
      [0, (v) => v.setBigUint64(32, 4096n, true), "localoff 4096 is not 8192 + mapsize 4096"],
      [0, (v) => v.setUint8(80, 9), "prevrole code 9 is not init (1), primary (2) or secondary (3)"],
      [0, (v) => v.setUint32(12, 8, true), "flags 0x8 has unknown bits"],
      [0, (v) => v.setBigUint64(16, 2n, true), "generation 2 does not belong in slot 0"],
      [0, (v) => v.setUint8(1000, 1), "reserved bytes are not zero"],
      [0, (v) => v.setUint16(10, 99, true), "header length 99 does not match name length 6"],
    ];
    for (const [slot, edit, why] of edits) {
      const area = freshArea();
      const bytes = area.subarray(slot * METADATA_SLOT_BYTES, (slot + 1) * METADATA_SLOT_BYTES);
      edit(new DataView(bytes.buffer, bytes.byteOffset));
      reseal(bytes);
      const state = decodeMetadataSlot(bytes, slot as 0 | 1);
      expect(state.status).toBe("invalid");
      if (state.status !== "invalid") continue;
      expect(state.error.reason).toBe("bad-field");
      expect(state.error.message).toBe(`invalid field in slot ${slot}: ${why}`);
    }
  });

  test("encode refuses metadata that could not be read back", () => {
    const bad: [Partial<Metadata>, string][] = [
      [{ resource: "" }, "cannot write metadata: resource name must be 1 to 255 bytes of UTF-8, got 0"],
      [{ resource: "é".repeat(128) }, "cannot write metadata: resource name must be 1 to 255 bytes of UTF-8, got 256"],
      [{ mapsize: 0 }, "cannot write metadata: mapsize 0 must be a multiple of 4096 and at least 4096"],
      [{ localcnt: -1n }, "cannot write metadata: localcnt -1 is not a u64"],
      [{ datasize: 1000 }, "cannot write metadata: datasize 1000 is not a positive multiple of the sector size 512"],
    ];
    for (const [change, message] of bad) {
      expect(() => encodeMetadataSlot({ ...META, ...change }, 1n)).toThrow(message);
    }
    expect(() => encodeMetadataSlot(META, 0n)).toThrow("metadata generation 0 is out of range");
  });

  test("a 255-byte UTF-8 name fits", () => {
    const meta = { ...META, resource: "r".repeat(255) };
    expect(decodeMetadataArea(freshArea(meta)).meta.resource).toBe(meta.resource);
  });

  test("create zeroes both slots first: older generations cannot outrank generation 1", () => {
    const area = freshArea();
    for (let g = 2n; g <= 7n; g++) apply(area, encodeMetadataSlot({ ...META, localcnt: g }, g));
    expect(decodeMetadataArea(area).generation).toBe(7n);
    area.fill(0);
    expect(decodeError(area).reason).toBe("blank"); // a crash here: create is simply run again
    apply(area, encodeMetadataSlot({ ...META, localcnt: 0n }, 1n));
    const read = decodeMetadataArea(area);
    expect(read.generation).toBe(1n);
    expect(read.meta.localcnt).toBe(0n);
  });
});
