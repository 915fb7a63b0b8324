// PrimaryIo over a disk that fails as Linux does on a write-back error (writeback-disk.ts), with no
// peer. A map or metadata write whose fdatasync takes the error is a failed local flush: else the
// next FLUSH succeeds over the dropped change. A map write that failed leaves the map on disk
// short of bits the engine counts as set: the whole map goes first before the next write.
// Found by the session 28 reviews (the secondary had these fixes, the primary not).
import { expect, test } from "bun:test";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { ACTIVEMAP_OFFSET, computeLayout } from "../../../src/core/layout.ts";
import type { Metadata } from "../../../src/core/metadata.ts";
import { PrimaryEngine } from "../../../src/core/primary-engine.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { PrimaryIo } from "../../../src/daemon/primary-io.ts";
import { newStatistics } from "../../../src/daemon/statistics.ts";
import { MetadataStore } from "../../../src/io/metadata-store.ts";
import { PAGE, WritebackDisk } from "./writeback-disk.ts";

function primary() {
  const disk = new WritebackDisk();
  const layout = computeLayout({ mediasize: 1024 * 1024 * 1024, sectorsize: 512, extentsize: 0, keepdirty: 0 });
  const meta: Metadata = {
    resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
    mapsize: layout.mapsize, sectorsize: 512, resuid: 1n, localcnt: 1n, remotecnt: 1n, prevrole: "primary", flags: 0,
  };
  const store = new MetadataStore(disk as never);
  store.initialize(meta);
  disk.map_end = layout.localoff;
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 64, sectorsize: 512, mapsize: meta.mapsize, metaflush: true });
  map.copyIn(store.readMap(meta.mapsize));
  const engine = new PrimaryEngine(map, { resuid: 1n, localcnt: 1n, remotecnt: 1n, flags: 0 }, "fullsync");
  const io = new PrimaryIo({
    disk: disk as never, store, meta, engine, stats: newStatistics(), log: new Logger({ write() {} }, 0), emit() {}, verified() {},
    verify_rate: null, sync_rate: null, resync_digest: false,
  });
  const outcome = (p: Promise<void> | void | null) => Promise.resolve(p).then(() => "ok", () => "failed");
  const mapBit = (e: number) => {
    const b = new Uint8Array(1);
    disk.read(b, ACTIVEMAP_OFFSET + (e >> 3), true);
    return (b[0]! >> (e & 7)) & 1;
  };
  return { disk, meta, store, io, outcome, mapBit };
}

test("a write-back error taken by a map write's fdatasync fails the next FLUSH", async () => {
  const s = primary();
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xaa), false))).toBe("ok");
  expect(await s.outcome(s.io.flush())).toBe("ok");
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xbb), false))).toBe("ok"); // extent 0 dirty: no map write
  s.disk.failWriteback(s.meta.localoff); // its page dropped, the error pending on the file
  expect(await s.outcome(s.io.write(100 * s.meta.extentsize, new Uint8Array(PAGE), false))).toBe("ok"); // a new extent: its map write's fdatasync takes it
  expect(await s.outcome(s.io.flush())).toBe("failed"); // the application learns of the loss
  expect(s.mapBit(0)).toBe(1); // and the extent stays dirty
});

test("a failed map pwrite: the write writes the whole map first, so its extent is dirty on disk", async () => {
  const s = primary();
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE), false))).toBe("ok"); // localcnt bumped, extent 0 marked
  s.disk.map_pwrite_failures = 1; // extent 7's mark
  expect(await s.outcome(s.io.write(7 * s.meta.extentsize, new Uint8Array(PAGE), false))).toBe("ok");
  expect(s.mapBit(7)).toBe(1); // a crash now leaves the extent where a resync looks
});

test("a failed map pwrite whose whole-map write fails too: the write fails rather than land unmarked", async () => {
  const s = primary();
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE), false))).toBe("ok");
  s.disk.map_pwrite_failures = 2;
  expect(await s.outcome(s.io.write(9 * s.meta.extentsize, new Uint8Array(PAGE), false))).toBe("failed");
  expect(s.mapBit(9)).toBe(0);
  expect(await s.outcome(s.io.write(9 * s.meta.extentsize, new Uint8Array(PAGE), false))).toBe("ok"); // the map went whole first
  expect(s.mapBit(9)).toBe(1);
});

test("a failed metadata write is written again before the next write: the counters a restart relies on reach the disk", async () => {
  const s = primary();
  s.disk.meta_pwrite_failures = 1; // the first write's localcnt bump
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE), false))).toBe("ok");
  expect(s.store.read()!.meta.localcnt).toBe(2n); // this node changed data while apart, on disk
});

test("a metadata write that fails again fails the write, the trim and the flush behind it, until it succeeds", async () => {
  const s = primary();
  s.disk.meta_pwrite_failures = 2;
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xaa), false))).toBe("failed");
  expect(s.store.read()!.meta.localcnt).toBe(1n);
  s.disk.meta_pwrite_failures = 1;
  expect(await s.outcome(s.io.trim(0, PAGE))).toBe("failed");
  s.disk.meta_pwrite_failures = 1;
  expect(await s.outcome(s.io.flush())).toBe("failed");
  expect(await s.outcome(s.io.read(0, new Uint8Array(PAGE)))).toBe("ok"); // reads need no metadata
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xbb), false))).toBe("ok");
  expect(s.store.read()!.meta.localcnt).toBe(2n);
});

