// The NBD server against real clients (nbdinfo, qemu-io, qemu-img, nbdcopy, fio) with a memory
// and a file-backed backend, and against a raw socket client for the error paths.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomFillSync } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { tmpdir } from "node:os";
import { createConnection } from "node:net";
import { join } from "node:path";
import type { BlockBackend } from "../../src/gate/block-backend.ts";
import { MemoryBackend } from "../../src/gate/memory-backend.ts";
import { NbdServer } from "../../src/gate/nbd-server.ts";
import { NBD_CMD, NBD_CMD_FLAG, NBD_ERR, NBD_FLAG, NBD_OPT, NBD_REP, viewOf } from "../../src/wire/nbd.ts";
import { RawNbdClient, goData, nbdRead, optionRequest } from "../../src/io/nbd-client.ts";
import { encodeRequestHeader } from "../../src/wire/nbd-transmission.ts";
import { waitFor } from "../wait-for.ts";

const MiB = 1024 * 1024;
const EXPORT_BYTES = 128 * MiB;
const TOOL_TIMEOUT_MS = 60_000;

function missing(tool: string): boolean {
  if (Bun.which(tool)) return false;
  console.log(`skip: ${tool} not installed, its NBD client tests are skipped`);
  return true;
}
const no = {
  nbdinfo: missing("nbdinfo"), qemu_io: missing("qemu-io"), qemu_img: missing("qemu-img"),
  nbdcopy: missing("nbdcopy"), fio: missing("fio"),
};

/** Runs a command without blocking the event loop (the server lives in this process). */
async function run(argv: string[], timeout_ms = TOOL_TIMEOUT_MS): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeout_ms);
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function ok(argv: string[]): Promise<string> {
  const result = await run(argv);
  if (result.code !== 0) throw new Error(`${argv.join(" ")} exited ${result.code}: ${result.stderr.trim()}${result.stdout.trim()}`);
  return result.stdout;
}

async function sha256File(path: string, bytes: number): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  hasher.update(await Bun.file(path).slice(0, bytes).arrayBuffer());
  return hasher.digest("hex");
}

/** A file-backed BlockBackend on node:fs FileHandle positional I/O. */
class FileBackend implements BlockBackend {
  readonly block_bytes = 512;
  private static readonly zeroes = new Uint8Array(MiB);
  private constructor(private readonly fh: FileHandle, readonly size_bytes: number) {}

  static async create(path: string, size_bytes: number): Promise<FileBackend> {
    const fh = await open(path, "w+");
    await fh.truncate(size_bytes);
    return new FileBackend(fh, size_bytes);
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    for (let done = 0; done < into.byteLength;) {
      const { bytesRead } = await this.fh.read(into, done, into.byteLength - done, offset + done);
      if (bytesRead === 0) throw Object.assign(new Error(`short read at ${offset + done}`), { code: "EIO" });
      done += bytesRead;
    }
  }

