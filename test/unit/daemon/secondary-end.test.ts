// The end of a secondary's link over a real component (LocalDisk): lost() waits for the helper
// threads' work, flushes and closes. The link can be lost in the middle of a batch the worker
// carries out (a reply's write meets a reset socket: Bun's write returns -1 at once), and the rest
// of the batch still runs; a FLUSH among it starts its fdatasync after lost() was called. The
// worker once looked for work in flight before that, closed the disk under the FLUSH and died as
// "a bug in hastd" (found by a review of the secondary's data path).
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { computeLayout } from "../../../src/core/layout.ts";
import type { Metadata } from "../../../src/core/metadata.ts";
import { EX_OK } from "../../../src/core/sysexits.ts";
import { SecondaryEngine } from "../../../src/core/secondary-engine.ts";
import { SecondaryWorker } from "../../../src/daemon/secondary.ts";
import { BufferPool } from "../../../src/gate/buffer-pool.ts";
import { LocalDisk } from "../../../src/io/disk.ts";
import { MetadataStore } from "../../../src/io/metadata-store.ts";

const MiB = 1024 * 1024;
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

test("link lost while the worker carries out a batch with a FLUSH in it: the FLUSH is waited for, the end is orderly", async () => {
  const dir = mkdtempSync(join(tmpdir(), "hast-secondary-end-"));
  dirs.push(dir);
  const path = join(dir, "c.img");
  writeFileSync(path, "");
  truncateSync(path, 64 * MiB);
  const disk = LocalDisk.open(path, { write: true });
  const layout = computeLayout({ mediasize: 64 * MiB, sectorsize: 512, extentsize: MiB, keepdirty: 0 });
  const meta: Metadata = {
    resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
    mapsize: layout.mapsize, sectorsize: 512, resuid: 1n, localcnt: 1n, remotecnt: 1n, prevrole: "secondary", flags: 0,
  };
  const store = new MetadataStore(disk);
  store.initialize(meta);
  store.read();
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: 1, sectorsize: 512, mapsize: meta.mapsize });
  map.copyIn(store.readMap(meta.mapsize));
  const engine = new SecondaryEngine(map, { datasize: meta.datasize, sector_bytes: 512, max_request_bytes: 4 * MiB }, true);
  let armed = false;
  let closed = false;
  const logs: string[] = [];
  const log = { debug: () => {}, info: () => {}, warn: (m: string) => logs.push(m), error: (m: string) => logs.push(m) };
  const Worker = SecondaryWorker as unknown as new (...args: unknown[]) => {
    onFrame(frame: object): void;
    carryOut(): void;
    lost(reason: string): void;
    done: Promise<number>;
  };
  const link = {
    send: () => {},
    // What PeerLink.flush does when the socket's write fails: the link is lost, synchronously.
    flush: () => {
      if (!armed || closed) return;
      closed = true;
      worker.lost("write on a reset socket");
    },
    close: () => {},
    get closed() {
      return closed;
    },
    landingTo: () => null,
  };
  const worker = new Worker(disk, store, meta, engine, link, new BufferPool(4096, 1 << 24), log, { emit: () => {}, report: () => {} }, 4);
  const rejections: unknown[] = [];
  const onRejection = (e: unknown) => rejections.push(e);
  process.on("unhandledRejection", onRejection);
  try {
    worker.onFrame({ kind: "write", seq: 1, offset: 0, length: 65536, memsync: false, sync: false, data: new Uint8Array(65536).fill(0xab) });
    worker.onFrame({ kind: "flush", seq: 2 });
    armed = true; // the batch's early answers are written first: that write loses the link
    worker.carryOut();
    const code = await Promise.race([worker.done, Bun.sleep(5000).then(() => "no end within 5 s")]);
    await Bun.sleep(50);
    expect(rejections).toEqual([]);
    expect(code).toBe(EX_OK);
    expect(disk.closed).toBe(true);
  } finally {
    process.off("unhandledRejection", onRejection);
    if (!disk.closed) disk.close();
  }
});
