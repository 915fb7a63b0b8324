// Zero-copy resync primitives (src/native.ts rangeCached, sendfile, splicePipe, spliceIn),
// Landing (src/io/landing.ts) and PeerLink.sendWriteFromFile, on a raw AF_UNIX stream pair: no
// event loop reads the bytes first.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { dlopen } from "bun:ffi";
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalDisk } from "../../../src/io/disk.ts";
import type { ByteStream } from "../../../src/io/byte-stream.ts";
import { Landing } from "../../../src/io/landing.ts";
import { PeerLink } from "../../../src/io/peer-link.ts";
import { HEADER_BYTES } from "../../../src/wire/peer/constants.ts";
import { decodeAll, prims, RAW } from "../peer/helpers.ts";
import { native, NativeError, setFaultInjection } from "../../../src/native.ts";

const linux = process.platform === "linux";
const dir = mkdtempSync(join(tmpdir(), "hast-zero-copy-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Every descriptor a test opens is closed here, whether it passed or not; one failing close
// must not leak the others, so the first error is rethrown at the end.
const open_fds: number[] = [];
const disks: LocalDisk[] = [];
afterEach(() => {
  setFaultInjection(undefined);
  const closes = [...disks.splice(0).map((d) => () => d.close()),
    ...open_fds.splice(0).map((fd) => () => native.close(fd, `fd ${fd}`))];
  const failures = closes.flatMap((close) => { try { close(); return []; } catch (err) { return [err]; } });
  if (failures.length > 0) throw failures[0];
});
function keep(fd: number): number {
  open_fds.push(fd);
  return fd;
}

// socketpair gives blocking ends; the primitives expect nonblocking sockets, and a blocking
// write by a faulty test would hang instead of failing.
const libc = linux ? dlopen("libc.so.6", { fcntl: { args: ["i32", "i32", "i32"], returns: "i32" } }) : null;
const F_GETFL = 3, F_SETFL = 4, O_NONBLOCK = 0x800;
function pair(): [number, number] {
  const [a, b] = native.socketpair().map(keep) as [number, number];
  for (const fd of [a, b]) {
    const flags = libc!.symbols.fcntl(fd, F_GETFL, 0);
    expect(flags).toBeGreaterThanOrEqual(0);
    expect(libc!.symbols.fcntl(fd, F_SETFL, flags | O_NONBLOCK)).toBe(0);
  }
  return [a, b];
}

function openDisk(path: string): LocalDisk {
  const disk = LocalDisk.open(path, { write: true });
  disks.push(disk);
  return disk;
}

function splicePipe(): [number, number] {
  const p = native.splicePipe();
  if (p === null) throw new Error("splicePipe: null on Linux");
  return p.map(keep) as [number, number];
}

let serial = 0;
function tempFile(size_bytes: number): string {
  const path = join(dir, `zc-${serial++}`);
  writeFileSync(path, "");
  truncateSync(path, size_bytes);
  return path;
}

/** A zeroed file of size_bytes, or one holding `content` (written through fd, so cached). */
function file(size_bytes: number, content?: Uint8Array): { path: string; fd: number } {
  const path = tempFile(size_bytes);
  const fd = keep(native.open(path, { write: true }));
  if (content !== undefined) expect(native.pwrite(fd, path, content, 0)).toBe(content.length);
  return { path, fd };
}

/** Bytes no shifted copy of itself matches (period 256 broken by the i >> 8 term). */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + (i >> 8) * 7 + seed) & 0xff;
  return out;
}

/** Everything queued on sock now (recv with MSG_DONTWAIT until nothing is left). */
function drain(sock: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (;;) {
    const buf = new Uint8Array(64 * 1024);
    const n = native.recvReady(sock, "reader", buf, 0);
    if (n <= 0) break;
    parts.push(buf.subarray(0, n));
  }
  return Buffer.concat(parts);
}

function expectBytes(got: Uint8Array, want: Uint8Array): void {
  expect(got.length).toBe(want.length);
  expect(Buffer.compare(Buffer.from(got), Buffer.from(want))).toBe(0);
}

/** The file must be zero except for `want` at `at`. */
function expectFile(path: string, size: number, want: Uint8Array, at: number): void {
  const whole = new Uint8Array(size);
  whole.set(want, at);
  expectBytes(readFileSync(path), whole);
}

