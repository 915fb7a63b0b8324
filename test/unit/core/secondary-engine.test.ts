// SecondaryEngine: request validation, the memsync early "received" answer, map clear at the
// first request after a handshake.
import { describe, expect, test } from "bun:test";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { SecondaryEngine, type SecondaryAction, type SecondaryRequest } from "../../../src/core/secondary-engine.ts";

const SECTOR = 512;
const EXTENT = 4096;
const DATASIZE = 16 * EXTENT;
const MAX_REQUEST = 8192;

function engine(dirty: number[] = [], copy_complete = true): { e: SecondaryEngine; map: ActiveMap } {
  const map = new ActiveMap({ datasize: DATASIZE, extentsize: EXTENT, keepdirty: 4, sectorsize: SECTOR });
  const image = new Uint8Array(map.mapsize);
  for (const x of dirty) image[x >> 3]! |= 1 << (x & 7);
  map.copyIn(image);
  return { e: new SecondaryEngine(map, { datasize: DATASIZE, sector_bytes: SECTOR, max_request_bytes: MAX_REQUEST }, copy_complete), map };
}

function req(r: Partial<SecondaryRequest>): SecondaryRequest {
  return { seq: 5, kind: "write", offset: 0, length: SECTOR, memsync: false, sync: true, ...r };
}

describe("SecondaryEngine", () => {
  test("the first valid request clears the map (whole region, zeros), later ones do not", () => {
    const { e, map } = engine([1, 9]);
    const first = e.request(req({ seq: 1 }));
    expect(first[0]).toMatchObject({ type: "map" });
    const clear = first[0]!.type === "map" ? first[0]!.write : null;
    expect(clear!.pieces).toEqual([{ offset: 0, bytes: new Uint8Array(map.mapsize) }]);
    // Then the write itself marks its extent (until a flush makes it durable).
    expect(first.map((a) => a.type)).toEqual(["map", "map", "local"]);
    expect(map.dirtyExtentCount()).toBe(1);
    expect(first.at(-1)).toEqual({ type: "local", seq: 1, kind: "write", offset: 0, length: SECTOR });
    expect(e.request(req({ seq: 2, kind: "read" }))).toEqual([{ type: "local", seq: 2, kind: "read", offset: 0, length: SECTOR }]);
  });

  test("an invalid first request does not clear the map", () => {
    const { e, map } = engine([3]);
    expect(e.request(req({ seq: 0 })).map((a) => a.type)).toEqual(["log", "copy", "reply"]);
    expect(map.dirtyExtentCount()).toBe(1);
    expect(e.request(req({ seq: 1, kind: "flush", offset: 0, length: 0 })).map((a) => a.type)).toEqual(["map", "local"]);
  });

  test("memsync write: received answer on receipt, before the request runs; final answer after the disk write", () => {
    const { e } = engine();
    const r = req({ seq: 9, memsync: true });
    expect(e.receive(r)).toEqual([{ type: "reply", seq: 9, error: null, received: true }]);
    const actions = e.request(r);
    expect(actions.map((a) => a.type)).toEqual(["map", "map", "local"]);
    expect(actions.at(-1)).toEqual({ type: "local", seq: 9, kind: "write", offset: 0, length: SECTOR });
    expect(e.localDone(9, null)).toEqual([{ type: "reply", seq: 9, error: null, received: false }]);
    expect(e.localDone(10, "EIO")).toEqual([{ type: "copy", complete: false }, { type: "reply", seq: 10, error: "EIO", received: false }]);
    // Without the flag, nothing is answered on receipt.
    expect(e.receive(req({ seq: 11 }))).toEqual([]);
  });

  test("the memsync flag means nothing on other kinds", () => {
    const { e } = engine();
    e.request(req({ seq: 1 }));
    for (const kind of ["read", "delete"] as const) {
      expect(e.receive(req({ seq: 2, kind, memsync: true }))).toEqual([]);
      expect(e.request(req({ seq: 2, kind, memsync: true })).map((a) => a.type)).toEqual(["local"]);
    }
  });

  const invalid: [string, Partial<SecondaryRequest>, string][] = [
    ["seq 0", { seq: 0 }, "sequence number 0"],
    ["flush with a range", { kind: "flush", offset: 0, length: SECTOR }, "flush with a range"],
    ["zero length", { length: 0 }, "bad range"],
    ["negative offset", { offset: -SECTOR }, "bad range"],
    ["fractional offset", { offset: 0.5 }, "bad range"],
    ["unsafe length", { length: 2 ** 53 }, "bad range"],
    ["too long", { length: MAX_REQUEST + SECTOR }, `length ${MAX_REQUEST + SECTOR} over ${MAX_REQUEST}`],
    ["unaligned offset", { offset: 100 }, `range not aligned to ${SECTOR}-byte sectors`],
    ["unaligned length", { length: 700 }, `range not aligned to ${SECTOR}-byte sectors`],
    ["past the end", { offset: DATASIZE - SECTOR, length: 2 * SECTOR }, `range ends past the data size ${DATASIZE}`],
  ];
  for (const [name, r, why] of invalid) {
    test(`rejects ${name} with EINVAL and executes nothing`, () => {
      const { e } = engine();
      const full = req({ seq: 3, ...r, memsync: true });
      expect(e.receive(full)).toEqual([]); // no early answer for what will be refused
      expect(e.request(full)).toEqual([
        { type: "log", level: "warn", message: `Rejected ${full.kind} request ${full.seq}: ${why}.` },
        { type: "copy", complete: false },
        { type: "reply", seq: full.seq, error: "EINVAL", received: false },
      ]);
    });
  }

  test("accepts the edges: last sector, a maximal write, a trim longer than the request limit", () => {
    const { e } = engine();
    e.request(req({ seq: 1 }));
    // A change to an extent not yet marked writes the map first.
    expect(e.request(req({ seq: 2, offset: DATASIZE - SECTOR })).map((a) => a.type)).toEqual(["map", "local"]);
    expect(e.request(req({ seq: 3, length: MAX_REQUEST })).map((a) => a.type)).toEqual(["map", "local"]);
    expect(e.request(req({ seq: 4, kind: "delete", length: DATASIZE })).map((a) => a.type)).toEqual(["map", "local"]);
  });
});

