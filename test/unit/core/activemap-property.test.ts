// Property test: random interleavings of writes (both legs), remote failures, map writes
// reaching the disk, sync chunks, disconnects and primary crashes. A model keeps the
// content version of every sector on both nodes and the map image that really reached
// the disk (only MapWrites the "caller" applied, in order, possibly torn by a crash).
//
// Checked after every step:
//   - every extent whose two copies may differ (different versions, or a write whose data
//     was issued and has not finished on both legs) is set in the durable map image;
//   - after a crash, copyIn of that image puts every differing extent in the sync set;
//   - the activemap's own invariants (checkInvariants).
// At the end of each sequence, syncing to completion makes both copies identical and
// leaves only keepdirty extents on disk.

import { describe, expect, test } from "bun:test";
import { ActiveMap, type MapWrite, type SyncChunk } from "../../../src/core/activemap.ts";
import { RangeLock } from "../../../src/core/rangelock.ts";
import { prng } from "../../fuzz/prng.ts";

const SECTOR = 512;
const EXTENT = 4096;
const NEXTENTS = 12;
const DATASIZE = NEXTENTS * EXTENT - 2 * SECTOR; // short last extent
const NSECTORS = DATASIZE / SECTOR;
const MAX_WRITES_IN_FLIGHT = 6;
/** HAST_PROPERTY_SEQUENCES=20000 for a deeper run. */
const SEQUENCES = Number(process.env.HAST_PROPERTY_SEQUENCES ?? 2000);
const STEPS = 250;

type Leg = "pending" | "ok" | "failed";

interface Write {
  offset: number;
  length: number;
  version: number;
  need_seq: number;
  issued: boolean;
  local: Leg;
  remote: Leg;
  token: number;
}

interface Chunk {
  chunk: SyncChunk;
  token: number | null;
}

class Model {
  readonly rand: () => number;
  local = new Uint32Array(NSECTORS);
  remote = new Uint32Array(NSECTORS);
  version = 0;
  keepdirty: number;
  am!: ActiveMap;
  durable!: Uint8Array;
  queue: MapWrite[] = [];
  applied_seq = 0;
  writes: Write[] = [];
  chunks: Chunk[] = [];
  locks = new RangeLock();
  connected = true;

  constructor(seed: number) {
    this.rand = prng(seed);
    this.keepdirty = 1 + this.int(4);
    this.boot(null);
  }

  int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  /** Starts a worker on the component: fresh activemap loaded from the durable image. */
  boot(image: Uint8Array | null): void {
    this.am = new ActiveMap({ datasize: DATASIZE, extentsize: EXTENT, keepdirty: this.keepdirty, sectorsize: SECTOR, chunk_bytes: 1024 });
    this.durable = image ?? new Uint8Array(this.am.mapsize);
    this.am.copyIn(this.durable);
    this.queue = [];
    this.applied_seq = 0;
    this.writes = [];
    this.chunks = [];
    this.locks = new RangeLock();
  }

  push(write: MapWrite | null): void {
    if (write === null) return;
    expect(write.seq).toBe(this.applied_seq + this.queue.length + 1);
    this.queue.push(write);
  }

  applyOne(): void {
    const write = this.queue.shift()!;
    for (const piece of write.pieces) this.durable.set(piece.bytes, piece.offset);
    this.applied_seq = write.seq;
  }

  step(): void {
    const r = this.int(100);
    if (r < 22) this.startWrite();
    else if (r < 40) this.queue.length > 0 && this.applyOne();
    else if (r < 52) this.issue();
    else if (r < 66) this.finishLeg();
    else if (r < 72) this.complete();
    else if (r < 86) this.syncStep();
    else if (r < 90) this.toggleLink();
    else if (r < 91) this.crash();
  }

  startWrite(): void {
    if (this.writes.length >= MAX_WRITES_IN_FLIGHT) return;
    const sectors = 1 + this.int(12);
    const first = this.int(NSECTORS - sectors + 1);
    const offset = first * SECTOR;
    const length = sectors * SECTOR;
    const token = this.locks.tryLock(offset, length);
    if (token === null) return;
    this.push(this.am.writeStart(offset, length));
    const write: Write = { offset, length, version: ++this.version, need_seq: this.am.mapSeq, issued: false, local: "pending", remote: "pending", token };
    this.writes.push(write);
  }