describe.skipIf(!linux)("zero-copy primitives", () => {
  test("rangeCached: a just-written range is cached; a live pread rule says not", () => {
    const { path, fd } = file(256 * 1024, pattern(256 * 1024, 1));
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(true);
    expect(native.rangeCached(fd, path, 0, 0)).toBe(false);
    // sendfile's read would bypass the rule, so the caller must take the pread path, where the
    // rule fires; asking must not spend it.
    setFaultInjection(`pread:${path}:EIO:1`);
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(false);
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(false);
    expect(() => native.pread(fd, path, new Uint8Array(10), 0)).toThrow("injected by HAST_FAULT_INJECT");
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(true);
    setFaultInjection(`pread:${path}:EIO`);
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(false);
    setFaultInjection(undefined);
    expect(native.rangeCached(fd, path, 4096, 128 * 1024)).toBe(true);
  });

  test("sendfile: a range at an odd offset arrives byte for byte", () => {
    const [a, b] = pair();
    const data = pattern(1024 * 1024, 2);
    const { path, fd } = file(data.length, data);
    const offset = 4096 + 123, length = 256 * 1024;
    const got: Uint8Array[] = [];
    let sent = 0;
    // The socket holds ~200 KiB: send what it takes, read, repeat (bounded).
    for (let round = 0; sent < length && round < 1000; round++) {
      const n = native.sendfile(a, "peer", fd, path, offset + sent, length - sent);
      expect(n).toBeGreaterThanOrEqual(0);
      sent += n;
      got.push(drain(b));
    }
    expect(sent).toBe(length);
    expectBytes(Buffer.concat(got), data.subarray(offset, offset + length));
  });

  test("sendfile: a full socket gives a short count, then 0, never a throw", () => {
    const [a, b] = pair();
    const data = pattern(8 * 1024 * 1024, 3);
    const { path, fd } = file(data.length, data);
    const first = native.sendfile(a, "peer", fd, path, 0, data.length);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(data.length);
    expect(native.sendfile(a, "peer", fd, path, first, data.length - first)).toBe(0);
    expectBytes(drain(b), data.subarray(0, first));
  });

  test("sendfile: a range past the end of the file gives the short count", () => {
    const [a, b] = pair();
    const data = pattern(10_000, 4);
    const { path, fd } = file(data.length, data);
    expect(native.sendfile(a, "peer", fd, path, 8000, 4096)).toBe(2000);
    expect(native.sendfile(a, "peer", fd, path, 10_000, 4096)).toBe(0);
    expectBytes(drain(b), data.subarray(8000));
  });

  test("spliceIn: queued bytes land at the offset, at most length at a time; none queued is 0", () => {
    const [a, b] = pair();
    const pipe = splicePipe();
    expect(new Set([a, b, ...pipe]).size).toBe(4);
    const { path, fd } = file(64 * 1024);
    const data = pattern(10_000, 5);
    expect(writeSync(a, data)).toBe(data.length);
    // length bounds what is taken; the rest stays queued for the next call.
    expect(native.spliceIn(b, "peer", pipe, fd, path, 5000, 3000, 0)).toEqual({ taken: 3000, error: null });
    expect(native.spliceIn(b, "peer", pipe, fd, path, 8000, 1 << 20, 0)).toEqual({ taken: 7000, error: null });
    expectFile(path, 64 * 1024, data, 5000);
    expect(native.spliceIn(b, "peer", pipe, fd, path, 0, 1 << 20, 0)).toEqual({ taken: 0, error: null });
    const started = performance.now();
    expect(native.spliceIn(b, "peer", pipe, fd, path, 0, 1 << 20, 2000)).toEqual({ taken: 0, error: null });
    expect(performance.now() - started).toBeLessThan(1000);
    expectFile(path, 64 * 1024, data, 5000);
  });

  test("spliceIn with fd -1 discards: counted, file untouched, socket emptied", () => {
    const [a, b] = pair();
    const pipe = splicePipe();
    const path = tempFile(16 * 1024);
    const data = pattern(300 * 1024, 6); // more than the socket holds: taken in rounds
    let written = 0;
    let taken = 0;
    for (let round = 0; written < data.length && round < 1000; round++) {
      try {
        written += writeSync(a, data, written, data.length - written);
      } catch (err) {
        if ((err as { code?: string }).code !== "EAGAIN") throw err;
      }
      const r = native.spliceIn(b, "peer", pipe, -1, path, 0, 1 << 20, 0);
      expect(r.error).toBeNull();
      taken += r.taken;
    }
    taken += native.spliceIn(b, "peer", pipe, -1, path, 0, 1 << 20, 0).taken;
    expect(taken).toBe(data.length);
    expect(drain(b).length).toBe(0);
    expectFile(path, 16 * 1024, new Uint8Array(0), 0);
  });

  test("spliceIn: an injected pwrite fault still takes the bytes, writes none, fires once", () => {
    const [a, b] = pair();
    const pipe = splicePipe();
    const { path, fd } = file(64 * 1024);
    setFaultInjection(`pwrite:${path}:EIO:1`);
    const data = pattern(20_000, 7);
    writeSync(a, data);
    const r = native.spliceIn(b, "peer", pipe, fd, path, 4096, 1 << 20, 0);
    expect(r.taken).toBe(data.length);
    expect(r.error).toBeInstanceOf(NativeError);
    expect(r.error!.code).toBe("EIO");
    expect(r.error!.message).toContain("injected by HAST_FAULT_INJECT");
    expect(r.error!.message).toContain(`pwrite ${path} at offset 4096 (20000 bytes)`);
    expect(native.spliceIn(b, "peer", pipe, fd, path, 4096, 1 << 20, 0)).toEqual({ taken: 0, error: null });
    expectFile(path, 64 * 1024, new Uint8Array(0), 0);
    // The rule's one count is spent: the next payload lands.
    writeSync(a, data);
    expect(native.spliceIn(b, "peer", pipe, fd, path, 4096, 1 << 20, 0)).toEqual({ taken: data.length, error: null });
    expectFile(path, 64 * 1024, data, 4096);
  });

  test("spliceIn: a call that finds nothing queued leaves a pwrite rule for the bytes that come", () => {
    const [a, b] = pair();
    const pipe = splicePipe();
    const { path, fd } = file(64 * 1024);
    setFaultInjection(`pwrite:${path}:EIO:1`);
    expect(native.spliceIn(b, "peer", pipe, fd, path, 0, 1 << 20, 0)).toEqual({ taken: 0, error: null });
    const data = pattern(10_000, 9);
    writeSync(a, data);
    const r = native.spliceIn(b, "peer", pipe, fd, path, 0, 1 << 20, 0);
    expect(r.taken).toBe(data.length);
    expect(r.error?.message).toContain("injected by HAST_FAULT_INJECT");
    expectFile(path, 64 * 1024, new Uint8Array(0), 0);
  });

  test("spliceIn: a real write failure (read-only fd) is reported and the bytes drained", () => {
    // Unlike an injected fault (which passes fd -1), this goes through the C drain's failure path.
    const [a, b] = pair();
    const pipe = splicePipe();
    const path = tempFile(64 * 1024);
    const fd = keep(native.open(path, { write: false }));
    const data = pattern(20_000, 8);
    writeSync(a, data);
    const r = native.spliceIn(b, "peer", pipe, fd, path, 0, 1 << 20, 0);
    expect(r.taken).toBe(data.length);
    expect(r.error).toBeInstanceOf(NativeError);
    expect(r.error!.code).toBe("EBADF");
    expect(r.error!.op).toBe("pwrite");
    expect(drain(b).length).toBe(0);
    // The pipe was emptied too: a following splice into a writable fd lands only new bytes.
    const wfd = keep(native.open(path, { write: true }));
    const more = pattern(5000, 9);
    writeSync(a, more);
    expect(native.spliceIn(b, "peer", pipe, wfd, path, 100, 1 << 20, 0)).toEqual({ taken: 5000, error: null });
    expectFile(path, 64 * 1024, more, 100);
  });
});

