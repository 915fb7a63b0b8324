// src/io/disk.ts (LocalDisk) on regular files, including O_DIRECT.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { ptr } from "bun:ffi";
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalDisk, PROBE_READS } from "../../../src/io/disk.ts";
import { native, NativeError, setFaultInjection } from "../../../src/native.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-disk-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => setFaultInjection(undefined));

let serial = 0;
function tempFile(size_bytes: number, parent = dir): string {
  const path = join(parent, `disk-${serial++}`);
  writeFileSync(path, "");
  truncateSync(path, size_bytes);
  return path;
}

function thrown(fn: () => unknown): NativeError {
  try {
    fn();
  } catch (err) {
    if (err instanceof NativeError) return err;
    throw err;
  }
  throw new Error("expected a NativeError, nothing was thrown");
}

async function rejected(p: Promise<unknown>): Promise<NativeError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof NativeError) return err;
    throw err;
  }
  throw new Error("expected a NativeError, the promise resolved");
}

function withDisk(path: string, opts: Parameters<typeof LocalDisk.open>[1], fn: (disk: LocalDisk) => void): void {
  const disk = LocalDisk.open(path, opts);
  try {
    fn(disk);
  } finally {
    disk.close();
  }
}

/** A length-byte view of a fresh buffer whose address is a multiple of align_bytes. */
function alignedBuffer(length: number, align_bytes: number): Uint8Array {
  const raw = new Uint8Array(length + align_bytes);
  const skew = ptr(raw) % align_bytes;
  return raw.subarray(skew === 0 ? 0 : align_bytes - skew, (skew === 0 ? 0 : align_bytes - skew) + length);
}

/** First of the temp dir and /var/tmp whose filesystem accepts O_DIRECT, or the reasons. */
function directDir(): { dir?: string; reasons: string[] } {
  const reasons: string[] = [];
  for (const parent of [dir, "/var/tmp"]) {
    try {
      const probe = mkdtempSync(join(parent, "hast-direct-"));
      const path = tempFile(4096, probe);
      try {
        LocalDisk.open(path, { write: true, direct: true }).close();
        return { dir: probe, reasons };
      } catch (err) {
        rmSync(probe, { recursive: true, force: true });
        reasons.push(String(err instanceof Error ? err.message : err));
      }
    } catch (err) {
      reasons.push(`${parent}: ${String(err)}`);
    }
  }
  return { reasons };
}

