// src/native.ts on regular files: data path, sizes, errors and fault injection.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native, NativeError, setFaultInjection } from "../../../src/native.ts";
import { onAssertionFailure } from "../../../src/core/assert.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-native-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => setFaultInjection(undefined));

let serial = 0;
function tempFile(size_bytes: number): string {
  const path = join(dir, `file-${serial++}`);
  writeFileSync(path, "");
  truncateSync(path, size_bytes);
  return path;
}

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
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

describe("data path", () => {
  test("read after write, at several offsets, into a subarray", () => {
    const path = tempFile(64 * 1024);
    const fd = native.open(path, { write: true });
    try {
      expect(native.pwrite(fd, path, filled(4096, 0x11), 0)).toBe(4096);
      expect(native.pwrite(fd, path, filled(100, 0x22), 5000)).toBe(100);
      expect(native.pwrite(fd, path, filled(4096, 0x33), 60 * 1024)).toBe(4096);
      const whole = new Uint8Array(64 * 1024);
      expect(native.pread(fd, path, whole, 0)).toBe(whole.length);
      expect(whole.subarray(0, 4096).every((b) => b === 0x11)).toBe(true);
      expect(whole.subarray(4096, 5000).every((b) => b === 0)).toBe(true);
      expect(whole.subarray(5000, 5100).every((b) => b === 0x22)).toBe(true);
      expect(whole.subarray(60 * 1024).every((b) => b === 0x33)).toBe(true);
      // A subarray is read into at its own byte offset: bytes before it stay untouched.
      const outer = filled(200, 0xee);
      expect(native.pread(fd, path, outer.subarray(50, 150), 5000)).toBe(100);
      expect(outer.subarray(0, 50).every((b) => b === 0xee)).toBe(true);
      expect(outer.subarray(50, 150).every((b) => b === 0x22)).toBe(true);
      expect(outer.subarray(150).every((b) => b === 0xee)).toBe(true);
      native.fdatasync(fd, path);
      native.fsync(fd, path);
    } finally {
      native.close(fd, path);
    }
  });

  test("a read past the end of a file returns the short count", () => {
    const path = tempFile(100);
    const fd = native.open(path, { write: false });
    try {
      expect(native.pread(fd, path, new Uint8Array(4096), 0)).toBe(100);
      expect(native.pread(fd, path, new Uint8Array(4096), 100)).toBe(0);
    } finally {
      native.close(fd, path);
    }
  });

  test("create makes a missing file; size, sector size and kind of a file", () => {
    const path = join(dir, "created");
    const fd = native.open(path, { write: true, create: true });
    try {
      expect(native.mediaSize(fd, path)).toBe(0);
      native.pwrite(fd, path, filled(1000, 1), 1024 * 1024 - 1000);
      expect(native.mediaSize(fd, path)).toBe(1024 * 1024);
      expect(native.sectorSize(fd, path)).toBe(512);
      expect(native.kind(fd, path)).toBe("file");
      expect(statSync(path).mode & 0o777).toBe(0o600);
    } finally {
      native.close(fd, path);
    }
  });

  test("discard punches a hole that reads back zero and leaves the rest intact", () => {
    const path = tempFile(0);
    const fd = native.open(path, { write: true });
    try {
      native.pwrite(fd, path, filled(3 * 4096, 0xab), 0);
      native.discard(fd, path, 4096, 4096);
      const back = new Uint8Array(3 * 4096);
      native.pread(fd, path, back, 0);
      expect(back.subarray(0, 4096).every((b) => b === 0xab)).toBe(true);
      expect(back.subarray(4096, 8192).every((b) => b === 0)).toBe(true);
      expect(back.subarray(8192).every((b) => b === 0xab)).toBe(true);
      expect(native.mediaSize(fd, path)).toBe(3 * 4096); // KEEP_SIZE
    } finally {
      native.close(fd, path);
    }
  });

  // /dev/shm is tmpfs, which has no FALLOC_FL_ZERO_RANGE: there the C fallback writes zeroes.
  const zeroDirs = [dir, ...(statSync("/dev/shm", { throwIfNoEntry: false })?.isDirectory() ? ["/dev/shm"] : [])];
  for (const where of zeroDirs) {
    test(`zero range reads back zero, keeps the rest and the size (${where})`, () => {
      const path = join(mkdtempSync(join(where, "hast-zero-")), "disk");
      const fd = native.open(path, { write: true, create: true });
      try {
        native.pwrite(fd, path, filled(100_000, 0x5a), 0);
        native.zeroRange(fd, path, 1000, 70_000);
        native.zeroRange(fd, path, 99_000, 50_000); // runs past the end: must not grow the file
        expect(native.mediaSize(fd, path)).toBe(100_000);
        const back = new Uint8Array(100_000);
        expect(native.pread(fd, path, back, 0)).toBe(100_000);
        expect(back.subarray(0, 1000).every((b) => b === 0x5a)).toBe(true);
        expect(back.subarray(1000, 71_000).every((b) => b === 0)).toBe(true);
        expect(back.subarray(71_000, 99_000).every((b) => b === 0x5a)).toBe(true);
        expect(back.subarray(99_000).every((b) => b === 0)).toBe(true);
      } finally {
        native.close(fd, path);
        rmSync(join(path, ".."), { recursive: true, force: true });
      }
    });
  }

  test("pwriteZeroes overwrites exactly its range (several pwritev rounds), as a pwrite for fault rules", () => {
    const path = tempFile(0);
    const fd = native.open(path, { write: true });
    const total = 5 * 1024 * 1024 + 4096;
    try {
      native.pwrite(fd, path, filled(total, 0xa5), 0);
      native.pwriteZeroes(fd, path, 4096, total - 2 * 4096); // over 64 blocks of 64 KiB: more than one call
      native.pwriteZeroes(fd, path, total, 0);
      const back = new Uint8Array(total);
      expect(native.pread(fd, path, back, 0)).toBe(total);
      expect(back.subarray(0, 4096).every((b) => b === 0xa5)).toBe(true);
      expect(native.isZero(back.subarray(4096, total - 4096))).toBe(true);
      expect(back.subarray(total - 4096).every((b) => b === 0xa5)).toBe(true);
      expect(statSync(path).size).toBe(total);
      setFaultInjection("pwrite:file-:EIO:1");
      expect(thrown(() => native.pwriteZeroes(fd, path, 0, 512)).message).toBe(
        `pwrite ${path} at offset 0 (512 bytes): Input/output error (EIO, injected by HAST_FAULT_INJECT)`);
      expect(() => native.pwriteZeroes(fd, path, -1, 512)).toThrow("offset -1 is not a non-negative integer");
    } finally {
      native.close(fd, path);
    }
  });

  test("isZero at every alignment and edge, and over megabytes", () => {
    const buffer = new Uint8Array(64);
    for (let start = 0; start < 8; start++) {
      for (let end = start; end < 48; end++) {
        const view = buffer.subarray(start, end);
        expect(native.isZero(view)).toBe(true);
        for (const at of view.length > 0 ? [0, view.length - 1, view.length >> 1] : []) {
          view[at] = 0x80;
          expect(native.isZero(view)).toBe(false);
          view[at] = 0;
        }
      }
    }
    const big = new Uint8Array(4 << 20);
    expect(native.isZero(big)).toBe(true);
    big[(4 << 20) - 1] = 1;
    expect(native.isZero(big)).toBe(false);
  });

  test("a zero-length read or write is a no-op", () => {
    const path = tempFile(10);
    const fd = native.open(path, { write: true });
    try {
      expect(native.pread(fd, path, new Uint8Array(0), 0)).toBe(0);
      expect(native.pwrite(fd, path, new Uint8Array(0), 0)).toBe(0);
      native.discard(fd, path, 0, 0);
      native.zeroRange(fd, path, 0, 0);
    } finally {
      native.close(fd, path);
    }
  });
});

