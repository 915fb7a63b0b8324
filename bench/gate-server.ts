#!/usr/bin/env bun
// Our NBD frontend (src/gate) over a plain file, without hastd's replication engine: the
// benchmark's "gate" target, which separates the cost of the NBD server from that of the engine
// (src/daemon/primary-io.ts, src/core). Also the thing to profile:
//   bun --cpu-prof-md --cpu-prof-dir=/tmp/prof bench/gate-server.ts <file> <socket>
// Runs until SIGTERM/SIGINT.
import { type BlockBackend } from "../src/gate/block-backend.ts";
import { NbdServer } from "../src/gate/nbd-server.ts";
import { LocalDisk } from "../src/io/disk.ts";

class FileBackend implements BlockBackend {
  readonly size_bytes: number;
  readonly block_bytes: number;

  constructor(private readonly disk: LocalDisk) {
    this.size_bytes = disk.size_bytes;
    this.block_bytes = disk.sector_bytes;
  }

  /** As hastd's primary reads (PrimaryIo.local): the page cache's part at once, the rest on a helper thread. */
  read(offset: number, into: Uint8Array): Promise<void> {
    return this.disk.readSoon(into, offset) ?? Promise.resolve();
  }

  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> | null {
    this.disk.write(data, offset);
    return fua ? this.disk.flushAsync() : null;
  }

  /** Off the event loop, as hastd's workers flush. */
  flush(): Promise<void> {
    return this.disk.flushAsync();
  }

  trim(offset: number, length: number): Promise<void> {
    this.disk.discard(offset, length);
    return Promise.resolve();
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    this.disk.zero(offset, length);
    return Promise.resolve();
  }
}

const [file, socket] = process.argv.slice(2);
if (!file || !socket) {
  console.error("usage: bun bench/gate-server.ts <file> <unix-socket>");
  process.exit(64);
}
const disk = LocalDisk.open(file, { write: true });
const server = await NbdServer.start({ listen: { unix: socket }, export_name: "gate", backend: new FileBackend(disk) });
const stop = async () => {
  await server.stop();
  disk.close();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