test("after a failed map write nothing reaches the secondary before the whole map is on disk (rule 6)", async () => {
  for (const failures of [1, 2]) {
    const s = primary();
    const sent: { kind: string; bit: number }[] = [];
    let closed: string | null = null;
    let onClose: (reason: string) => void = () => {};
    const link = {
      queued_bytes: 0, flush() {}, startTimers() {}, room: async () => {},
      start(_onFrame: unknown, on_close: (reason: string) => void) {
        onClose = on_close;
      },
      close(reason: string) {
        if (closed !== null) return;
        closed = reason;
        onClose(reason); // as PeerLink does: the worker lets go of the link
      },
      send(frame: { kind: string }) {
        sent.push({ kind: frame.kind, bit: s.mapBit(5) });
      },
    };
    // The secondary was primary and died with writes in flight in extent 5: it hands its map over
    // (decision row 4), and clears it on the first request it gets from here.
    const engine = (s.io as unknown as { o: { engine: PrimaryEngine } }).o.engine;
    const peer_map = new Uint8Array(64);
    peer_map[0] = 1 << 5;
    s.disk.map_pwrite_failures = failures; // the merged map's write; with 2, the rewrite too
    s.io.attach(link as never, 3, engine.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map, virgin: false, peer_cache_epoch: null }));
    await Bun.sleep(50);
    if (failures === 1) {
      expect(sent.length).toBeGreaterThan(0); // the sync went on, the map written whole first
      expect(sent.every((f) => f.bit === 1)).toBe(true);
      expect(closed).toBeNull();
    } else {
      expect(sent).toEqual([]); // the map could not be written: the link ends instead
      expect(closed!).toContain("the activemap could not be written");
    }
  }
});

test("a write the link took from the peer is not answered ok while its localcnt bump cannot be written (review)", async () => {
  const s = primary();
  const engine = (s.io as unknown as { o: { engine: PrimaryEngine } }).o.engine;
  let onClose: (reason: string) => void = () => {};
  let closed = false;
  const link = {
    queued_bytes: 0, flush() {}, startTimers() {}, room: async () => {}, send() {},
    start(_onFrame: unknown, on_close: (reason: string) => void) {
      onClose = on_close;
    },
    close(reason: string) {
      if (closed) return;
      closed = true;
      onClose(reason);
    },
  };
  s.io.attach(link as never, 4, engine.connect({ syncsrc: "primary", peer_localcnt: 1n, peer_remotecnt: 1n, peer_map: new Uint8Array(64), virgin: false, peer_cache_epoch: null }));
  const write = s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xcc), false)); // sent, landed here, the peer's answer awaited
  s.disk.meta_pwrite_failures = 2; // the bump the link's loss asks for, and its retry before the answer
  link.close("the peer went away");
  expect(await write).toBe("failed");
  expect(s.store.read()!.meta.localcnt).toBe(1n);
  // Once the counters can be written, writes are answered again (the bump goes first).
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xdd), false))).toBe("ok");
  expect(s.store.read()!.meta.localcnt).toBe(2n);
});

test("a pass whose final counters cannot be written does not tell the secondary its copy is whole", async () => {
  for (const failures of [1, 2]) {
    const s = primary();
    const engine = (s.io as unknown as { o: { engine: PrimaryEngine } }).o.engine;
    const sent: string[] = [];
    let onFrame: (f: unknown) => void = () => {};
    const link = {
      queued_bytes: 0, flush() {}, close() {}, startTimers() {}, room: async () => {},
      start(on_frame: (f: unknown) => void) {
        onFrame = on_frame;
      },
      send(frame: { kind: string; seq?: number }) {
        sent.push(frame.kind);
        if (frame.kind !== "flush") return;
        s.disk.meta_pwrite_failures = failures; // the counters the pass ends with: once, or again when written before IN_SYNC
        queueMicrotask(() => onFrame({ kind: "reply", seq: frame.seq, error: "OK", received: false, data: new Uint8Array(0) }));
      },
    };
    // The primary changed data while apart (localcnt 1 > the secondary's 0): a pass, then its flush.
    s.io.attach(link as never, 3, engine.connect({ syncsrc: "primary", peer_localcnt: 0n, peer_remotecnt: 1n, peer_map: new Uint8Array(64), virgin: false, peer_cache_epoch: null }));
    await Bun.sleep(50);
    const ondisk = s.store.read()!.meta;
    if (failures === 1) {
      expect(sent).toContain("in-sync"); // written again first, then told
      expect(ondisk.remotecnt).toBe(engine.generation.remotecnt);
    } else {
      expect(sent).not.toContain("in-sync"); // the secondary stays incomplete: not promotable
      expect(ondisk.remotecnt).not.toBe(engine.generation.remotecnt);
    }
  }
});
