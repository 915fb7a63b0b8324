// PrimaryIo without a peer: requests the engine answers within submit() (the common case of an
// unreplicated write) and those that wait for a map update resolve and reject alike; reads the
// page cache cannot answer wait for the disk on a helper thread, not on the event loop.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ActiveMap } from "../../../src/core/activemap.ts";
import { computeLayout } from "../../../src/core/layout.ts";
import type { Metadata } from "../../../src/core/metadata.ts";
import { PrimaryEngine } from "../../../src/core/primary-engine.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { PrimaryIo } from "../../../src/daemon/primary-io.ts";
import { newStatistics } from "../../../src/daemon/statistics.ts";
import { BackendError } from "../../../src/gate/block-backend.ts";
import { LocalDisk } from "../../../src/io/disk.ts";
import { MetadataStore } from "../../../src/io/metadata-store.ts";
import { setFaultInjection } from "../../../src/native.ts";

const MIB = 1 << 20;
let dir: string;
const opened: LocalDisk[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "hast-primary-io-"));
});

afterEach(() => {
  setFaultInjection(undefined);
  for (const d of opened.splice(0)) d.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A primary with no peer over a fresh 16 MiB component. */
function primaryIo(changes_listed_max?: number): { io: PrimaryIo; disk: LocalDisk; meta: Metadata; stats: ReturnType<typeof newStatistics> } {
  const file = join(dir, "component.img");
  writeFileSync(file, "");
  truncateSync(file, 16 * MIB);
  const setup = LocalDisk.open(file, { write: true });
  const layout = computeLayout({ mediasize: setup.size_bytes, sectorsize: setup.sector_bytes, extentsize: 0, keepdirty: 0 });
  const meta: Metadata = {
    resource: "r0", datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty, localoff: layout.localoff,
    mapsize: layout.mapsize, sectorsize: layout.sectorsize, resuid: 0n, localcnt: 0n, remotecnt: 0n, prevrole: "init", flags: 0,
  };
  new MetadataStore(setup).initialize(meta);
  setup.close();
  const disk = LocalDisk.open(file, { write: true });
  opened.push(disk);
  const store = new MetadataStore(disk);
  const map = new ActiveMap({ datasize: meta.datasize, extentsize: meta.extentsize, keepdirty: meta.keepdirty, sectorsize: disk.sector_bytes, mapsize: meta.mapsize });
  map.copyIn(store.readMap(meta.mapsize));
  // Mark every extent dirty up front, as a long-running primary without a peer has them: no
  // write then needs a map update, so each is answered within submit().
  const engine = new PrimaryEngine(map, { resuid: 0n, localcnt: 1n, remotecnt: 0n, flags: 0 }, "memsync", { changes_listed_max });
  const stats = newStatistics();
  const io = new PrimaryIo({ disk, store, meta, engine, stats, log: new Logger({ write() {} }, 0), emit() {}, verified() {}, verify_rate: null, sync_rate: null, resync_digest: false });
  return { io, disk, meta, stats };
}

describe("PrimaryIo without a peer", () => {
  test("writes resolve and land, whether answered within submit or after a map update", async () => {
    const { io, disk, meta } = primaryIo();
    for (let i = 0; i < 40; i++) {
      const data = new Uint8Array(4096).fill(i + 1);
      const offset = (i % 4) * meta.extentsize;
      const answer = io.write(offset, data, false);
      // The first write of each extent waits for its map update; the later ones are answered
      // within the call, and say so without a promise.
      expect(answer === null).toBe(i >= 4);
      await answer;
      const back = new Uint8Array(4096);
      disk.read(back, meta.localoff + offset);
      expect(back).toEqual(data);
    }
    // Many at once, as an NBD connection submits a batch.
    await Promise.all(Array.from({ length: 64 }, (_, i) => io.write(i * 4096, new Uint8Array(4096).fill(9), false)));
  });

  test("a write that fails locally rejects with the disk's error, each time", async () => {
    const { io } = primaryIo();
    // The first write of the period bumps localcnt and marks extent 0; then its data writes fail.
    await io.write(0, new Uint8Array(4096), false);
    setFaultInjection("pwrite:component.img:EROFS");
    for (let i = 1; i < 5; i++) {
      const err = await Promise.resolve(io.write(i * 4096, new Uint8Array(4096), false)).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BackendError);
      expect((err as BackendError).code).toBe("EROFS");
    }
  });

  test("a failure does not stick to later successes: reads still answer", async () => {
    const { io } = primaryIo();
    await io.write(0, new Uint8Array(4096).fill(7), false);
    setFaultInjection("pwrite:component.img:EROFS");
    await expect(io.write(4096, new Uint8Array(4096), false)).rejects.toBeInstanceOf(BackendError);
    const into = new Uint8Array(4096);
    await io.read(0, into);
    expect(into).toEqual(new Uint8Array(4096).fill(7));
  });

  test("a read that waits for the disk does not hold up the requests behind it", async () => {
    const { io } = primaryIo();
    await io.write(0, new Uint8Array(4096).fill(7), false);
    await io.write(MIB, new Uint8Array(4096).fill(8), false);
    // The next read of the component waits 200 ms for its (slow) disk; the page cache cannot
    // tell, so the read goes to a helper thread (a synchronous read would sleep here, in submit).
    setFaultInjection("pread:component.img:delay=200:1");
    const order: string[] = [];
    const slow = new Uint8Array(4096);
    const fast = new Uint8Array(4096);
    const reads = [
      io.read(0, slow).then(() => order.push("slow read")),
      io.read(MIB, fast).then(() => order.push("fast read")),
      Promise.resolve(io.write(2 * MIB, new Uint8Array(4096).fill(9), false)).then(() => order.push("write")),
    ];
    await Promise.all(reads);
    expect(order).toEqual(["fast read", "write", "slow read"]);
    expect(slow).toEqual(new Uint8Array(4096).fill(7));
    expect(fast).toEqual(new Uint8Array(4096).fill(8));
    await io.localIoSettled();
  });

  test("past the change lists' bound the primary flushes on its own, and a failure of that flush reaches the next application flush", async () => {
    const outcome = async (changes_listed_max?: number) => {
      const { io } = primaryIo(changes_listed_max);
      const writeThree = async () => {
        for (let e = 0; e < 3; e++) await io.write(e * 2 * MIB, new Uint8Array(4096).fill(e + 1), false);
        await io.localIoSettled(); // a flush the engine asked for runs on a helper thread
      };
      await writeThree(); // the extents' map updates (each flushed) are behind us
      setFaultInjection("fdatasync:component.img:EIO:1");
      await writeThree();
      setFaultInjection(undefined);
      return io.flush().then(() => "ok", () => "failed");
    };
    expect(await outcome()).toBe("ok"); // the default bound: nothing flushed the disk in between
    expect(await outcome(1)).toBe("failed");
  });

  test("a read that fails on its helper thread rejects with the disk's error, and the next one answers", async () => {
    const { io } = primaryIo();
    await io.write(0, new Uint8Array(4096).fill(3), false);
    setFaultInjection("pread:component.img:EIO:1");
    const err = await io.read(0, new Uint8Array(4096)).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BackendError);
    expect((err as BackendError).code).toBe("EIO");
    const into = new Uint8Array(4096);
    await io.read(0, into);
    expect(into).toEqual(new Uint8Array(4096).fill(3));
  });
});