describe("errors are one clear line naming op, path and reason", () => {
  test("ENOENT when opening a missing path", () => {
    const path = join(dir, "missing");
    const err = thrown(() => native.open(path, { write: false }));
    expect(err.code).toBe("ENOENT");
    expect(err.errno).toBe(native.errnoValue("ENOENT")!);
    expect(err.op).toBe("open");
    expect(err.path).toBe(path);
    expect(err.message).toBe(`open ${path}: No such file or directory (ENOENT)`);
  });

  test("EISDIR when opening a directory for writing; kind says directory", () => {
    const sub = join(dir, "a-directory");
    mkdirSync(sub);
    expect(thrown(() => native.open(sub, { write: true })).message).toBe(`open ${sub}: Is a directory (EISDIR)`);
    const fd = native.open(sub, { write: false });
    try {
      expect(native.kind(fd, sub)).toBe("directory");
      expect(thrown(() => native.mediaSize(fd, sub)).code).toBe("ENOTTY");
    } finally {
      native.close(fd, sub);
    }
  });

  test("a character device has kind char", () => {
    const fd = native.open("/dev/null", { write: false });
    try {
      expect(native.kind(fd, "/dev/null")).toBe("char");
    } finally {
      native.close(fd, "/dev/null");
    }
  });

  test("EBADF after close", () => {
    const path = tempFile(4096);
    const fd = native.open(path, { write: true });
    native.close(fd, path);
    const err = thrown(() => native.pwrite(fd, path, new Uint8Array(4096), 4096));
    expect(err.message).toBe(`pwrite ${path} at offset 4096 (4096 bytes): Bad file descriptor (EBADF)`);
    expect(thrown(() => native.fdatasync(fd, path)).code).toBe("EBADF");
    expect(thrown(() => native.close(fd, path)).code).toBe("EBADF");
  });

  test("EBADF when writing through a read-only descriptor", () => {
    const path = tempFile(4096);
    const fd = native.open(path, { write: false });
    try {
      expect(thrown(() => native.pwrite(fd, path, new Uint8Array(512), 0)).code).toBe("EBADF");
    } finally {
      native.close(fd, path);
    }
  });

  test("a second exclusive lock fails with EWOULDBLOCK naming the path", () => {
    const path = tempFile(4096);
    const first = native.open(path, { write: true });
    const second = native.open(path, { write: true });
    try {
      native.lockExclusive(first, path);
      const err = thrown(() => native.lockExclusive(second, path));
      expect(err.code).toBe("EWOULDBLOCK");
      expect(err.message).toBe(`lock ${path}: already locked by another open of this component ` +
        "(another hastd or hastctl?) (EWOULDBLOCK)");
    } finally {
      native.close(first, path);
      native.close(second, path);
    }
  });

  test("bad offsets are refused before reaching C", () => {
    const path = tempFile(10);
    expect(() => native.pread(3, path, new Uint8Array(1), -1)).toThrow(`pread ${path}: offset -1 is not a non-negative integer`);
    expect(() => native.discard(3, path, 0, 0.5)).toThrow(`discard ${path}: length 0.5 is not a non-negative integer`);
    expect(() => native.open(path, { write: false, create: true })).toThrow("create needs write");
  });

  test("errno names and strerror come from the platform", () => {
    const eio = native.errnoValue("EIO")!;
    expect(native.errnoName(eio)).toBe("EIO");
    expect(native.strerror(eio)).toBe("Input/output error");
    expect(native.errnoValue("ENOSPC")).toBeGreaterThan(0);
    expect(native.errnoValue("EBOGUS")).toBeUndefined();
    expect(native.errnoName(99999)).toBe("errno 99999");
  });
});

