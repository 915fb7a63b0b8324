// The secondary's metadata write against Linux's once-per-open-file write-back error reporting
// (errseq-model.ts): a FLUSH's fdatasync on the pool looks at the file's error first while the
// "copy incomplete" write syncs on the event loop. Through one descriptor the FLUSH took that
// page's error, the flag never reached the disk, the copy stayed promotable and the worker ended
// "orderly" (the main process then dropped its own record of the error). Through the twin the
// store learns of it (review of write-back error attribution).
import { afterEach, expect, test } from "bun:test";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { ACTIVEMAP_OFFSET, METADATA_AREA_BYTES } from "../../../src/core/layout.ts";
import { decodeMetadataArea, FLAG_COPY_INCOMPLETE } from "../../../src/core/metadata.ts";
import { SecondaryEngine } from "../../../src/core/secondary-engine.ts";
import { EX_OK } from "../../../src/core/sysexits.ts";
import { SecondaryWorker } from "../../../src/daemon/secondary.ts";
import { BufferPool } from "../../../src/gate/buffer-pool.ts";
import type { LocalDisk } from "../../../src/io/disk.ts";
import { ErrseqModel, install, modelComponent, openModelDisk, PAGE, removeModelFile, uninstall } from "../io/errseq-model.ts";

const FILE = join(tmpdir(), `hast-secondary-errseq-${process.pid}.img`);
const PAYLOAD = 64 * 1024;
let disk: LocalDisk | null = null;
afterEach(() => {
  if (disk && !disk.closed) disk.close();
  uninstall();
  removeModelFile(FILE);
});

test("a 'copy incomplete' write during a FLUSH's fdatasync learns its page's error: the flag reaches the disk, the end is not orderly", async () => {
  const m = new ErrseqModel();
  install(m);
  disk = openModelDisk(FILE);
  const { meta, store } = modelComponent(disk, "secondary");
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
  map.copyIn(store.readMap(meta.mapsize));
  const engine = new SecondaryEngine(map, { datasize: meta.datasize, sector_bytes: 512, max_request_bytes: 4 * 1024 * 1024 }, true);
  const link = { send: () => {}, flush: () => {}, close: () => {}, landingTo: () => null };
  const log = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
  const Worker = SecondaryWorker as unknown as new (...args: unknown[]) => {
    onFrame(frame: object): void;
    carryOut(): void;
    lost(reason: string): void;
    done: Promise<number>;
  };
  const worker = new Worker(disk, store, meta, engine, link, new BufferPool(PAGE, 1 << 24), log, { emit: () => {}, report: () => {} }, 4);
  const send = (frame: object) => {
    worker.onFrame(frame);
    worker.carryOut();
  };
  send({ kind: "write", seq: 1, offset: 0, length: PAYLOAD, memsync: false, sync: false, data: new Uint8Array(PAYLOAD).fill(0xaa) });
  send({ kind: "flush", seq: 2 }); // its fdatasync runs on the pool
  await Bun.sleep(1);
  m.failNext((p) => p * PAGE < ACTIVEMAP_OFFSET); // the metadata page written next
  send({ kind: "write", seq: 3, offset: 1, length: 512, memsync: false, sync: false, data: new Uint8Array(512) }); // refused: copy incomplete
  await Bun.sleep(60);
  worker.lost("test");
  const code = await worker.done;
  const area = new Uint8Array(METADATA_AREA_BYTES);
  m.read(area, 0, true);
  expect(decodeMetadataArea(area).meta.flags & FLAG_COPY_INCOMPLETE).toBe(FLAG_COPY_INCOMPLETE);
  expect(code).not.toBe(EX_OK);
});
