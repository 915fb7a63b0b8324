import { describe, expect, test } from "bun:test";
import {
  computeLayout,
  extentCount,
  LayoutError,
  MAP_BLOCK_BYTES,
  mapBytesFor,
  METADATA_AREA_BYTES,
} from "../../../src/core/layout.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

describe("computeLayout", () => {
  test("64 MiB file with defaults (docs/format.md example)", () => {
    for (const sectorsize of [512, 4096]) {
      expect(computeLayout({ mediasize: 64 * MiB, sectorsize })).toEqual({
        sectorsize,
        extentsize: 2097152,
        keepdirty: 64,
        mapsize: 4096,
        localoff: 12288,
        datasize: 67096576,
        nextents: 32,
      });
    }
  });

  test("1 TiB with 2 MiB extents: 524288 extents, 64 KiB map", () => {
    const layout = computeLayout({ mediasize: TiB, sectorsize: 512, extentsize: 2 * MiB, keepdirty: 0 });
    expect(layout.mapsize).toBe(65536);
    expect(layout.localoff).toBe(8192 + 65536);
    expect(layout.datasize).toBe(TiB - 8192 - 65536);
    expect(layout.nextents).toBe(524288);
    expect(layout.keepdirty).toBe(64);
  });

  test("map shrinks when the map itself pushes the last extent out", () => {
    // 32769 extents of 4 KiB need 2 map blocks when sized from mediasize - 8192, but the
    // second block eats that extent, so one block (32768 extents) is the fixed point.
    const extentsize = 4096;
    const mediasize = METADATA_AREA_BYTES + 32768 * extentsize + 4096;
    const layout = computeLayout({ mediasize, sectorsize: 4096, extentsize });
    expect(mapBytesFor(extentCount(mediasize - METADATA_AREA_BYTES, extentsize))).toBe(2 * MAP_BLOCK_BYTES);
    expect(layout.mapsize).toBe(MAP_BLOCK_BYTES);
    expect(layout.datasize).toBe(32768 * extentsize);
    expect(layout.nextents).toBe(32768);
  });

  test("datasize is rounded down to whole sectors", () => {
    const layout = computeLayout({ mediasize: 4 * MiB + 12288 + 1000, sectorsize: 512, extentsize: 4096 });
    expect(layout.datasize % 512).toBe(0);
    expect(layout.datasize).toBe(4 * MiB + 512);
  });

  test("every layout covers its data and fits the media (sweep)", () => {
    for (let mediasize = 8192 + 4096 + 4096; mediasize < 8192 + 300 * 4096 * 8 * 3; mediasize += 4096 * 97 + 512) {
      const l = computeLayout({ mediasize, sectorsize: 512, extentsize: 4096 });
      expect(l.localoff + l.datasize).toBeLessThanOrEqual(mediasize);
      expect(mediasize - l.localoff - l.datasize).toBeLessThan(512);
      expect(mapBytesFor(l.nextents)).toBeLessThanOrEqual(l.mapsize);
      expect(l.localoff % 4096).toBe(0);
    }
  });

  const cases: [string, Parameters<typeof computeLayout>[0], string][] = [
    ["sector not power of two", { mediasize: GiB, sectorsize: 1000 }, "sector size 1000 is not a power of two"],
    ["sector too large", { mediasize: GiB, sectorsize: 8192 }, "sector size 8192 is not supported: must be 512 to 4096 bytes (metadata slots are 4096 bytes)"],
    ["sector too small", { mediasize: GiB, sectorsize: 256 }, "sector size 256 is not supported: must be 512 to 4096 bytes (metadata slots are 4096 bytes)"],
    ["extent below sector", { mediasize: GiB, sectorsize: 4096, extentsize: 2048 }, "extent size 2048 is smaller than the sector size 4096"],
    ["extent not a multiple", { mediasize: GiB, sectorsize: 512, extentsize: 3000 }, "extent size 3000 is not a multiple of the sector size 512"],
    ["extent not a power of two", { mediasize: GiB, sectorsize: 512, extentsize: 1536 }, "extent size 1536 is not a power of two"],
    ["extent too large", { mediasize: 8 * GiB, sectorsize: 512, extentsize: 2 ** 32 }, "extent size 4294967296 is larger than 2147483648"],
    ["keepdirty negative", { mediasize: GiB, sectorsize: 512, keepdirty: -1 }, "keepdirty -1 is not a count from 0 to 4294967295"],
    [
      "media too small",
      { mediasize: 2 * MiB, sectorsize: 512 },
      "media size 2097152 is too small: need at least 2109440 bytes (8192 metadata + 4096 activemap + one 2097152-byte extent)",
    ],
  ];
  for (const [name, input, message] of cases) {
    test(`rejects: ${name}`, () => {
      let thrown: unknown;
      try {
        computeLayout(input);
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(LayoutError);
      expect((thrown as LayoutError).message).toBe(message);
    });
  }

  test("smallest accepted media holds exactly one extent", () => {
    const l = computeLayout({ mediasize: 8192 + 4096 + 2 * MiB, sectorsize: 512 });
    expect(l.nextents).toBe(1);
    expect(l.datasize).toBe(2 * MiB);
  });
});