describe("fault injection", () => {
  test("pwrite:disk-a:EIO:3 fails exactly the next 3 pwrites on matching paths", () => {
    const a = join(dir, "disk-a");
    const b = join(dir, "disk-b");
    writeFileSync(a, "");
    writeFileSync(b, "");
    const fa = native.open(a, { write: true });
    const fb = native.open(b, { write: true });
    try {
      setFaultInjection("pwrite:disk-a:EIO:3");
      const buf = filled(65536, 7);
      for (let i = 0; i < 3; i++) {
        const err = thrown(() => native.pwrite(fa, a, buf, 4096));
        expect(err.message).toBe(`pwrite ${a} at offset 4096 (65536 bytes): Input/output error ` +
          "(EIO, injected by HAST_FAULT_INJECT)");
        expect(err.errno).toBe(native.errno.EIO);
        expect(native.pwrite(fb, b, buf, 0)).toBe(65536); // other paths are untouched
      }
      expect(native.pwrite(fa, a, buf, 4096)).toBe(65536);
      expect(statSync(a).size).toBe(4096 + 65536); // the injected calls wrote nothing
    } finally {
      native.close(fa, a);
      native.close(fb, b);
    }
  });

  test("rules without a count fire forever; * matches any op; first live rule wins", () => {
    const path = tempFile(4096);
    const fd = native.open(path, { write: true });
    try {
      setFaultInjection("fdatasync::ENOSPC:1, *:file-:EROFS");
      expect(thrown(() => native.fdatasync(fd, path)).code).toBe("ENOSPC");
      for (let i = 0; i < 5; i++) expect(thrown(() => native.fdatasync(fd, path)).code).toBe("EROFS");
      expect(thrown(() => native.pread(fd, path, new Uint8Array(1), 0)).code).toBe("EROFS");
    } finally {
      setFaultInjection(undefined);
      native.close(fd, path);
    }
  });

  test("an assert rule fails an invariant at the call, as a bug met there would (the worker's handler runs first)", () => {
    const path = tempFile(4096);
    const fd = native.open(path, { write: true });
    const seen: string[] = [];
    onAssertionFailure((err) => seen.push(err.message));
    try {
      setFaultInjection("pwrite:file-:assert:1");
      expect(() => native.pwrite(fd, path, filled(512, 1), 0)).toThrow(`assertion failed: pwrite ${path}: injected by HAST_FAULT_INJECT`);
      expect(seen).toEqual([`assertion failed: pwrite ${path}: injected by HAST_FAULT_INJECT`]);
      expect(native.pwrite(fd, path, filled(512, 1), 0)).toBe(512); // spent
    } finally {
      onAssertionFailure(null);
      native.close(fd, path);
    }
  });

  test("an injected close failure still closes the descriptor", () => {
    const path = tempFile(10);
    const fd = native.open(path, { write: false });
    setFaultInjection("close:file-:EIO:1");
    expect(thrown(() => native.close(fd, path)).code).toBe("EIO");
    setFaultInjection(undefined);
    expect(thrown(() => native.fsync(fd, path)).code).toBe("EBADF");
  });

  test("bad specs are rejected with the offending rule", () => {
    expect(() => setFaultInjection("pwrite:x")).toThrow(`"pwrite:x": wrong number of fields`);
    expect(() => setFaultInjection("write:x:EIO")).toThrow(`unknown op "write"`);
    expect(() => setFaultInjection("pwrite:x:EFOO")).toThrow(`unknown errno name "EFOO"`);
    expect(() => setFaultInjection("pwrite:x:EIO:0")).toThrow(`count "0" is not a positive integer`);
    expect(() => setFaultInjection("pwrite:x:EIO:2x")).toThrow(`count "2x" is not a positive integer`);
    expect(() => setFaultInjection(Array(65).fill("pread::EIO").join(","))).toThrow("at most 64");
    expect(() => setFaultInjection("pwrite:x:delay=0")).toThrow("delay must be 1..60000 ms");
    expect(() => setFaultInjection("pwrite:x:delay=60001")).toThrow("delay must be 1..60000 ms");
    expect(() => setFaultInjection("pwrite:x:delay=5ms")).toThrow(`unknown errno name "delay=5ms"`);
  });

  test("a delay rule carries the call out late, blocking a synchronous caller; count as for errors", () => {
    const path = tempFile(8192);
    const fd = native.open(path, { write: true });
    try {
      setFaultInjection("pwrite:file-:delay=40:1");
      let started = performance.now();
      expect(native.pwrite(fd, path, filled(512, 9), 512)).toBe(512);
      expect(performance.now() - started).toBeGreaterThanOrEqual(35);
      const back = new Uint8Array(512);
      native.pread(fd, path, back, 512);
      expect(back.every((b) => b === 9)).toBe(true); // delayed, then written
      started = performance.now();
      native.pwrite(fd, path, filled(512, 8), 512);
      expect(performance.now() - started).toBeLessThan(35); // the rule is used up
    } finally {
      native.close(fd, path);
    }
  });

  test("fdatasyncAsync: a delay waits off the event loop; an errno rule rejects", async () => {
    const path = tempFile(8192);
    const fd = native.open(path, { write: true });
    try {
      setFaultInjection("fdatasync:file-:delay=60:1, fdatasync:file-:EIO:1");
      const started = performance.now();
      const flushed = native.fdatasyncAsync(fd, path);
      expect(performance.now() - started).toBeLessThan(30); // the caller was not held for the delay
      await flushed;
      expect(performance.now() - started).toBeGreaterThanOrEqual(55);
      const err = await native.fdatasyncAsync(fd, path).then(() => null, (e: NativeError) => e);
      expect(err?.message).toBe(`fdatasync ${path}: Input/output error (EIO, injected by HAST_FAULT_INJECT)`);
      await native.fdatasyncAsync(fd, path);
    } finally {
      native.close(fd, path);
    }
  });

  test("HAST_FAULT_INJECT is read from the environment of a fresh process", () => {
    const nativeTs = join(import.meta.dir, "../../../src/native.ts");
    const path = join(dir, "env-disk-a");
    const script = `import { native } from ${JSON.stringify(nativeTs)};
      const fd = native.open(${JSON.stringify(path)}, { write: true, create: true });
      for (let i = 0; i < 3; i++) {
        try { native.pwrite(fd, ${JSON.stringify(path)}, new Uint8Array(8), 0); console.log("ok"); }
        catch (e) { console.log(e.message); }
      }`;
    const proc = Bun.spawnSync([process.execPath, "-e", script], {
      env: { ...process.env, HAST_FAULT_INJECT: "pwrite:env-disk:ENOSPC:2" },
    });
    expect(proc.stderr.toString()).toBe("");
    expect(proc.stdout.toString().trim().split("\n")).toEqual([
      `pwrite ${path} at offset 0 (8 bytes): No space left on device (ENOSPC, injected by HAST_FAULT_INJECT)`,
      `pwrite ${path} at offset 0 (8 bytes): No space left on device (ENOSPC, injected by HAST_FAULT_INJECT)`,
      "ok",
    ]);
  });
});