describe("SecondaryEngine keeps unflushed changes in its map", () => {
  test("a write stays dirty until a flush issued after it succeeds", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, offset: 2 * EXTENT }));
    e.localDone(1, null);
    expect(map.extentState(2).dirty).toBe(true);
    e.request(req({ seq: 2, kind: "flush", offset: 0, length: 0 }));
    e.localDone(2, null);
    expect(map.extentState(2).dirty).toBe(false);
    expect(map.extentState(2).on_disk).toBe(false); // the flush made it durable: nothing to hand back
  });

  test("what a failed flush covered stays marked though a later flush succeeds (it may have been dropped)", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, offset: 2 * EXTENT }));
    e.localDone(1, null);
    e.request(req({ seq: 2, kind: "flush", offset: 0, length: 0 }));
    e.localDone(2, "EIO");
    e.request(req({ seq: 3, offset: 4 * EXTENT })); // after the flush failed
    e.localDone(3, null);
    e.request(req({ seq: 4, kind: "flush", offset: 0, length: 0 }));
    e.localDone(4, null);
    expect(map.extentState(4).dirty).toBe(false); // covered by the good flush
    expect(map.extentState(2)).toMatchObject({ dirty: true, on_disk: true }); // handed back at the next handshake
    e.allDurable();
    expect(map.extentState(2).on_disk).toBe(true);
  });

  test("a failed flush keeps marked what was written before it failed, though later flushes cover it", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "flush", offset: 0, length: 0 }));
    e.request(req({ seq: 2, offset: 3 * EXTENT })); // after flush 1 was issued, before it failed
    e.localDone(2, null);
    e.request(req({ seq: 3, kind: "flush", offset: 0, length: 0 })); // covers extent 3
    e.request(req({ seq: 4, offset: 5 * EXTENT }));
    e.localDone(4, null);
    e.localDone(1, "EIO"); // the write-back error may have dropped extents 3 and 5 too
    e.localDone(3, null);
    e.request(req({ seq: 5, kind: "flush", offset: 0, length: 0 }));
    e.localDone(5, null);
    expect(map.extentState(3)).toMatchObject({ dirty: true, on_disk: true });
    expect(map.extentState(5)).toMatchObject({ dirty: true, on_disk: true });
  });

  test("a failed flush keeps marked a synchronization write still under way when it failed (its first pages may be lost)", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "flush", offset: 0, length: 0 }));
    e.request(req({ seq: 2, offset: 3 * EXTENT })); // landing from the socket when flush 1 fails
    e.localDone(1, "EIO");
    e.localDone(2, null);
    e.request(req({ seq: 3, kind: "flush", offset: 0, length: 0 }));
    e.localDone(3, null);
    expect(map.extentState(3)).toMatchObject({ dirty: true, on_disk: true });
    e.allDurable();
    expect(map.extentState(3).on_disk).toBe(true);
  });

  test("a write that completes after a flush was issued is not released by it", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, offset: 5 * EXTENT }));
    e.request(req({ seq: 2, kind: "flush", offset: 0, length: 0 }));
    e.localDone(1, null);
    e.localDone(2, null);
    expect(map.extentState(5).dirty).toBe(true);
  });
});