describe("LocalDisk on a regular file", () => {
  test("open reports kind, size and sector size", () => {
    withDisk(tempFile(1024 * 1024), { write: false }, (disk) => {
      expect(disk.kind).toBe("file");
      expect(disk.size_bytes).toBe(1024 * 1024);
      expect(disk.sector_bytes).toBe(512);
      expect(disk.writable).toBe(false);
    });
  });

  test("read after write at offsets, discard, zero, flush", () => {
    withDisk(tempFile(64 * 1024), { write: true }, (disk) => {
      disk.write(new Uint8Array(16 * 1024).fill(0xab), 4096);
      disk.write(new Uint8Array(10).fill(0xcd), 60 * 1024);
      disk.flush();
      const back = new Uint8Array(64 * 1024);
      disk.read(back, 0);
      expect(back.subarray(0, 4096).every((b) => b === 0)).toBe(true);
      expect(back.subarray(4096, 20 * 1024).every((b) => b === 0xab)).toBe(true);
      expect(back.subarray(60 * 1024, 60 * 1024 + 10).every((b) => b === 0xcd)).toBe(true);

      disk.discard(8192, 4096);
      disk.zero(16 * 1024, 2048);
      disk.read(back, 0);
      expect(back.subarray(4096, 8192).every((b) => b === 0xab)).toBe(true);
      expect(back.subarray(8192, 12 * 1024).every((b) => b === 0)).toBe(true);
      expect(back.subarray(12 * 1024, 16 * 1024).every((b) => b === 0xab)).toBe(true);
      expect(back.subarray(16 * 1024, 18 * 1024).every((b) => b === 0)).toBe(true);
      expect(back.subarray(18 * 1024, 20 * 1024).every((b) => b === 0xab)).toBe(true);
    });
  });

  test("a short read (file shrank after open) is an EIO naming the counts", () => {
    const path = tempFile(8192);
    withDisk(path, { write: false }, (disk) => {
      truncateSync(path, 5000);
      const err = thrown(() => disk.read(new Uint8Array(4096), 4096));
      expect(err.code).toBe("EIO");
      expect(err.errno).toBe(native.errno.EIO);
      expect(err.message).toBe(`pread ${path} at offset 4096 (4096 bytes): short read, got 904 bytes (EIO)`);
    });
  });

  test("I/O outside the component is refused", () => {
    const path = tempFile(8192);
    withDisk(path, { write: true }, (disk) => {
      expect(() => disk.read(new Uint8Array(4096), 8192)).toThrow(
        `pread ${path} at offset 8192 (4096 bytes): outside the component (size 8192 bytes)`);
      expect(() => disk.write(new Uint8Array(1), -1)).toThrow(RangeError);
      expect(() => disk.discard(4096, 8192)).toThrow(RangeError);
    });
  });

  test("writes to a read-only open fail with EBADF and say why", () => {
    const path = tempFile(8192);
    withDisk(path, { write: false }, (disk) => {
      const err = thrown(() => disk.write(new Uint8Array(512), 0));
      expect(err.message).toBe(`pwrite ${path} at offset 0 (512 bytes): component opened read-only (EBADF)`);
      expect(thrown(() => disk.zero(0, 512)).code).toBe("EBADF");
      expect(thrown(() => disk.writeZeroes(0, 512)).code).toBe("EBADF");
    });
  });

  test("after close, I/O fails with EBADF and close stays idempotent", () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    disk.close();
    disk.close();
    expect(disk.closed).toBe(true);
    expect(thrown(() => disk.read(new Uint8Array(512), 0)).message).toBe(
      `pread ${path} at offset 0 (512 bytes): Bad file descriptor (EBADF)`);
    expect(thrown(() => disk.flush()).code).toBe("EBADF");
  });

  test("a second locked open fails with EWOULDBLOCK naming the path; the first still works", () => {
    const path = tempFile(8192);
    withDisk(path, { write: true, lock: true }, (first) => {
      const err = thrown(() => LocalDisk.open(path, { write: true, lock: true }));
      expect(err.code).toBe("EWOULDBLOCK");
      expect(err.message).toStartWith(`lock ${path}: already locked`);
      first.write(new Uint8Array(512).fill(1), 0);
    });
    LocalDisk.open(path, { write: true, lock: true }).close(); // released with the first close
  });

  test("ENOENT, EISDIR and the EFTYPE kind check", () => {
    const missing = join(dir, "no-such-disk");
    expect(thrown(() => LocalDisk.open(missing, { write: true })).message).toBe(
      `open ${missing}: No such file or directory (ENOENT)`);
    const sub = join(dir, "a-directory");
    mkdirSync(sub);
    expect(thrown(() => LocalDisk.open(sub, { write: true })).code).toBe("EISDIR");
    expect(thrown(() => LocalDisk.open(sub, { write: false })).message).toBe(
      `open ${sub}: neither block device nor regular file (it is a directory) (EFTYPE)`);
    expect(thrown(() => LocalDisk.open("/dev/null", { write: false })).message).toBe(
      "open /dev/null: neither block device nor regular file (it is a character device) (EFTYPE)");
  });

  test("an injected EIO reaches the caller", () => {
    const path = tempFile(8192);
    withDisk(path, { write: true }, (disk) => {
      setFaultInjection(`pread:${path}:EIO:1`);
      const err = thrown(() => disk.read(new Uint8Array(512), 512));
      expect(err.message).toBe(`pread ${path} at offset 512 (512 bytes): Input/output error ` +
        "(EIO, injected by HAST_FAULT_INJECT)");
      disk.read(new Uint8Array(512), 512);
    });
  });

  test("flush remembers EOPNOTSUPP and does not ask again", () => {
    const path = tempFile(8192);
    withDisk(path, { write: true }, (disk) => {
      setFaultInjection(`fdatasync:${path}:EOPNOTSUPP:1`);
      expect(disk.flush_supported).toBe(true);
      const first = thrown(() => disk.flush());
      expect(first.code).toBe("EOPNOTSUPP");
      expect(disk.flush_supported).toBe(false);
      // The rule is used up: only the remembered answer can make this throw.
      expect(thrown(() => disk.flush())).toBe(first);
    });
  });

  test("a flush error other than EOPNOTSUPP is not remembered", () => {
    const path = tempFile(8192);
    withDisk(path, { write: true }, (disk) => {
      setFaultInjection(`fdatasync:${path}:EIO:1`);
      expect(thrown(() => disk.flush()).code).toBe("EIO");
      expect(disk.flush_supported).toBe(true);
      disk.flush();
    });
  });
});

