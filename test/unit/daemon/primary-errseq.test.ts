// A primary's map and metadata writes against Linux's once-per-open-file write-back error
// reporting (errseq-model.ts). A FLUSH's fdatasync on the pool can look at the file's error first,
// while a map or metadata write syncs on the event loop: through one descriptor, the FLUSH took
// the error of the map or metadata page, that write passed for durable, and nothing wrote it again
// (an acknowledged write in no map on disk; a localcnt bump lost). Through the component's twin
// (MetadataStore own_file), the store is told of every error itself. Found by a review of
// write-back error attribution.
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { ACTIVEMAP_OFFSET, METADATA_AREA_BYTES } from "../../../src/core/layout.ts";
import { decodeMetadataArea } from "../../../src/core/metadata.ts";
import { PrimaryEngine } from "../../../src/core/primary-engine.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { PrimaryIo } from "../../../src/daemon/primary-io.ts";
import { newStatistics } from "../../../src/daemon/statistics.ts";
import type { LocalDisk } from "../../../src/io/disk.ts";
import { ErrseqModel, install, modelComponent, openModelDisk, PAGE, removeModelFile, uninstall } from "../io/errseq-model.ts";

const FILE = join(tmpdir(), `hast-primary-errseq-${process.pid}.img`);
let disk: LocalDisk | null = null;
afterEach(() => {
  if (disk && !disk.closed) disk.close();
  uninstall();
  removeModelFile(FILE);
});

function primary() {
  const m = new ErrseqModel();
  install(m);
  disk = openModelDisk(FILE);
  const { meta, store } = modelComponent(disk, "primary");
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 64, sectorsize: 512, mapsize: meta.mapsize });
  map.copyIn(store.readMap(meta.mapsize));
  const engine = new PrimaryEngine(map, { resuid: 1n, localcnt: 1n, remotecnt: 1n, flags: 0 }, "fullsync");
  const io = new PrimaryIo({
    disk, store, meta, engine, stats: newStatistics(), log: new Logger({ write() {} }, 0), emit() {}, verified() {},
    verify_rate: null, sync_rate: null, resync_digest: false,
  });
  const outcome = (p: Promise<void> | void | null) => Promise.resolve(p).then(() => "ok", () => "failed");
  const stableMapBit = (e: number) => {
    const b = new Uint8Array(1);
    m.read(b, ACTIVEMAP_OFFSET + (e >> 3), true);
    return (b[0]! >> (e & 7)) & 1;
  };
  const stableMeta = () => {
    const area = new Uint8Array(METADATA_AREA_BYTES);
    m.read(area, 0, true);
    return decodeMetadataArea(area).meta;
  };
  return { m, meta, io, engine, outcome, stableMapBit, stableMeta };
}

test("a map write during a FLUSH's fdatasync learns its page's error: the mark reaches the disk before the stop says all is written", async () => {
  const s = primary();
  expect(await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xaa), false))).toBe("ok");
  expect(await s.outcome(s.io.flush())).toBe("ok");
  const flush = s.outcome(s.io.flush()); // its fdatasync runs on the pool
  await Bun.sleep(1);
  s.m.failNext((p) => p * PAGE >= ACTIVEMAP_OFFSET && p * PAGE < s.meta.localoff); // the next map page written
  const extent = 300;
  await s.outcome(s.io.write(extent * s.meta.extentsize, new Uint8Array(PAGE).fill(0xbb), false));
  await flush;
  for (let i = 0; i < 2; i++) await s.outcome(s.io.flush());
  await s.io.localIoSettled();
  expect(s.io.writeBeforeStop()).toBe(true);
  // Acknowledged or not, the write's extent is marked on disk: a restart resynchronizes it.
  expect(s.stableMapBit(extent)).toBe(1);
});

test("a localcnt bump during a FLUSH's fdatasync learns its page's error: the counters on disk end as the engine has them", async () => {
  const s = primary();
  const flush = s.outcome(s.io.flush());
  await Bun.sleep(1);
  s.m.failNext((p) => p * PAGE < ACTIVEMAP_OFFSET); // the metadata slot's page
  await s.outcome(s.io.write(0, new Uint8Array(PAGE).fill(0xaa), false)); // first change while apart: localcnt + 1
  await flush;
  for (let i = 0; i < 2; i++) await s.outcome(s.io.flush());
  await s.outcome(s.io.write(PAGE, new Uint8Array(PAGE).fill(0xcc), false));
  await s.io.localIoSettled();
  const written = s.io.writeBeforeStop();
  expect(s.engine.generation.localcnt).toBe(2n);
  expect(written).toBe(true);
  expect(s.stableMeta().localcnt).toBe(2n);
});