  /** Issues the data write of a write whose map write is durable. */
  issue(): void {
    const ready = this.writes.filter((w) => !w.issued && w.need_seq <= this.applied_seq);
    if (ready.length === 0) return;
    const write = ready[this.int(ready.length)]!;
    write.issued = true;
    if (!this.connected) {
      this.push(this.am.needSync(write.offset, write.length));
      write.remote = "failed";
    }
  }

  finishLeg(): void {
    const open = this.writes.filter((w) => w.issued && (w.local === "pending" || w.remote === "pending"));
    if (open.length === 0) return;
    const write = open[this.int(open.length)]!;
    if (write.local === "pending") {
      this.land(this.local, write);
      write.local = "ok";
    } else if (this.rand() < 0.85) {
      this.land(this.remote, write);
      write.remote = "ok";
    } else {
      this.push(this.am.remoteFailed(write.offset, write.length));
      write.remote = "failed";
    }
  }

  land(side: Uint32Array, write: Write): void {
    side.fill(write.version, write.offset / SECTOR, (write.offset + write.length) / SECTOR);
  }

  complete(): void {
    const index = this.writes.findIndex((w) => w.local !== "pending" && w.remote !== "pending");
    if (index < 0) return;
    const [write] = this.writes.splice(index, 1);
    this.push(this.am.writeComplete(write!.offset, write!.length));
    this.locks.unlock(write!.token);
  }

  syncStep(): void {
    if (!this.connected) return;
    const waiting = this.chunks.find((c) => c.token === null);
    if (waiting !== undefined) {
      waiting.token = this.locks.tryLock(waiting.chunk.offset, waiting.chunk.length);
      return;
    }
    const locked = this.chunks.filter((c) => c.token !== null);
    if (locked.length > 0 && (this.chunks.length >= 3 || this.rand() < 0.5)) {
      const done = locked[this.int(locked.length)]!;
      const ok = this.rand() < 0.95;
      if (ok) this.copy(done.chunk);
      this.chunks.splice(this.chunks.indexOf(done), 1);
      this.locks.unlock(done.token!);
      this.push(this.am.syncChunkDone(done.chunk, ok));
      return;
    }
    const chunk = this.am.nextSyncChunk();
    if (chunk !== null) this.chunks.push({ chunk, token: this.locks.tryLock(chunk.offset, chunk.length) });
    else if (this.am.syncPassDone() && this.am.syncDeferredExtentCount() > 0) this.am.syncRewind();
  }

  copy(chunk: SyncChunk): void {
    const first = chunk.offset / SECTOR;
    this.remote.set(this.local.subarray(first, first + chunk.length / SECTOR), first);
  }

  toggleLink(): void {
    if (this.connected) {
      this.connected = false;
      for (const write of this.writes) {
        if (write.issued && write.remote === "pending") {
          this.push(this.am.remoteFailed(write.offset, write.length));
          write.remote = "failed";
        }
      }
      for (const c of this.chunks) if (c.token !== null) this.locks.unlock(c.token);
      this.chunks = [];
    } else {
      this.connected = true;
      const peer = new Uint8Array(this.am.mapsize);
      if (this.rand() < 0.3) peer[0] = this.int(256);
      this.push(this.am.mergeRemote(peer));
    }
  }