describe("LocalDisk.openReadAsync and closeAsync", () => {
  test("open read-only on a helper thread, checked as open() checks; close there, refused while a flush runs", async () => {
    const path = tempFile(8192);
    const disk = await LocalDisk.openReadAsync(path);
    expect([disk.kind, disk.size_bytes, disk.writable]).toEqual(["file", 8192, false]);
    expect(() => disk.write(new Uint8Array(512), 0)).toThrow("read-only");
    const flushed = disk.flushAsync();
    await expect(disk.closeAsync()).rejects.toThrow(`close ${path}: 1 asynchronous operation(s) still in flight`);
    await flushed;
    await disk.closeAsync();
    expect(disk.closed).toBe(true);
    await disk.closeAsync(); // closed already: nothing to do, as close()
    expect((await rejected(LocalDisk.openReadAsync(dir))).code).toBe("EFTYPE");
    expect((await rejected(LocalDisk.openReadAsync(join(dir, "missing")))).message).toBe(`open ${join(dir, "missing")}: No such file or directory (ENOENT)`);
  });

  test("injected faults: open fails or waits; a failed close still closes", async () => {
    const path = tempFile(8192);
    setFaultInjection(`open:${path}:EACCES:1`);
    expect((await rejected(LocalDisk.openReadAsync(path))).code).toBe("EACCES");
    setFaultInjection(`open:${path}:delay=100:1`);
    const started = performance.now();
    const disk = await LocalDisk.openReadAsync(path);
    expect(performance.now() - started).toBeGreaterThanOrEqual(90);
    setFaultInjection(`close:${path}:EIO:1`);
    expect((await rejected(disk.closeAsync())).code).toBe("EIO");
    expect(disk.closed).toBe(true);
  });
});

describe("LocalDisk.flushAsync", () => {
  test("flushes without blocking the caller; close waits for it (asserted)", async () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    disk.write(new Uint8Array(512).fill(3), 0);
    const flushed = disk.flushAsync();
    expect(() => disk.close()).toThrow(`close ${path}: 1 asynchronous operation(s) still in flight`);
    expect(disk.closed).toBe(false);
    await flushed;
    disk.close();
    expect((await rejected(disk.flushAsync())).message).toBe(`fdatasync ${path}: component closed (EBADF)`);
  });

  test("injected faults, EOPNOTSUPP remembered as by flush()", async () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    try {
      setFaultInjection(`fdatasync:${path}:EIO:1`);
      expect((await rejected(disk.flushAsync())).message).toBe(
        `fdatasync ${path}: Input/output error (EIO, injected by HAST_FAULT_INJECT)`);
      await disk.flushAsync();
      setFaultInjection(`fdatasync:${path}:EOPNOTSUPP:1`);
      const first = await rejected(disk.flushAsync());
      expect(first.code).toBe("EOPNOTSUPP");
      expect(disk.flush_supported).toBe(false);
      expect(await rejected(disk.flushAsync())).toBe(first);
      expect(thrown(() => disk.flush())).toBe(first);
    } finally {
      disk.close();
    }
  });

  test("one at a time: the calls made while one runs share the next, which starts when it ends", async () => {
    // Linux reports a write-back error to the first fsync that checks: two at once could hand a
    // later flush the error of pages an earlier one covered, and that one would succeed.
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    try {
      setFaultInjection(`fdatasync:${path}:delay=200:1,fdatasync:${path}:EIO:1`);
      const order: string[] = [];
      const a = disk.flushAsync().then(() => order.push("a ok"));
      await Bun.sleep(20); // a's fdatasync has started (and sleeps in its delay)
      const b = rejected(disk.flushAsync()).then((e) => order.push(`b ${e.code}`));
      const c = rejected(disk.flushAsync()).then((e) => order.push(`c ${e.code}`));
      await Promise.all([a, b, c]);
      expect(order).toEqual(["a ok", "b EIO", "c EIO"]);
      await disk.flushAsync(); // no rule left
    } finally {
      setFaultInjection(undefined);
      disk.close();
    }
  });

  test("an error from the helper thread becomes a NativeError naming the call", async () => {
    const [a, b] = native.socketpair();
    try {
      const err = await rejected(native.fdatasyncAsync(a, "socket"));
      expect(err.message).toBe("fdatasync socket: Invalid argument (EINVAL)");
      expect(err.errno).toBe(native.errno.EINVAL);
    } finally {
      native.close(a, "socket");
      native.close(b, "socket");
    }
  });
});

