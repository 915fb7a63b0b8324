// The secondary's cache epoch: the boot id, reported only once the component's cache is flushed.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootId, cacheEpoch } from "../../../src/io/cache-epoch.ts";
import { LocalDisk } from "../../../src/io/disk.ts";
import { setFaultInjection } from "../../../src/native.ts";

let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "hast-cache-epoch-"));
});

afterEach(() => {
  setFaultInjection(undefined);
  rmSync(dir, { recursive: true, force: true });
});

describe("bootId", () => {
  test("reads a boot id file into 16 bytes", () => {
    const path = join(dir, "boot_id");
    writeFileSync(path, "aa127a97-6b58-46b1-8867-498140afeed7\n");
    expect(bootId(path)).toEqual(Uint8Array.from([0xaa, 0x12, 0x7a, 0x97, 0x6b, 0x58, 0x46, 0xb1, 0x88, 0x67, 0x49, 0x81, 0x40, 0xaf, 0xee, 0xd7]));
  });

  test("is null for a missing or malformed file", () => {
    expect(bootId(join(dir, "missing"))).toBeNull();
    const path = join(dir, "boot_id");
    writeFileSync(path, "not-a-uuid\n");
    expect(bootId(path)).toBeNull();
    writeFileSync(path, "aa127a97-6b58-46b1\n");
    expect(bootId(path)).toBeNull();
  });

  test("this machine's is stable between reads", () => {
    const first = bootId();
    if (first === null) {
      console.log("bootId: skipped, this system has no /proc/sys/kernel/random/boot_id");
      return;
    }
    expect(bootId()).toEqual(first);
  });
});

describe("cacheEpoch", () => {
  function disk(): LocalDisk {
    const path = join(dir, "component.img");
    writeFileSync(path, "");
    truncateSync(path, 1 << 20);
    return LocalDisk.open(path, { write: true });
  }

  test("is the boot id once the flush succeeded", () => {
    const d = disk();
    try {
      const id = new Uint8Array(16).fill(7);
      expect(cacheEpoch(d, id)).toEqual({ epoch: id, flush_error: null });
      expect(cacheEpoch(d, null)).toEqual({ epoch: null, flush_error: null });
    } finally {
      d.close();
    }
  });

  test("is null, with the error, when the flush fails", () => {
    const d = disk();
    try {
      setFaultInjection("fdatasync:component.img:EIO:1");
      const e = cacheEpoch(d, new Uint8Array(16).fill(7));
      expect(e.epoch).toBeNull();
      expect(e.flush_error).toContain("EIO");
    } finally {
      d.close();
    }
  });
});