describe("SecondaryEngine releases a flush's marks together", () => {
  const flush = (seq: number) => req({ seq, kind: "flush", offset: 0, length: 0 });
  const mapWrites = (actions: SecondaryAction[]) => actions.filter((a) => a.type === "map");

  test("a pass marks each extent it writes, only those, and the flush at its end releases every mark in one write", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "read" })); // the first request clears the map
    let writes = 0;
    for (let x = 0; x < 8; x++) {
      writes += mapWrites(e.request(req({ seq: 10 + x, offset: x * EXTENT, length: EXTENT }))).length;
      e.localDone(10 + x, null);
    }
    expect(writes).toBe(8);
    expect(map.diskImage()[0]).toBe(0xff);
    expect(map.diskImage()[1]).toBe(0); // nothing marked past what was written
    e.request(flush(30));
    expect(mapWrites(e.localDone(30, null))).toHaveLength(1);
    expect(map.dirtyExtentCount()).toBe(0);
    expect(map.diskImage().every((b) => b === 0)).toBe(true);
  });
});

describe("SecondaryEngine.allDurable", () => {
  test("after a full flush with nothing in flight, every extent is released and the map is clean", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, offset: 2 * EXTENT }));
    e.localDone(1, null);
    e.request(req({ seq: 2, kind: "flush", offset: 0, length: 0 }));
    e.request(req({ seq: 3, offset: 6 * EXTENT }));
    e.localDone(3, null);
    expect(map.extentState(2).dirty && map.extentState(6).dirty).toBe(true);
    const actions = e.allDurable();
    expect(actions.every((a) => a.type === "map")).toBe(true);
    expect(map.dirtyExtentCount()).toBe(0);
    expect(map.diskImage().every((b) => b === 0)).toBe(true);
  });
});

describe("SecondaryEngine marks only synchronization writes (and digests)", () => {
  test("a regular write touches no map (the primary holds its extent until a flush)", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "read" })); // the first request clears the map
    expect(e.request(req({ seq: 2, offset: 3 * EXTENT, sync: false })).map((a) => a.type)).toEqual(["local"]);
    e.localDone(2, null);
    expect(map.extentState(3).dirty).toBe(false);
  });

  test("a memsync write that fails after its received answer marks its extents, on disk before its error is answered, through flushes and allDurable", () => {
    // The primary may never get that answer (the link can go between the two).
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "read" })); // the first request clears the map
    const w = req({ seq: 2, offset: 3 * EXTENT, length: 2 * EXTENT, sync: false, memsync: true });
    expect(e.receive(w)).toEqual([{ type: "reply", seq: 2, error: null, received: true }]);
    e.request(w);
    const done = e.localDone(2, "EIO");
    expect(done.map((a) => a.type).join(" ")).toMatch(/^(map )+copy reply$/);
    expect([3, 4].map((x) => map.extentState(x))).toMatchObject([{ dirty: true, on_disk: true }, { dirty: true, on_disk: true }]);
    e.request(req({ seq: 3, kind: "flush", offset: 0, length: 0 }));
    e.localDone(3, null);
    e.allDurable();
    expect([3, 4].map((x) => map.extentState(x).on_disk)).toEqual([true, true]); // handed back at the next handshake
  });

  test("an IN_SYNC counting that error answer releases the marks: the primary had it and copied the extents again", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "read" }));
    e.localDone(1, null);
    for (const seq of [2, 3]) { // the same extent twice: marked once
      const w = req({ seq, offset: 3 * EXTENT, length: EXTENT, sync: false, memsync: true });
      e.receive(w);
      e.request(w);
      e.localDone(seq, "EIO");
    }
    e.inSync(1); // the primary counted one error answer of the two: the marks stay
    expect(map.extentState(3).dirty).toBe(true);
    e.inSync(2);
    expect(e.complete).toBe(true);
    expect(map.extentState(3).dirty).toBe(false);
  });

  test("other failed changes leave the map as it was: the primary learns of them by their answer or the lost link", () => {
    for (const o of [{ kind: "write", sync: false }, { kind: "delete", sync: false }, { kind: "write", sync: true }] as const) {
      const { e, map } = engine();
      e.request(req({ seq: 1, kind: "read" }));
      e.request(req({ seq: 2, ...o, offset: 6 * EXTENT, length: EXTENT }));
      expect(e.localDone(2, "EIO").map((a) => a.type)).toEqual(["copy", "reply"]);
      e.request(req({ seq: 3, kind: "flush", offset: 0, length: 0 }));
      e.localDone(3, null);
      expect(map.extentState(6).dirty).toBe(false);
    }
  });

  test("a synchronization's digest (SYNC DIGEST READ) is marked like a sync write until a flush; a verification's (no SYNC) and plain reads are not", () => {
    const { e, map } = engine();
    e.request(req({ seq: 1, kind: "read" })); // the first request clears the map
    const read = (seq: number, extent: number, o: Partial<SecondaryRequest>) =>
      e.request(req({ seq, kind: "read", offset: extent * EXTENT, length: EXTENT, ...o })).map((a) => a.type);
    expect(read(2, 3, { sync: true, digest: true })).toEqual(["map", "local"]); // marked before it is read
    expect(map.extentState(3).dirty).toBe(true);
    expect(read(3, 4, { sync: false, digest: true })).toEqual(["local"]);
    expect(read(4, 5, { sync: true })).toEqual(["local"]);
    for (const seq of [2, 3, 4]) e.localDone(seq, null);
    e.request(req({ seq: 5, kind: "flush", offset: 0, length: 0 }));
    expect(map.extentState(3).dirty).toBe(true); // until the flush succeeded
    e.localDone(5, null);
    expect([3, 4, 5].map((x) => map.extentState(x).dirty)).toEqual([false, false, false]);
  });
});