describe("kernel nbd plumbing", () => {
  test("socketpair gives two connected stream descriptors", () => {
    const [a, b] = native.socketpair();
    try {
      expect(a).not.toBe(b);
      const sent = new TextEncoder().encode("ping");
      expect(writeSync(a, sent)).toBe(4);
      const got = new Uint8Array(4);
      expect(readSync(b, got)).toBe(4);
      expect(new TextDecoder().decode(got)).toBe("ping");
    } finally {
      native.close(a, "socketpair[0]");
      native.close(b, "socketpair[1]");
    }
  });

  test("generic netlink lookups reach the kernel: nlctrl is id 16, an unknown family is ENOENT", () => {
    expect(native.genlFamily("nlctrl")).toBe(16);
    const err = thrown(() => native.genlFamily("hast-nofamily"));
    expect(err.code).toBe("ENOENT");
    expect(err.message).toBe('genl-family "hast-nofamily": No such file or directory (ENOENT)');
  });

  const nbdPresent = existsSync("/sys/module/nbd") || existsSync("/dev/nbd0");
  test.skipIf(nbdPresent)("without the nbd module, attach and detach fail with ENODEV naming what is missing", () => {
    const missing = 'no kernel nbd: neither the generic netlink family "nbd" nor /dev/nbd0 exists (load it: modprobe nbd)';
    const [a, b] = native.socketpair();
    try {
      const attach = thrown(() => native.nbdAttach(a, 1 << 20, 512, 0, 30, "hast:test"));
      expect(attach.code).toBe("ENODEV");
      expect(attach.message).toBe(`nbd-attach socket fd ${a}: ${missing} (ENODEV)`);
    } finally {
      native.close(a, "socketpair[0]");
      native.close(b, "socketpair[1]");
    }
    const detach = thrown(() => native.nbdDetach(0));
    expect(detach.code).toBe("ENODEV");
    expect(detach.message).toBe(`nbd-detach /dev/nbd0: ${missing} (ENODEV)`);
  });
  if (nbdPresent) console.log("skip: the nbd module is loaded here, so attach would not fail with ENODEV");

  test("attach checks its arguments before touching the kernel", () => {
    const bad: [number, number][] = [[1 << 20, 256], [1 << 20, 8192], [1 << 20, 1000], [1000, 512], [0, 512]];
    for (const [size_bytes, block_bytes] of bad) {
      const err = thrown(() => native.nbdAttach(5, size_bytes, block_bytes, 0, 30, "hast:test"));
      expect(err.code).toBe("EINVAL");
    }
    expect(() => native.nbdAttach(5, 1 << 20, 512, 0, 30, "x".repeat(128))).toThrow("longer than 127 bytes");
    expect(() => native.nbdDetach(-1)).toThrow("not a non-negative integer");
  });
});

describe("sockets the event loop also reads", () => {
  test("recvReady takes what is queued, waits only when asked and only as long as asked", () => {
    const [a, b] = native.socketpair();
    try {
      const into = new Uint8Array(8);
      expect(native.recvReady(b, "socketpair[1]", into, 0)).toBe(-1); // nothing queued, no wait
      const started = performance.now();
      expect(native.recvReady(b, "socketpair[1]", into, 2_000)).toBe(-1); // nothing came in 2 ms
      expect(performance.now() - started).toBeGreaterThanOrEqual(1.5); // it did wait (ppoll), not spin out at once
      expect(writeSync(a, new TextEncoder().encode("abc"))).toBe(3);
      expect(native.recvReady(b, "socketpair[1]", into, 250_000)).toBe(3); // data there: no wait
      expect(new TextDecoder().decode(into.subarray(0, 3))).toBe("abc");
      expect(thrown(() => native.recvReady(b, "socketpair[1]", into, 1_000_000)).code).toBe("EINVAL");
      native.close(a, "socketpair[0]");
      expect(native.recvReady(b, "socketpair[1]", into, 250)).toBe(0); // end of stream
    } finally {
      native.close(b, "socketpair[1]");
    }
  });
});