describe("LocalDisk.readAsync", () => {
  test("reads what was written, past 4 GiB too; close waits for it (asserted)", async () => {
    const far = 5 * 2 ** 30 + 512;
    const path = tempFile(far + 4096);
    const disk = LocalDisk.open(path, { write: true });
    const out = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
    disk.write(out, far);
    const back = new Uint8Array(3000);
    const read = disk.readAsync(back, far);
    expect(() => disk.close()).toThrow(`close ${path}: 1 asynchronous operation(s) still in flight`);
    await read;
    expect(Buffer.from(back).equals(Buffer.from(out))).toBe(true);
    disk.close();
    expect((await rejected(disk.readAsync(back, 0))).message).toBe(`pread ${path}: component closed (EBADF)`);
  });

  test("a component that shrank underneath gives EIO naming the short read", async () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: false });
    try {
      truncateSync(path, 6144);
      const err = await rejected(disk.readAsync(new Uint8Array(4096), 4096));
      expect(err.message).toBe(`pread ${path} at offset 4096 (4096 bytes): short read, got 2048 bytes (EIO)`);
    } finally {
      disk.close();
    }
  });

  test("injected faults: an errno fails the read, a delay holds it without blocking the event loop", async () => {
    // A delayed read goes to the thread pool (not the page cache's at-once copy): far out, too.
    const far = 5 * 2 ** 30 + 512;
    const path = tempFile(far + 4096);
    const disk = LocalDisk.open(path, { write: true });
    try {
      setFaultInjection(`pread:${path}:EIO:1`);
      expect((await rejected(disk.readAsync(new Uint8Array(512), 512))).message).toBe(
        `pread ${path} at offset 512 (512 bytes): Input/output error (EIO, injected by HAST_FAULT_INJECT)`);
      disk.write(new Uint8Array(512).fill(9), far);
      setFaultInjection(`pread:${path}:delay=200:1`);
      const back = new Uint8Array(512);
      let ticks = 0;
      const timer = setInterval(() => ticks++, 10);
      await disk.readAsync(back, far);
      clearInterval(timer);
      expect(ticks).toBeGreaterThan(5); // the loop ran during the 200 ms; a blocked one counts 0 or 1
      expect(back.every((b) => b === 9)).toBe(true);
      // Into a view (the rest of a partly cached chunk): the bytes land in the view only.
      setFaultInjection(`pread:${path}:delay=1:1`);
      const whole = new Uint8Array(1024).fill(1);
      await disk.readAsync(whole.subarray(100, 612), far);
      expect(whole.subarray(100, 612).every((b) => b === 9)).toBe(true);
      expect(whole.subarray(0, 100).every((b) => b === 1) && whole.subarray(612).every((b) => b === 1)).toBe(true);
    } finally {
      disk.close();
    }
  });

  test("readCached copies what the page cache holds; a pending fault rule leaves the read to readAsync", async () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    try {
      disk.write(new Uint8Array(4096).fill(5), 4096); // just written: in the page cache
      const back = new Uint8Array(4096);
      expect(disk.readCached(back, 4096)).toBe(4096);
      expect(back.every((b) => b === 5)).toBe(true);
      setFaultInjection(`pread:${path}:EIO:1`);
      expect(disk.readCached(back, 4096)).toBe(0); // the rule is not used up here...
      expect((await rejected(disk.readAsync(back, 4096))).code).toBe("EIO"); // ...but by the read it is for
      expect(() => disk.readCached(back, 8192 - 512)).toThrow(RangeError);
    } finally {
      disk.close();
    }
  });

  test("readSoon: null when the page cache held it all; else the rest on a helper thread", async () => {
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    try {
      disk.write(new Uint8Array(4096).fill(6), 4096);
      const back = new Uint8Array(4096);
      expect(disk.readSoon(back, 4096)).toBeNull();
      expect(back.every((b) => b === 6)).toBe(true);
      setFaultInjection(`pread:${path}:delay=20:1`); // the page cache "holds nothing" under a rule
      const again = new Uint8Array(4096);
      const rest = disk.readSoon(again, 4096);
      expect(rest).not.toBeNull();
      expect(again.every((b) => b === 0)).toBe(true); // not read yet
      await rest;
      expect(again.every((b) => b === 6)).toBe(true);
      setFaultInjection(`pread:${path}:EIO:1`);
      expect((await rejected(disk.readSoon(back, 4096)!)).code).toBe("EIO");
      expect(() => disk.readSoon(back, 8192 - 512)).toThrow(RangeError);
    } finally {
      disk.close();
    }
  });

  test("readSoon: after a miss, reads the page cache does not hold go to the helper thread without trying it first", async () => {
    // A read with RWF_NOWAIT that misses starts the disk read on the calling thread (the event
    // loop); after one miss, readSoon asks the page cache (cachestat) first, until PROBE_READS hit.
    const path = tempFile(8192);
    const disk = LocalDisk.open(path, { write: true });
    const real = { preadCached: native.preadCached, rangeCached: native.rangeCached };
    const spied = native as typeof real; // its entries are read-only to the code, not to a spy
    const calls: string[] = [];
    let cache_holds = false;
    spied.preadCached = (...a) => (calls.push("try"), cache_holds ? real.preadCached(...a) : 0);
    spied.rangeCached = () => (calls.push("ask"), cache_holds);
    try {
      disk.write(new Uint8Array(4096).fill(4), 0);
      const buf = new Uint8Array(4096);
      await disk.readSoon(buf, 0); // the first miss: tried at once
      expect(calls.splice(0)).toEqual(["try"]);
      await disk.readSoon(buf, 0); // known not cached: straight to the helper thread
      expect(calls.splice(0)).toEqual(["ask"]);
      expect(buf.every((b) => b === 4)).toBe(true);
      cache_holds = true;
      for (let i = 0; i < PROBE_READS; i++) expect(disk.readSoon(buf, 0)).toBeNull();
      expect(calls.splice(0).filter((c) => c === "ask")).toHaveLength(PROBE_READS);
      expect(disk.readSoon(buf, 0)).toBeNull(); // PROBE_READS hits since the last miss: tried at once again
      expect(calls.splice(0)).toEqual(["try"]);
      cache_holds = false;
      await disk.readSoon(buf, 0);
      expect(() => disk.readSoon(buf, 8192 - 512)).toThrow(RangeError); // while asking first, too
    } finally {
      Object.assign(native, real);
      disk.close();
    }
  });

  test("an error from the helper thread becomes a NativeError naming the call", async () => {
    const err = await rejected(native.preadAsync(1 << 20, "nothing", new Uint8Array(16), 0));
    expect(err.message).toBe("pread nothing at offset 0 (16 bytes): Bad file descriptor (EBADF)");
  });
});