describe("SecondaryEngine keeps whether this node's copy is whole", () => {
  const copies = (actions: SecondaryAction[]) => actions.filter((a) => a.type === "copy");

  test("a failed write, trim or flush makes it incomplete before the error is answered; a failed read does not", () => {
    for (const kind of ["write", "delete", "flush"] as const) {
      const { e } = engine();
      e.request(req({ seq: 1, kind, offset: 0, length: kind === "flush" ? 0 : SECTOR, sync: false }));
      const done = e.localDone(1, "EIO");
      expect(done.map((a) => a.type).slice(-2)).toEqual(["copy", "reply"]);
      expect(copies(done)).toEqual([{ type: "copy", complete: false }]);
      expect(e.complete).toBe(false);
    }
    const { e } = engine();
    e.request(req({ seq: 1, kind: "read", sync: false }));
    expect(copies(e.localDone(1, "EIO"))).toEqual([]);
    expect(e.complete).toBe(true);
  });

  test("a rejected change counts as failed too", () => {
    const { e } = engine();
    const actions = e.request(req({ seq: 1, offset: DATASIZE }));
    expect(actions.map((a) => a.type)).toEqual(["log", "copy", "reply"]);
    expect(e.complete).toBe(false);
  });

  test("IN_SYNC makes it whole only when the primary had received every error reply sent", () => {
    const { e } = engine([], false);
    e.request(req({ seq: 1, kind: "read", sync: false }));
    e.localDone(1, "EIO"); // one error reply sent
    expect(e.inSync(0)).toEqual([]); // sent before the primary saw it
    expect(e.complete).toBe(false);
    expect(e.inSync(1)).toEqual([{ type: "copy", complete: true }]);
    expect(e.complete).toBe(true);
    expect(e.inSync(1)).toEqual([]); // already whole
  });

  test("IN_SYNC waits for the changes in flight when it came; a failure among them cancels it", () => {
    const { e } = engine([], false);
    e.request(req({ seq: 1, sync: false }));
    e.request(req({ seq: 2, kind: "flush", offset: 0, length: 0 }));
    e.request(req({ seq: 3, kind: "read", sync: false }));
    expect(e.inSync(0)).toEqual([]);
    expect(copies(e.localDone(1, null))).toEqual([]);
    expect(copies(e.localDone(3, null))).toEqual([]); // reads are not waited for
    expect(copies(e.localDone(2, null))).toEqual([{ type: "copy", complete: true }]);

    const { e: f } = engine([], false);
    f.request(req({ seq: 1, kind: "flush", offset: 0, length: 0 }));
    f.inSync(0);
    expect(copies(f.localDone(1, "EIO"))).toEqual([]); // incomplete already; the wait is off
    expect(f.complete).toBe(false);
    expect(f.inSync(0)).toEqual([]); // the primary had not seen that error
    expect(f.inSync(1)).toEqual([{ type: "copy", complete: true }]);
  });

  test("a change arriving after IN_SYNC is not waited for, but its failure makes the copy incomplete again", () => {
    const { e } = engine([], false);
    expect(e.inSync(0)).toEqual([{ type: "copy", complete: true }]);
    e.request(req({ seq: 4, sync: false }));
    expect(copies(e.localDone(4, "EIO"))).toEqual([{ type: "copy", complete: false }]);
  });

  test("allDurable ends a wait for requests whose answers the lost link did not carry", () => {
    const { e } = engine([], false);
    e.request(req({ seq: 1, kind: "flush", offset: 0, length: 0 }));
    expect(e.inSync(0)).toEqual([]);
    expect(copies(e.allDurable())).toEqual([{ type: "copy", complete: true }]);
  });
});
