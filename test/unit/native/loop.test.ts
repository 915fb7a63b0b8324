// src/native.ts and LocalDisk on a real block device: a loop device over a 64 MiB file (root only).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalDisk } from "../../../src/io/disk.ts";
import { native } from "../../../src/native.ts";

const SIZE_BYTES = 64 * 1024 * 1024;
const LOSETUP_TIMEOUT_MS = 10_000;

function skipReason(): string | undefined {
  if (process.platform !== "linux") return "loop devices are Linux only";
  if (process.getuid?.() !== 0) return "not root";
  if (Bun.which("losetup") === null) return "losetup is not installed";
  return undefined;
}

const reason = skipReason();
if (reason !== undefined) console.log(`skip loop device tests: ${reason}`);

function losetup(args: string[]): string {
  const proc = Bun.spawnSync(["losetup", ...args], { timeout: LOSETUP_TIMEOUT_MS });
  if (proc.exitCode !== 0) {
    throw new Error(`losetup ${args.join(" ")} failed (exit ${proc.exitCode}): ${proc.stderr.toString().trim()}`);
  }
  return proc.stdout.toString().trim();
}

describe.skipIf(reason !== undefined)("loop device", () => {
  let dir = "";
  let device = "";

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "hast-loop-"));
    const backing = join(dir, "backing");
    writeFileSync(backing, "");
    truncateSync(backing, SIZE_BYTES);
    device = losetup(["-f", "--show", backing]);
  });

  afterAll(() => {
    try {
      if (device !== "") losetup(["-d", device]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("kind, size via BLKGETSIZE64 and sector size via BLKSSZGET", () => {
    const fd = native.open(device, { write: false });
    try {
      expect(native.kind(fd, device)).toBe("block");
      expect(native.mediaSize(fd, device)).toBe(SIZE_BYTES);
      expect(native.sectorSize(fd, device)).toBe(512);
    } finally {
      native.close(fd, device);
    }
  });

  test("LocalDisk: read after write, flush, BLKDISCARD, BLKZEROOUT", () => {
    const disk = LocalDisk.open(device, { write: true, lock: true });
    try {
      expect(disk.kind).toBe("block");
      expect(disk.size_bytes).toBe(SIZE_BYTES);
      expect(disk.sector_bytes).toBe(512);

      const pattern = new Uint8Array(3 * 65536);
      for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
      const offset = SIZE_BYTES - pattern.length; // the very end of the device
      disk.write(pattern, offset);
      disk.flush();
      const back = new Uint8Array(pattern.length);
      disk.read(back, offset);
      expect(back).toEqual(pattern);

      // A loop device over a file discards by punching holes: the range reads back zero.
      disk.discard(offset, 65536);
      disk.zero(offset + 2 * 65536, 4096);
      disk.read(back, offset);
      expect(back.subarray(0, 65536).every((b) => b === 0)).toBe(true);
      expect(back.subarray(65536, 2 * 65536)).toEqual(pattern.subarray(65536, 2 * 65536));
      expect(back.subarray(2 * 65536, 2 * 65536 + 4096).every((b) => b === 0)).toBe(true);
      expect(back.subarray(2 * 65536 + 4096)).toEqual(pattern.subarray(2 * 65536 + 4096));
    } finally {
      disk.close();
    }
  });

  test("readMedium reads what the medium holds where the page cache still has older bytes (online verification)", async () => {
    const disk = LocalDisk.open(device, { write: true });
    try {
      const offset = 1024 * 1024;
      const old = new Uint8Array(65536).fill(0x11);
      disk.write(old, offset);
      disk.flush();
      const back = new Uint8Array(old.length);
      disk.read(back, offset); // cached now, clean
      // The medium changes beneath the device's page cache (as a disk that returns other data than
      // it was given): through the backing file, which the loop device's cache knows nothing of.
      const fd = native.open(join(dir, "backing"), { write: true });
      try {
        native.pwrite(fd, join(dir, "backing"), new Uint8Array(65536).fill(0x22), offset);
        native.fsync(fd, join(dir, "backing"));
      } finally {
        native.close(fd, join(dir, "backing"));
      }
      disk.read(back, offset);
      expect(back[0]).toBe(0x11); // through the cache: what hastd last wrote
      await disk.readMedium(back, offset);
      expect(back.every((b) => b === 0x22)).toBe(true); // from the medium
    } finally {
      disk.close();
    }
  });

  test("a misaligned BLKDISCARD is an EINVAL naming the device and range", () => {
    const disk = LocalDisk.open(device, { write: true });
    try {
      expect(() => disk.discard(100, 512)).toThrow(
        `discard ${device} at offset 100 (512 bytes): Invalid argument (EINVAL)`);
    } finally {
      disk.close();
    }
  });
});