  /** Primary dies: legs in flight land or not, a prefix of the queued map writes lands (the next one torn). */
  crash(): void {
    for (const write of this.writes.filter((w) => w.issued)) {
      for (const [side, leg] of [[this.local, write.local], [this.remote, write.remote]] as const) {
        if (leg !== "pending") continue;
        for (let s = write.offset / SECTOR; s < (write.offset + write.length) / SECTOR; s++) {
          if (this.rand() < 0.5) side[s] = write.version;
        }
      }
    }
    const landed = this.int(this.queue.length + 1);
    for (let i = 0; i < landed; i++) this.applyOne();
    const torn = this.queue[0];
    if (torn !== undefined) {
      for (const piece of torn.pieces) {
        piece.bytes.forEach((byte, i) => {
          if (this.rand() < 0.5) this.durable[piece.offset + i] = byte;
        });
      }
    }
    this.boot(this.durable.slice());
    this.connected = this.rand() < 0.5;
    for (let e = 0; e < NEXTENTS; e++) {
      if (this.extentDiffers(e)) expect(this.am.extentState(e).in_sync_set).toBe(true);
    }
    if (this.connected) this.push(this.am.mergeRemote(new Uint8Array(this.am.mapsize)));
  }

  extentDiffers(e: number): boolean {
    const from = (e * EXTENT) / SECTOR;
    const to = Math.min(NSECTORS, ((e + 1) * EXTENT) / SECTOR);
    for (let s = from; s < to; s++) if (this.local[s] !== this.remote[s]) return true;
    return false;
  }

  durableBit(e: number): boolean {
    return (this.durable[e >> 3]! & (1 << (e & 7))) !== 0;
  }

  check(): void {
    this.am.checkInvariants();
    const unsafe = new Set<number>();
    for (let e = 0; e < NEXTENTS; e++) if (this.extentDiffers(e)) unsafe.add(e);
    for (const write of this.writes) {
      if (!write.issued || (write.local !== "pending" && write.remote !== "pending")) continue;
      const last = Math.floor((write.offset + write.length - 1) / EXTENT);
      for (let e = Math.floor(write.offset / EXTENT); e <= last; e++) unsafe.add(e);
    }
    for (const e of unsafe) {
      if (!this.durableBit(e)) throw new Error(`extent ${e} may differ between the nodes but is clean in the on-disk map`);
    }
  }

  /** Finishes everything with a healthy link and syncs until both copies match. */
  drain(): void {
    if (!this.connected) this.toggleLink();
    // Each round ends with a full sync pass; repeat until it leaves no map write behind.
    for (let round = 0; round === 0 || this.queue.length > 0; round++) {
      expect(round).toBeLessThan(10);
      while (this.queue.length > 0) this.applyOne();
      for (const write of this.writes) {
        if (!write.issued) write.issued = true;
        if (write.local === "pending") (this.land(this.local, write), (write.local = "ok"));
        if (write.remote === "pending") (this.land(this.remote, write), (write.remote = "ok"));
      }
      while (this.writes.length > 0) this.complete();
      for (const c of this.chunks) if (c.token !== null) this.locks.unlock(c.token);
      this.chunks = [];
      this.am.syncRewind();
      for (let chunk = this.am.nextSyncChunk(); chunk !== null; chunk = this.am.nextSyncChunk()) {
        this.copy(chunk);
        this.push(this.am.syncChunkDone(chunk, true));
      }
      this.check();
    }
    expect(this.am.syncPassDone()).toBe(true);
    expect(this.am.syncExtentCount()).toBe(0);
    expect(this.am.dirtyExtentCount()).toBe(0);
    expect([...this.remote]).toEqual([...this.local]);
    expect(this.durable).toEqual(this.am.diskImage());
    for (let e = 0; e < NEXTENTS; e++) {
      const state = this.am.extentState(e);
      expect(state.on_disk).toBe(state.in_keepdirty);
    }
  }
}

describe("ActiveMap property: the on-disk map covers every extent that may differ", () => {
  test(`${SEQUENCES} random sequences of ${STEPS} steps`, () => {
    let crashes = 0;
    for (let seed = 1; seed <= SEQUENCES; seed++) {
      const model = new Model(seed);
      try {
        for (let i = 0; i < STEPS; i++) {
          const before = model.am;
          model.step();
          if (model.am !== before) crashes++;
          model.check();
        }
        model.drain();
      } catch (error) {
        throw new Error(`seed ${seed}: ${(error as Error).message}`);
      }
    }
    expect(crashes).toBeGreaterThan(SEQUENCES / 2);
  }, 120_000);
});