  async write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    for (let done = 0; done < data.byteLength;) {
      const { bytesWritten } = await this.fh.write(data, done, data.byteLength - done, offset + done);
      done += bytesWritten;
    }
    if (fua) await this.fh.datasync();
  }

  flush(): Promise<void> {
    return this.fh.datasync();
  }

  trim(offset: number, length: number): Promise<void> {
    return this.writeZeroes(offset, length, true);
  }

  async writeZeroes(offset: number, length: number, _may_trim: boolean): Promise<void> {
    for (let done = 0; done < length; done += MiB) {
      await this.write(offset + done, FileBackend.zeroes.subarray(0, Math.min(MiB, length - done)), false);
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

const dir = mkdtempSync(join(tmpdir(), "hast-nbd-test-"));
const logs: string[] = [];
const log = (level: string, msg: string) => void logs.push(`${level} ${msg}`);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

for (const kind of ["memory", "file"] as const) {
  describe(`real clients, ${kind} backend`, () => {
    let server: NbdServer;
    let backend: MemoryBackend | FileBackend;
    let uri = "";

    beforeAll(async () => {
      backend = kind === "memory" ? new MemoryBackend({ size_bytes: EXPORT_BYTES }) : await FileBackend.create(join(dir, "disk.img"), EXPORT_BYTES);
      server = await NbdServer.start({ listen: { unix: join(dir, `${kind}.sock`) }, export_name: "r0", description: "hast test disk", backend, log });
      uri = server.address;
    });
    afterAll(async () => {
      await server?.stop();
      if (backend instanceof FileBackend) await backend.close();
    });

    test.skipIf(no.nbdinfo)("nbdinfo --json: size, flags, block sizes, structured replies", async () => {
      const info = JSON.parse(await ok(["nbdinfo", "--json", uri]));
      expect(info["protocol"]).toBe("newstyle-fixed");
      expect(info["TLS"]).toBe(false);
      expect(info["structured"]).toBe(true);
      const e = info["exports"][0];
      expect(e["export-name"]).toBe("r0");
      expect(e["description"]).toBe("hast test disk");
      expect(e["export-size"]).toBe(EXPORT_BYTES);
      for (const flag of ["can_flush", "can_trim", "can_fua", "can_multi_conn", "can_zero", "can_cache", "can_fast_zero"]) expect(e[flag]).toBe(true);
      expect(e["is_read_only"]).toBe(false);
      expect(e["block_size_minimum"]).toBe(512);
      expect(e["block_size_preferred"]).toBe(4096);
      expect(e["block_size_maximum"]).toBe(32 * MiB);
    });

    test.skipIf(no.nbdinfo)("nbdinfo --size, --can and --list", async () => {
      expect((await ok(["nbdinfo", "--size", uri])).trim()).toBe(String(EXPORT_BYTES));
      for (const what of ["flush", "trim", "fua", "multi-conn"]) expect((await run(["nbdinfo", "--can", what, uri])).code).toBe(0);
      const list = JSON.parse(await ok(["nbdinfo", "--list", "--json", uri.replace("/r0?", "/?")]));
      expect(list["exports"].map((x: Record<string, unknown>) => x["export-name"])).toEqual(["r0"]);
    });

    test.skipIf(no.qemu_io)("qemu-io: write/read patterns, write -z, discard, flush, write -f", async () => {
      const out = await ok(["qemu-io", "-f", "raw", uri,
        "-c", "write -P 0xab 0 1M", "-c", "read -P 0xab 0 1M", "-c", "read -P 0x00 1M 1M",
        "-c", "write -P 0x5a 2M 64k", "-c", "write -z 2M 64k", "-c", "read -P 0x00 2M 64k",
        "-c", "write -P 0x33 4M 1M", "-c", "discard 4M 1M", "-c", "flush",
        "-c", "write -f -P 0x11 8M 4k", "-c", "read -P 0x11 8M 4k",
        "-c", "aio_write -P 0x22 16M 64k", "-c", "aio_flush", "-c", "read -P 0x22 16M 64k"]);
      expect(out).not.toContain("verification failed");
      if (backend instanceof MemoryBackend) {
        expect(backend.counts.fua_writes).toBeGreaterThan(0);
        expect(backend.counts.writeZeroes).toBeGreaterThan(0);
        expect(backend.counts.trim).toBeGreaterThan(0);
        expect(backend.counts.flush).toBeGreaterThan(0);
      }
      // A mismatching pattern must fail: the check above is not vacuous.
      expect((await run(["qemu-io", "-f", "raw", uri, "-c", "read -P 0x99 0 4k"])).stdout).toContain("verification failed");
    });

    test.skipIf(no.nbdcopy)("nbdcopy: 64 MiB random file in and out, 1 and 4 connections", async () => {
      const src = join(dir, `${kind}-src.img`), out = join(dir, `${kind}-out.img`), out4 = join(dir, `${kind}-out4.img`);
      const data = new Uint8Array(64 * MiB);
      randomFillSync(data);
      writeFileSync(src, data);
      const want = await sha256File(src, 64 * MiB);
      await ok(["nbdcopy", src, uri]);
      await ok(["nbdcopy", uri, out]);
      expect(statSync(out).size).toBe(EXPORT_BYTES);
      expect(await sha256File(out, 64 * MiB)).toBe(want);

      randomFillSync(data);
      writeFileSync(src, data);
      const want4 = await sha256File(src, 64 * MiB);
      await ok(["nbdcopy", "--flush", "--connections=4", "--requests=16", "--request-size=1048576", src, uri]);
      await ok(["nbdcopy", "--connections=4", uri, out4]);
      expect(await sha256File(out4, 64 * MiB)).toBe(want4);
      for (const f of [src, out, out4]) rmSync(f);
    }, 120_000);

    test.skipIf(no.qemu_img)("qemu-img bench: 4 KiB reads QD32 and 1 MiB writes QD16", async () => {
      expect(await ok(["qemu-img", "bench", "-f", "raw", "-c", "5000", "-d", "32", "-s", "4k", uri])).toContain("Run completed");
      expect(await ok(["qemu-img", "bench", "-f", "raw", "-w", "-c", "500", "-d", "16", "-s", "1M", uri])).toContain("Run completed");
    }, 120_000);

    test.skipIf(no.fio)("fio --ioengine=nbd: randwrite with crc32c verify", async () => {
      const out = await ok(["fio", "--name=v", "--ioengine=nbd", `--uri=${uri}`, "--rw=randwrite", "--bs=4k", "--size=16M",
        "--iodepth=32", "--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0", `--directory=${dir}`, "--output-format=json"]);
      const job = JSON.parse(out.slice(out.indexOf("{")))["jobs"][0];
      expect(job["error"]).toBe(0);
      expect(job["write"]["io_bytes"]).toBe(16 * MiB);
      expect(job["read"]["io_bytes"]).toBe(16 * MiB); // the verify pass read everything back
    }, 120_000);
  });
}

describe("handshake deadline", () => {
  test("a client that trickles its options is closed at the deadline, one that finished is not", async () => {
    const sock = join(dir, "deadline.sock");
    const server = await NbdServer.start({ listen: { unix: sock }, export_name: "r0", backend: new MemoryBackend({ size_bytes: MiB }), log, handshake_timeout_ms: 800 });
    const slow = await RawNbdClient.connect({ unix: sock });
    const done = await RawNbdClient.connect({ unix: sock });
    try {
      await done.handshake({ export_name: "r0" });
      await slow.greet();
      // One byte of an option header every 100 ms: a socket idle timeout would never fire.
      const header = optionRequest(NBD_OPT.LIST, new Uint8Array(0));
      const started = Date.now();
      for (let i = 0; i < header.length && Date.now() - started < 5000; i++) {
        slow.write(header.subarray(i, i + 1));
        if (await slow.waitClosed(100)) break;
      }
      expect(await slow.waitClosed(3000)).toBe(true);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(logs.some((l) => l.includes("handshake not finished within 0.8 s"))).toBe(true);
      done.send({ command: NBD_CMD.FLUSH });
      expect((await done.reply()).error).toBe(0);
    } finally {
      slow.close();
      done.close();
      await server.stop();
    }
  });
});

describe("raw protocol, memory backend", () => {
  const SIZE = 4 * MiB;
  const SLOW_WRITES_AT = 3 * MiB;
  let server: NbdServer;
  let backend: MemoryBackend;
  const sock = join(dir, "raw.sock");
  const clients: RawNbdClient[] = [];
  const connect = async () => {
    const c = await RawNbdClient.connect({ unix: sock });
    clients.push(c);
    return c;
  };
  const ready = async (structured = false) => {
    const c = await connect();
    await c.handshake({ export_name: "r0", structured });
    return c;
  };

  beforeAll(async () => {
    // Reads at offset 0 are slow so that a later request can overtake them; writes from SLOW_WRITES_AT
    // on are slow so that many wait in the backend at once.
    backend = new MemoryBackend({
      size_bytes: SIZE,
      delay_ms: (op, offset) => (op === "read" && offset === 0 ? 50 : op === "write" && offset >= SLOW_WRITES_AT ? 5 : 0),
    });
    server = await NbdServer.start({ listen: { unix: sock }, export_name: "r0", backend, log });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await server?.stop();
  });

  test("socket file is mode 0600 and GO reports size and flags", async () => {
    expect(statSync(sock).mode & 0o777).toBe(0o600);
    const c = await connect();
    const { size_bytes, flags } = await c.handshake({ export_name: "r0" });
    expect(size_bytes).toBe(SIZE);
    expect(flags).toBe(NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA | NBD_FLAG.SEND_TRIM |
      NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.CAN_MULTI_CONN | NBD_FLAG.SEND_CACHE | NBD_FLAG.SEND_FAST_ZERO);
  });

  test("out-of-range read is EINVAL, then a valid read still works", async () => {
    const c = await ready();
    c.send({ command: NBD_CMD.READ, offset: SIZE, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.READ, offset: SIZE - 512, length: 512 });
    const reply = await c.reply();
    expect(reply.error).toBe(0);
    expect(reply.data?.byteLength).toBe(512);
  });

  test("unknown command and unknown flag are EINVAL; the first is logged as a warning, the second at debug level", async () => {
    const c = await ready();
    const before = logs.length;
    c.send({ command: 42, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.READ, length: 512, flags: 0x4000 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    const rejected = logs.slice(before).filter((l) => l.includes("EINVAL for"));
    expect(rejected.map((l) => l.split(" ")[0])).toEqual(["warn", "debug"]);
    c.send({ command: NBD_CMD.FLUSH });
    expect((await c.reply()).error).toBe(0);
  });

  test("write beyond the end is ENOSPC and its payload is skipped", async () => {
    const c = await ready();
    c.send({ command: NBD_CMD.WRITE, offset: SIZE - 512 }, new Uint8Array(1024).fill(7));
    expect((await c.reply()).error).toBe(NBD_ERR.ENOSPC);
    c.send({ command: NBD_CMD.WRITE_ZEROES, offset: SIZE, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.ENOSPC);
    c.send({ command: NBD_CMD.WRITE, offset: 4096 }, new Uint8Array(512).fill(9));
    expect((await c.reply()).error).toBe(0);
    expect(backend.bytes[4096]).toBe(9);
  });

  test("misaligned offset or length is EINVAL", async () => {
    const c = await ready();
    c.send({ command: NBD_CMD.READ, offset: 100, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.WRITE, offset: 512 }, new Uint8Array(100));
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.TRIM, offset: 512, length: 1 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.READ, offset: 512, length: 512 });
    expect((await c.reply()).error).toBe(0);
  });

  test("oversized read is EOVERFLOW and the connection keeps serving", async () => {
    const c = await ready();
    c.send({ command: NBD_CMD.READ, offset: 0, length: 32 * MiB + 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EOVERFLOW);
    c.send({ command: NBD_CMD.READ, offset: 512, length: 512 });
    expect((await c.reply()).error).toBe(0);
  });

  test("oversized write is EOVERFLOW and the connection is closed", async () => {
    const c = await ready();
    // Header only: the server must answer without waiting for 32 MiB of payload.
    c.send({ command: NBD_CMD.WRITE, offset: 0, length: 32 * MiB + 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EOVERFLOW);
    expect(await c.waitClosed()).toBe(true);
    expect(logs.some((l) => l.includes("exceeds the 33554432-byte maximum payload"))).toBe(true);
  });

  test("a WRITE cut by the client's disconnect is dropped and logged as a warning", async () => {
    const before = await ready();
    before.send({ command: NBD_CMD.WRITE, offset: 64 * 1024, length: 4096 }, new Uint8Array(4096).fill(0x11));
    expect((await before.reply()).error).toBe(0);
    const c = await ready();
    c.send({ command: NBD_CMD.WRITE, offset: 64 * 1024, length: 8192 }); // the header alone
    c.write(new Uint8Array(1024).fill(0x22));
    await Bun.sleep(50);
    c.close();
    await waitFor("the cut WRITE's warning", () => logs.some((l) => l.startsWith("warn") && l.includes("disconnected during the payload of a WRITE of 8192 bytes at offset 65536")));
    before.send({ command: NBD_CMD.READ, offset: 64 * 1024, length: 4096 });
    const r = await before.reply();
    expect(r.error).toBe(0);
    expect(r.data!.every((b) => b === 0x11)).toBe(true);
  });

  test("garbage magic closes only that connection", async () => {
    const good = await ready();
    const bad = await ready();
    bad.write(new Uint8Array(28).fill(0xee));
    expect(await bad.waitClosed()).toBe(true);
    expect(logs.some((l) => l.startsWith("warn") && l.includes("bad request magic 0xeeeeeeee"))).toBe(true);
    good.send({ command: NBD_CMD.READ, offset: 1024, length: 512 });
    expect((await good.reply()).error).toBe(0);
    const fresh = await ready();
    fresh.send({ command: NBD_CMD.FLUSH });
    expect((await fresh.reply()).error).toBe(0);
  });

  test("garbage instead of the handshake closes the connection", async () => {
    const c = await connect();
    c.write(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
    expect(await c.waitClosed()).toBe(true);
  });

  test("large WRITEs arriving in pieces, back to back with other requests, land intact", async () => {
    // Large payloads are read straight from the socket once they start to arrive; the requests
    // queued behind them must still be served, in order, with nothing read twice or skipped.
    // Over TCP, whose loopback buffers hold megabytes: Bun delivers a part, the rest is queued.
    const tcp = await NbdServer.start({ listen: { hostname: "127.0.0.1", port: 0 }, export_name: "r0", backend, log });
    const port = Number(new URL(tcp.address).port);
    const c = await RawNbdClient.connect({ hostname: "127.0.0.1", port });
    try {
      await c.handshake({ export_name: "r0" });
      const a = new Uint8Array(MiB), b = new Uint8Array(2 * MiB);
      randomFillSync(a);
      randomFillSync(b);
      const header = (command: number, cookie: bigint, offset: number, length: number) =>
        encodeRequestHeader({ command, flags: 0, cookie, offset, length });
      c.write(header(NBD_CMD.WRITE, 1n, MiB, a.length));
      c.write(a.subarray(0, 100 * 1024));
      await Bun.sleep(20);
      c.write(a.subarray(100 * 1024));
      c.write(header(NBD_CMD.WRITE, 2n, 2 * MiB, b.length));
      c.write(b.subarray(0, 10));
      await Bun.sleep(20);
      c.write(Buffer.concat([b.subarray(10), header(NBD_CMD.FLUSH, 3n, 0, 0), header(NBD_CMD.WRITE, 4n, 0, 4096), a.subarray(0, 4096)]));
      const cookies = new Set<bigint>();
      for (let i = 0; i < 4; i++) {
        const reply = await c.reply();
        expect(reply.error).toBe(0);
        cookies.add(reply.cookie);
      }
      expect([...cookies].sort()).toEqual([1n, 2n, 3n, 4n]);
      expect(await nbdRead(c, MiB, a.length)).toEqual(a);
      expect(await nbdRead(c, 2 * MiB, b.length)).toEqual(b);
      expect(await nbdRead(c, 0, 4096)).toEqual(a.subarray(0, 4096));
    } finally {
      c.close();
      await tcp.stop();
    }
  });

  test("small WRITEs held by a slow backend land intact: their pooled payload buffers wait until it is done", async () => {
    // 4 KiB payloads are copied out of the socket's reads into pooled buffers; a buffer goes back
    // to the pool only once the backend's write settled. Handed back sooner, the next write's
    // payload would overwrite it while the backend still waits: the data read back would differ.
    const c = await ready();
    const data = new Uint8Array(64 * 4096);
    randomFillSync(data);
    const requests = [];
    for (let i = 0; i < 64; i++) {
      requests.push(encodeRequestHeader({ command: NBD_CMD.WRITE, flags: 0, cookie: BigInt(i + 1), offset: SLOW_WRITES_AT + i * 4096, length: 4096 }));
      requests.push(data.subarray(i * 4096, (i + 1) * 4096));
    }
    c.write(Buffer.concat(requests));
    for (let i = 0; i < 64; i++) expect((await c.reply()).error).toBe(0);
    expect(await nbdRead(c, SLOW_WRITES_AT, data.length)).toEqual(data);
  });

  test("pipelined requests complete out of order, matched by cookie", async () => {
    const c = await ready();
    const slow = c.send({ command: NBD_CMD.READ, offset: 0, length: 512 });
    const fast = c.send({ command: NBD_CMD.READ, offset: 512, length: 512 });
    const first = await c.reply();
    const second = await c.reply();
    expect(first.cookie).toBe(fast);
    expect(second.cookie).toBe(slow);
  });

  test("a client that does not read its replies is throttled, then gets every reply", async () => {
    const c = await ready();
    const before = backend.counts.read;
    const cookies = new Set<bigint>();
    for (let i = 0; i < 200; i++) cookies.add(c.send({ command: NBD_CMD.READ, offset: MiB + (i % 2) * MiB, length: MiB }));
    await Bun.sleep(300);
    // 64 MiB of in-flight data per connection, plus what the socket buffers hold.
    expect(backend.counts.read - before).toBeLessThan(100);
    for (let i = 0; i < 200; i++) {
      const reply = await c.reply();
      expect(reply.error).toBe(0);
      expect(cookies.delete(reply.cookie)).toBe(true);
    }
    expect(backend.counts.read - before).toBe(200);
  }, 60_000);

  test("structured replies: READ data in OFFSET_DATA, errors in ERROR chunks", async () => {
    backend.bytes.fill(0x6b, 8192, 8192 + 1024);
    const c = await ready(true);
    c.send({ command: NBD_CMD.READ, offset: 8192, length: 1024 });
    const reply = await c.reply();
    expect(reply.error).toBe(0);
    expect(reply.data?.every((b) => b === 0x6b)).toBe(true);
    c.send({ command: NBD_CMD.READ, offset: SIZE, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EINVAL);
    c.send({ command: NBD_CMD.WRITE, offset: 0 }, new Uint8Array(512));
    expect((await c.reply()).error).toBe(0);
  });

  test("FAST_ZERO is ENOTSUP, plain WRITE_ZEROES and CACHE succeed", async () => {
    const c = await ready();
    c.send({ command: NBD_CMD.WRITE_ZEROES, offset: 0, length: 4096, flags: NBD_CMD_FLAG.FAST_ZERO });
    expect((await c.reply()).error).toBe(NBD_ERR.ENOTSUP);
    c.send({ command: NBD_CMD.WRITE_ZEROES, offset: 0, length: 4096, flags: NBD_CMD_FLAG.NO_HOLE });
    expect((await c.reply()).error).toBe(0);
    c.send({ command: NBD_CMD.CACHE, offset: 0, length: 4096 });
    expect((await c.reply()).error).toBe(0);
  });

  test("backend errors map by errno name", async () => {
    const c = await ready();
    backend.failNext("write", "EDQUOT");
    c.send({ command: NBD_CMD.WRITE, offset: 0 }, new Uint8Array(512));
    expect((await c.reply()).error).toBe(NBD_ERR.ENOSPC);
    backend.failNext("flush", "EIO");
    c.send({ command: NBD_CMD.FLUSH });
    expect((await c.reply()).error).toBe(NBD_ERR.EIO);
    backend.failNext("read", "EBADTHING");
    c.send({ command: NBD_CMD.READ, offset: 512, length: 512 });
    expect((await c.reply()).error).toBe(NBD_ERR.EIO);
  });

  test("DISC: in-flight requests are answered, then the server closes", async () => {
    const c = await ready();
    const slow = c.send({ command: NBD_CMD.READ, offset: 0, length: 512 });
    c.send({ command: NBD_CMD.DISC });
    const reply = await c.reply();
    expect(reply.cookie).toBe(slow);
    expect(reply.error).toBe(0);
    expect(await c.waitClosed()).toBe(true);
  });

  // Without half-open sockets the server closed at the client's FIN and its answers were lost
  // (review of the NBD server): a client may shut down its sending side and still read them.
  test("half-close: what the client sent before it is carried out and answered, then the server closes", async () => {
    const socket = createConnection({ path: sock, allowHalfOpen: true });
    let rx = Buffer.alloc(0);
    let ended = false;
    socket.on("data", (chunk: Buffer) => void (rx = Buffer.concat([rx, chunk])));
    socket.on("end", () => void (ended = true));
    socket.on("error", () => {});
    const take = async (n: number) => {
      await waitFor(`${n} bytes from the server`, () => rx.length >= n, 5_000);
      const out = rx.subarray(0, n);
      rx = rx.subarray(n);
      return out;
    };
    try {
      await take(18); // greeting
      socket.write(new Uint8Array([0, 0, 0, 3])); // fixed newstyle, no zeroes
      socket.write(optionRequest(NBD_OPT.GO, goData("r0")));
      for (;;) {
        const reply = await take(20);
        await take(reply.readUInt32BE(16));
        if (reply.readUInt32BE(12) === NBD_REP.ACK) break;
      }
      socket.write(encodeRequestHeader({ command: NBD_CMD.WRITE, flags: 0, cookie: 7n, offset: SLOW_WRITES_AT, length: 4096 }));
      socket.write(new Uint8Array(4096).fill(0x5a)); // a slow write: still running at the FIN
      socket.write(encodeRequestHeader({ command: NBD_CMD.FLUSH, flags: 0, cookie: 8n, offset: 0, length: 0 }));
      socket.end(); // half-close: nothing more will come
      const answers = new Map<bigint, number>();
      for (let i = 0; i < 2; i++) {
        const header = await take(16);
        answers.set(header.readBigUInt64BE(8), header.readUInt32BE(4));
      }
      expect(answers).toEqual(new Map([[7n, 0], [8n, 0]]));
      expect(backend.bytes[SLOW_WRITES_AT]).toBe(0x5a);
      await waitFor("the server to close", () => ended, 5_000);
    } finally {
      socket.destroy();
    }
  });

  test("options: unknown → ERR_UNSUP, bad GO → ERR_INVALID, unknown export → ERR_UNKNOWN, LIST, GO on the default export", async () => {
    const c = await connect();
    await c.greet();
    c.write(optionRequest(0x77, new Uint8Array(5)));
    expect(await c.optionReply()).toMatchObject({ option: 0x77, type: NBD_REP.ERR_UNSUP });
    c.write(optionRequest(NBD_OPT.SET_META_CONTEXT, new Uint8Array(0)));
    expect(await c.optionReply()).toMatchObject({ option: NBD_OPT.SET_META_CONTEXT, type: NBD_REP.ERR_UNSUP });
    c.write(optionRequest(NBD_OPT.GO, new Uint8Array(3)));
    expect(await c.optionReply()).toMatchObject({ option: NBD_OPT.GO, type: NBD_REP.ERR_INVALID });
    c.write(optionRequest(NBD_OPT.GO, goData("nope")));
    const unknown = await c.optionReply();
    expect(unknown.type).toBe(NBD_REP.ERR_UNKNOWN);
    expect(new TextDecoder().decode(unknown.data)).toContain(`export "nope" does not exist`);
    c.write(optionRequest(NBD_OPT.LIST, new Uint8Array(0)));
    const entry = await c.optionReply();
    expect(entry.type).toBe(NBD_REP.SERVER);
    expect(new TextDecoder().decode(entry.data.subarray(4))).toBe("r0");
    expect((await c.optionReply()).type).toBe(NBD_REP.ACK);
    c.write(optionRequest(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(0)));
    expect((await c.optionReply()).type).toBe(NBD_REP.ACK);
    c.write(optionRequest(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(0)));
    expect((await c.optionReply()).type).toBe(NBD_REP.ERR_INVALID);
    c.write(optionRequest(NBD_OPT.GO, goData("")));
    const types: number[] = [];
    for (let r = await c.optionReply(); ; r = await c.optionReply()) {
      types.push(r.type === NBD_REP.INFO ? viewOf(r.data).getUint16(0) : -r.type);
      if (r.type === NBD_REP.ACK) break;
    }
    expect(types).toEqual([0, 3, -NBD_REP.ACK]); // EXPORT, BLOCK_SIZE, ACK
    c.send({ command: NBD_CMD.FLUSH });
    expect((await c.reply()).error).toBe(0);
  });

  test("an unknown export name of the longest length is answered (the message cut), and logged on one line", async () => {
    const c = await connect();
    await c.greet();
    const name = "x\nerror: forged line " + "n".repeat(4096 - 21);
    c.write(optionRequest(NBD_OPT.GO, goData(name)));
    const unknown = await c.optionReply();
    expect(unknown.type).toBe(NBD_REP.ERR_UNKNOWN);
    expect(unknown.data.byteLength).toBe(4096);
    c.write(optionRequest(NBD_OPT.GO, goData("")));
    for (let r = await c.optionReply(); r.type !== NBD_REP.ACK; r = await c.optionReply()) expect(r.type).toBe(NBD_REP.INFO);
    const bad = await connect();
    await bad.greet();
    const before = logs.length;
    bad.write(optionRequest(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("a\nerror: forged")));
    expect(await bad.waitClosed()).toBe(true);
    const line = logs.slice(before).find((l) => l.includes("unknown export"));
    expect(line).toContain(String.raw`"a\nerror: forged"`);
    expect(line).not.toContain("\n");
  });

  test("oversized option data gets ERR_TOO_BIG and is skipped", async () => {
    const c = await connect();
    await c.greet();
    c.write(optionRequest(0x99, new Uint8Array(200_000)));
    expect((await c.optionReply()).type).toBe(NBD_REP.ERR_TOO_BIG);
    c.write(optionRequest(NBD_OPT.ABORT, new Uint8Array(0)));
    expect((await c.optionReply()).type).toBe(NBD_REP.ACK);
    expect(await c.waitClosed()).toBe(true);
  });

  test("EXPORT_NAME: known name enters transmission, unknown name closes", async () => {
    const c = await connect();
    await c.greet();
    c.write(optionRequest(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("r0")));
    const reply = await c.readExactly(10); // NO_ZEROES negotiated: no 124-byte padding
    expect(Number(viewOf(reply).getBigUint64(0))).toBe(SIZE);
    c.send({ command: NBD_CMD.FLUSH });
    expect((await c.reply()).error).toBe(0);

    const bad = await connect();
    await bad.greet();
    bad.write(optionRequest(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("other")));
    expect(await bad.waitClosed()).toBe(true);
  });

  test("client flags with unknown bits close the connection", async () => {
    const c = await connect();
    c.write(new Uint8Array([0, 0, 0, 0xff]));
    expect(await c.waitClosed()).toBe(true);
  });

  test("connections() counts live connections", async () => {
    expect(server.connections()).toBeGreaterThan(0);
  });
});

describe("server lifecycle", () => {
  const backend = new MemoryBackend({ size_bytes: MiB });

  test("stop() removes the socket; a stale socket is replaced, a live one or a non-socket is refused", async () => {
    const sock = join(dir, "life.sock");
    const first = await NbdServer.start({ listen: { unix: sock }, export_name: "r1", backend, log });
    await expect(NbdServer.start({ listen: { unix: sock }, export_name: "r1", backend, log })).rejects.toThrow("in use by a running server");
    await first.stop();
    expect(existsSync(sock)).toBe(false);

    // A stale socket file: its listener was SIGKILLed, so nothing unlinked it.
    const holder = Bun.spawn([process.execPath, "-e", `Bun.listen({ unix: ${JSON.stringify(sock)}, socket: { data() {} } }); console.log("ready");`],
      { stdout: "pipe", stderr: "inherit" });
    const reader = holder.stdout.getReader();
    await reader.read();
    holder.kill("SIGKILL");
    await holder.exited;
    expect(statSync(sock).isSocket()).toBe(true);
    const second = await NbdServer.start({ listen: { unix: sock }, export_name: "r1", backend, log });
    const c = await RawNbdClient.connect({ unix: sock });
    await c.handshake({ export_name: "r1" });
    c.close();
    await second.stop();

    const plain = join(dir, "not-a-socket");
    writeFileSync(plain, "x");
    await expect(NbdServer.start({ listen: { unix: plain }, export_name: "r1", backend, log })).rejects.toThrow("exists and is not a socket");
    expect(existsSync(plain)).toBe(true);
  });

  test("TCP listener on 127.0.0.1 with an ephemeral port", async () => {
    const server = await NbdServer.start({ listen: { hostname: "127.0.0.1", port: 0 }, export_name: "r1", backend, log });
    try {
      expect(server.address).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/r1$/);
      const port = Number(/:(\d+)\//.exec(server.address)![1]);
      const c = await RawNbdClient.connect({ hostname: "127.0.0.1", port });
      await c.handshake({ export_name: "r1" });
      c.send({ command: NBD_CMD.READ, offset: 0, length: 4096 });
      expect((await c.reply()).data?.byteLength).toBe(4096);
      c.close();
      if (!no.nbdinfo) expect((await ok(["nbdinfo", "--size", server.address])).trim()).toBe(String(MiB));
    } finally {
      await server.stop();
    }
  });

  test("read-only export: flag set, writes are EPERM, reads work", async () => {
    const sock = join(dir, "ro.sock");
    const server = await NbdServer.start({ listen: { unix: sock }, export_name: "r1", backend, log, read_only: true });
    try {
      const c = await RawNbdClient.connect({ unix: sock });
      const { flags } = await c.handshake({ export_name: "r1" });
      expect(flags & NBD_FLAG.READ_ONLY).toBe(NBD_FLAG.READ_ONLY);
      expect(flags & (NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.SEND_FUA)).toBe(0);
      c.send({ command: NBD_CMD.WRITE, offset: 0 }, new Uint8Array(512));
      expect((await c.reply()).error).toBe(NBD_ERR.EPERM);
      c.send({ command: NBD_CMD.TRIM, offset: 0, length: 512 });
      expect((await c.reply()).error).toBe(NBD_ERR.EPERM);
      c.send({ command: NBD_CMD.READ, offset: 0, length: 512 });
      expect((await c.reply()).error).toBe(0);
      c.close();
    } finally {
      await server.stop();
    }
  });

  test("max_connections: extra connections are refused, existing ones keep working", async () => {
    const sock = join(dir, "max.sock");
    const server = await NbdServer.start({ listen: { unix: sock }, export_name: "r1", backend, log, max_connections: 2 });
    try {
      const a = await RawNbdClient.connect({ unix: sock });
      const b = await RawNbdClient.connect({ unix: sock });
      await a.handshake({ export_name: "r1" });
      await b.handshake({ export_name: "r1" });
      expect(server.connections()).toBe(2);
      const extra = await RawNbdClient.connect({ unix: sock });
      expect(await extra.waitClosed()).toBe(true);
      a.send({ command: NBD_CMD.FLUSH });
      expect((await a.reply()).error).toBe(0);
      a.close();
      b.close();
    } finally {
      await server.stop();
    }
  });
});