describe("LocalDisk with O_DIRECT", () => {
  const found = directDir();
  if (found.dir === undefined) console.log(`skip O_DIRECT tests: no filesystem accepts O_DIRECT: ${found.reasons.join("; ")}`);
  afterAll(() => {
    if (found.dir !== undefined) rmSync(found.dir, { recursive: true, force: true });
  });

  test.skipIf(found.dir === undefined)("aligned subarrays go straight to the disk", () => {
    const path = tempFile(64 * 1024, found.dir);
    withDisk(path, { write: true, direct: true }, (disk) => {
      const out = alignedBuffer(8192, 4096);
      out.fill(0x77);
      disk.write(out, 4096);
      disk.flush();
      const back = alignedBuffer(16384, 4096);
      disk.read(back, 0);
      expect(back.subarray(0, 4096).every((b) => b === 0)).toBe(true);
      expect(back.subarray(4096, 12288).every((b) => b === 0x77)).toBe(true);
      expect(back.subarray(12288).every((b) => b === 0)).toBe(true);
    });
  });

  test.skipIf(found.dir === undefined)("a misaligned buffer fails with EINVAL, clearly", () => {
    const path = tempFile(64 * 1024, found.dir);
    withDisk(path, { write: true, direct: true }, (disk) => {
      const misaligned = alignedBuffer(4096 + 1, 4096).subarray(1);
      const err = thrown(() => disk.write(misaligned, 0));
      expect(err.code).toBe("EINVAL");
      expect(err.message).toBe(`pwrite ${path} at offset 0 (4096 bytes): Invalid argument (EINVAL)`);
    });
  });
});
