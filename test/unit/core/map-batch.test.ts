import { describe, expect, test } from "bun:test";
import { ActiveMap, type MapWrite } from "../../../src/core/activemap.ts";
import { AssertionError } from "../../../src/core/assert.ts";
import { batchMapWrites, HeldMapWrites, mergeMapWrites } from "../../../src/core/map-batch.ts";
import type { PrimaryAction } from "../../../src/core/primary-engine.ts";

const EXT = 4096;

function apply(image: Uint8Array, write: MapWrite): void {
  for (const p of write.pieces) image.set(p.bytes, p.offset);
}

function write(seq: number, offset: number, fill: number, flags: Partial<MapWrite> = {}): MapWrite {
  return { seq, pieces: [{ offset, bytes: new Uint8Array(4096).fill(fill) }], flush: false, flush_before: false, sets: true, ...flags };
}

describe("mergeMapWrites", () => {
  test("every piece in order, each flush if any asked for it, the newest seq", () => {
    const a = write(1, 0, 1, { flush: true });
    const b = write(2, 4096, 2, { flush_before: true });
    const c = write(3, 0, 3);
    const m = mergeMapWrites([a, b, c]);
    expect(m.seq).toBe(3);
    // a's block is rewritten whole by c: only c's image of it is written.
    expect(m.pieces.map((p) => [p.offset, p.bytes[0]])).toEqual([[4096, 2], [0, 3]]);
    expect(m).toMatchObject({ flush: true, flush_before: true });
    expect(mergeMapWrites([write(4, 0, 0)])).toMatchObject({ flush: false, flush_before: false });
  });

  test("refuses writes out of seq order", () => {
    expect(() => mergeMapWrites([write(2, 0, 0), write(1, 0, 0)])).toThrow(AssertionError);
    expect(() => mergeMapWrites([])).toThrow(AssertionError);
  });

  test("applied, it leaves the map region as the writes one by one and as the activemap's own image", () => {
    // keepdirty 2 over 64 extents: most writes to a new extent evict one (a bit goes clean).
    const am = new ActiveMap({ datasize: 64 * EXT, extentsize: EXT, keepdirty: 2, sectorsize: 512 });
    const writes: MapWrite[] = [];
    for (const e of [5, 9, 5, 40, 63, 0, 9, 33]) {
      const started = am.writeStart(e * EXT, 512);
      if (started) writes.push(started);
      if (e === 63 || e === 33) continue; // still in flight
      const completed = am.writeComplete(e * EXT, 512);
      if (completed) writes.push(completed);
    }
    expect(writes.length).toBeGreaterThan(4);
    expect(writes.some((w) => w.flush_before)).toBe(true); // some update cleared a bit
    const one_by_one = new Uint8Array(am.mapsize);
    for (const w of writes) apply(one_by_one, w);
    const merged = new Uint8Array(am.mapsize);
    apply(merged, mergeMapWrites(writes));
    expect(merged).toEqual(one_by_one);
    expect([...merged]).toEqual([...am.diskImage()]);
  });
});

describe("batchMapWrites", () => {
  const local = (id: number): PrimaryAction => ({ type: "local", id, kind: "write", offset: id * EXT, length: 512 });
  const remote = (id: number): PrimaryAction => ({ type: "remote", id, kind: "write", offset: id * EXT, length: 512, memsync: true });

  test("one map update, where the first was, ahead of every data action of the batch", () => {
    const a = write(1, 0, 1, { flush: true });
    const b = write(2, 0, 2, { flush: true, flush_before: true });
    const batched = batchMapWrites([local(0), { type: "map", write: a }, local(1), remote(1), { type: "map", write: b }, local(2), remote(2)]);
    expect(batched.map((x) => x.type)).toEqual(["local", "map", "local", "remote", "local", "remote"]);
    const m = batched[1] as Extract<PrimaryAction, { type: "map" }>;
    expect(m.write).toEqual(mergeMapWrites([a, b]));
  });

  test("a batch with fewer than two map updates is left as it is", () => {
    const one: PrimaryAction[] = [{ type: "map", write: write(1, 0, 1) }, local(1), remote(1)];
    expect(batchMapWrites(one)).toEqual(one);
    expect(batchMapWrites([local(1)])).toEqual([local(1)]);
  });
});

describe("HeldMapWrites", () => {
  test("holds updates that only clear; one that sets goes out at once with them, in seq order", () => {
    const held = new HeldMapWrites();
    const c1 = write(1, 0, 1, { sets: false, flush: true, flush_before: true });
    const c2 = write(2, 4096, 2, { sets: false, flush: true, flush_before: true });
    expect(held.take(c1)).toBeNull();
    expect(held.take(c2)).toBeNull();
    expect(held.holding).toBe(true);
    const s3 = write(3, 0, 3, { flush: true });
    expect(held.take(s3)).toEqual(mergeMapWrites([c1, c2, s3]));
    expect(held.holding).toBe(false);
    expect(held.drain()).toBeNull();
    expect(held.take(s3)).toBe(s3); // nothing held: as it is
  });

  test("drain writes what is held as one", () => {
    const held = new HeldMapWrites();
    const c1 = write(1, 0, 1, { sets: false });
    const c2 = write(2, 0, 2, { sets: false, flush_before: true });
    held.take(c1);
    held.take(c2);
    expect(held.drain()).toEqual(mergeMapWrites([c1, c2]));
    expect(held.holding).toBe(false);
  });

  test("the activemap marks which updates set a bit", () => {
    const am = new ActiveMap({ datasize: 64 * EXT, extentsize: EXT, keepdirty: 1, sectorsize: 512 });
    expect(am.writeStart(0, 512)).toMatchObject({ sets: true, flush_before: false });
    // Extent 1 takes the one LRU place; extent 0 stays dirty while its write is in flight.
    expect(am.writeStart(EXT, 512)).toMatchObject({ sets: true, flush_before: false });
    expect(am.writeComplete(0, 512)).toMatchObject({ sets: false, flush_before: true }); // only clears
    expect(am.writeComplete(EXT, 512)).toBeNull(); // kept dirty by the LRU
    expect(am.writeStart(2 * EXT, 512)).toMatchObject({ sets: true, flush_before: true }); // sets 2, evicts 1
  });
});
