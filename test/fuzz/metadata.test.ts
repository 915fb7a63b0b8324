// Fuzz the metadata slot codec (docs/format.md §1), the one input read from the component itself:
// seeded mutations of valid version-1 and version-2 slots (bytes and fields changed, the checksum
// sealed again so the field checks are what decides) must decode to "valid" or "invalid" without
// throwing, and a slot accepted as valid must be the one encodeMetadataSlot writes for what it
// decoded to (nothing is read that would not be written back the same). Seed: FUZZ_SEED.
import { expect, test } from "bun:test";
import { crc32c } from "../../src/core/crc32c.ts";
import { computeLayout, METADATA_SLOT_BYTES } from "../../src/core/layout.ts";
import { decodeMetadataSlot, encodeMetadataSlot, type Metadata, OFF_CRC, STALE_EXTENTS_MAX } from "../../src/core/metadata.ts";
import { prng } from "./prng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 0x5107_0002);
const INPUTS = 60_000;

const layout = computeLayout({ mediasize: 1 << 30, sectorsize: 512 });
const BASE: Metadata = {
  resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
  mapsize: layout.mapsize, sectorsize: layout.sectorsize, resuid: 0x1234_5678_9abc_def0n, localcnt: 9n, remotecnt: 7n, prevrole: "primary", flags: 0,
};
const SEEDS: Uint8Array[] = [
  encodeMetadataSlot(BASE, 1n).bytes,
  encodeMetadataSlot({ ...BASE, stale: { extents: [0, 3, 511], peer_epoch: "0123456789abcdef0123456789abcdef" } }, 1n).bytes,
  encodeMetadataSlot({ ...BASE, resource: "é".repeat(100), stale: { extents: [5], peer_epoch: null } }, 1n).bytes,
];

test(`metadata slots: ${INPUTS} mutations decode to valid or invalid, and a valid one is canonical (seed ${SEED})`, () => {
  const random = prng(SEED);
  const int = (n: number) => Math.floor(random() * n);
  const counts = { valid: 0, invalid: 0, v2: 0 };
  for (let i = 0; i < INPUTS; i++) {
    const slot = SEEDS[int(SEEDS.length)]!.slice();
    const view = new DataView(slot.buffer);
    for (let edits = 1 + int(4); edits > 0; edits--) {
      switch (int(5)) {
        case 0: slot[int(OFF_CRC)] = int(256); break; // any byte
        case 1: slot[8] = int(4); break; // the version
        case 2: view.setUint32(344, int(2) === 0 ? int(4) : int(STALE_EXTENTS_MAX + 3), true); break; // stale count
        case 3: view.setUint32(368 + 4 * int(6), int(2) === 0 ? int(600) : int(2 ** 32), true); break; // an extent number
        case 4: slot[348 + int(20)] = int(3); break; // the epoch fields
      }
    }
    if (int(10) > 0) view.setUint32(OFF_CRC, crc32c(slot.subarray(0, OFF_CRC)), true);
    const state = decodeMetadataSlot(slot, 0);
    if (state.status === "invalid") {
      counts.invalid++;
      expect(state.error.message).not.toContain("\n");
      continue;
    }
    expect(state.status).toBe("valid");
    if (state.status !== "valid") continue;
    counts.valid++;
    if (state.meta.stale) counts.v2++;
    const again = encodeMetadataSlot(state.meta, state.generation).bytes;
    if (!again.every((b, k) => b === slot[k])) throw new Error(`seed ${SEED}, input ${i}: a slot accepted as valid is not the one its metadata encodes to`);
  }
  expect(SEEDS.every((s) => s.length === METADATA_SLOT_BYTES)).toBe(true);
  // Both outcomes and both versions are reached: the mutations are neither all fatal nor all harmless.
  expect(counts.valid).toBeGreaterThan(INPUTS / 50);
  expect(counts.invalid).toBeGreaterThan(INPUTS / 2);
  expect(counts.v2).toBeGreaterThan(INPUTS / 200);
});