describe.skipIf(!linux)("Landing", () => {
  const size = 64 * 1024, base = 4096;

  function landing(path: string): { landing: Landing; a: number; b: number } {
    const [a, b] = pair();
    const disk = openDisk(path);
    return { landing: new Landing(b, "peer", splicePipe(), disk, base), a, b };
  }

  test("held and queued bytes land at base + at, in order", () => {
    const path = tempFile(size);
    const { landing: l, a } = landing(path);
    const data = pattern(9000, 10);
    l.write(data.subarray(0, 1000), 0);
    writeSync(a, data.subarray(1000, 4000));
    // max is what the payload has left from `at` (the disk checks it lies inside the component).
    expect(l.take(1000, 8000, 0)).toBe(3000);
    expect(l.take(4000, 5000, 0)).toBe(0);
    l.write(data.subarray(4000, 6000), 4000);
    writeSync(a, data.subarray(6000));
    // max bounds a take: 1000 now, the other 2000 next.
    expect(l.take(6000, 1000, 0)).toBe(1000);
    expect(l.take(7000, 2000, 0)).toBe(2000);
    expect(l.error).toBeNull();
    expectFile(path, size, data, base);
  });

  test("after a failed write nothing more is written, the socket still drains, error is the first", () => {
    const path = tempFile(size);
    const { landing: l, a, b } = landing(path);
    setFaultInjection(`pwrite:${path}:EIO:1`);
    l.write(pattern(1000, 11), 0); // fails; write() must not throw
    const first = l.error;
    expect(first).toBeInstanceOf(NativeError);
    expect(first!.message).toContain("injected by HAST_FAULT_INJECT");
    // The rule is spent, so only Landing's own guard keeps these off the disk.
    l.write(pattern(1000, 12), 1000);
    writeSync(a, pattern(5000, 13));
    expect(l.take(2000, 5000, 0)).toBe(5000);
    expect(l.take(7000, 1000, 0)).toBe(0);
    expect(drain(b).length).toBe(0);
    expect(l.error).toBe(first);
    expectFile(path, size, new Uint8Array(0), 0);
  });

  test("a closed disk fails the take with EBADF rather than discard the bytes as written", () => {
    const path = tempFile(size);
    const [a, b] = pair();
    const disk = openDisk(path);
    const l = new Landing(b, "peer", splicePipe(), disk, base);
    disk.close();
    writeSync(a, pattern(3000, 17));
    let thrown: unknown = null;
    try {
      l.take(0, 3000, 0);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(NativeError);
    expect((thrown as NativeError).code).toBe("EBADF");
  });

  test("drop(): later bytes are taken off the socket but not written, and no error is made up", () => {
    const path = tempFile(size);
    const { landing: l, a, b } = landing(path);
    l.write(pattern(1000, 14), 0);
    l.drop();
    l.write(pattern(1000, 15), 1000);
    writeSync(a, pattern(3000, 16));
    expect(l.take(2000, 3000, 0)).toBe(3000);
    expect(drain(b).length).toBe(0);
    expect(l.error).toBeNull();
    expectFile(path, size, pattern(1000, 14), base);
  });
});

describe.skipIf(!linux)("PeerLink.sendWriteFromFile", () => {
  const size = 8 << 20;

  /** A link over a stream that writes to `fd` itself (as Bun's does when nothing is queued) and
   * records what it was given; `queued` stands for bytes waiting in its queue. */
  async function linkOver(fd: number | undefined, encoding = RAW, queued = 0) {
    const given: { bytes: Uint8Array; stable: boolean }[] = [];
    const stream: ByteStream = {
      write: (bytes, stable = false) => {
        given.push({ bytes, stable });
        if (fd !== undefined && bytes.length <= 4096) writeSync(fd, bytes); // heads only: the rest is the test's to check
      },
      queued_bytes: queued,
      fd,
      remote: "test",
      close: () => {},
    };
    const link = await PeerLink.over(async () => stream, prims, encoding);
    link.start(() => {}, () => {});
    return { link, given };
  }

  const head = (length: number) => ({ kind: "write" as const, seq: 9, offset: 1 << 20, length, memsync: false, sync: true });
  const noRest = () => {
    throw new Error("rest() asked although the socket took everything");
  };

  test("the head goes through the stream, the data straight from the file; the peer decodes the WRITE", async () => {
    const [a, b] = pair();
    const data = pattern(256 * 1024, 21);
    const path = tempFile(size);
    const disk = openDisk(path);
    disk.write(data, 4096);
    const { link, given } = await linkOver(a);
    expect(link.sendWriteFromFile(head(data.length), disk, 4096, noRest)).toBe(true);
    expect(given.map((g) => g.bytes.length)).toEqual([HEADER_BYTES]);
    const got = decodeAll(drain(b));
    expect(got).toEqual([{ kind: "frame", frame: { ...head(data.length), data } }]);
  });

  test("nothing is sent where it cannot be: no descriptor, a checksum, zstd, bytes queued ahead", async () => {
    const path = tempFile(size);
    const disk = openDisk(path);
    const [a] = pair();
    for (const { fd, encoding, queued } of [
      { fd: undefined, encoding: RAW, queued: 0 },
      { fd: a, encoding: { checksum: "crc32", compression: "none" } as const, queued: 0 },
      { fd: a, encoding: { checksum: "none", compression: "zstd" } as const, queued: 0 },
      { fd: a, encoding: RAW, queued: 1 },
    ]) {
      const { link, given } = await linkOver(fd, encoding, queued);
      expect(link.sendWriteFromFile(head(64 * 1024), disk, 0, noRest)).toBe(false);
      expect(given).toEqual([]);
    }
  });

  test("what a full socket does not take comes from rest(from), queued as it is", async () => {
    const [a, b] = pair();
    const data = pattern(size - 4096, 22);
    const path = tempFile(size);
    const disk = openDisk(path);
    disk.write(data, 4096);
    const { link, given } = await linkOver(a);
    let from = -1;
    const rest = new Uint8Array(1);
    expect(link.sendWriteFromFile(head(data.length), disk, 4096, (f) => ((from = f), rest))).toBe(true);
    expect(from).toBeGreaterThan(0); // nobody reads b: the socket fills before the end
    expect(from).toBeLessThan(data.length);
    expect(given.map((g) => [g.bytes.length, g.stable])).toEqual([[HEADER_BYTES, false], [1, true]]);
    expect(given[1]!.bytes).toBe(rest); // the caller's buffer, not a copy
    const sent = drain(b);
    expectBytes(sent.subarray(HEADER_BYTES), data.subarray(0, from));
  });
});
