// The kernel nbd frontend (src/gate/kernel-nbd.ts, nbd-adopt.ts, device.ts). What runs anywhere:
// a MemoryBackend served in NBD transmission phase over a real socketpair from native/ggate.c,
// driven by the raw client exactly as the kernel would (no handshake, simple replies); the
// attach failing clearly without the nbd module; the fallback to nbdfuse + loop; stale cleanup.
// Nothing here attaches a real /dev/nbdN: this machine's kernel has no nbd module.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDevice, kernelNbdPresent, type DeviceOptions } from "../../../src/gate/device.ts";
import { cleanupKernelNbd, createKernelNbd, nbdIndexOf } from "../../../src/gate/kernel-nbd.ts";
import { MemoryBackend } from "../../../src/gate/memory-backend.ts";
import { adoptTransmission, type AdoptedConnection } from "../../../src/gate/nbd-adopt.ts";
import { NbdServer } from "../../../src/gate/nbd-server.ts";
import { nbdfuseMissing } from "../../../src/gate/nbdfuse-loop.ts";
import { RawNbdClient } from "../../../src/io/nbd-client.ts";
import { NativeError, native } from "../../../src/native.ts";
import { NBD_CMD, NBD_CMD_FLAG, NBD_FLAG, NBD_SIMPLE_REPLY_MAGIC, viewOf } from "../../../src/wire/nbd.ts";

const SIZE_BYTES = 1 << 20;
const NBD_EINVAL = 22;

const dir = mkdtempSync(join(tmpdir(), "hast-kernel-nbd-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

/** A backend served on one end of a socketpair, the raw client on the other: the kernel's view. */
async function servedPair(): Promise<{ backend: MemoryBackend; served: AdoptedConnection; client: RawNbdClient }> {
  const backend = new MemoryBackend({ size_bytes: SIZE_BYTES });
  const [client_fd, server_fd] = native.socketpair();
  const served = await adoptTransmission(server_fd, { export_name: "r0", backend, log: () => {} });
  const client = await RawNbdClient.connect({ fd: client_fd });
  cleanups.push(() => served.stop(), () => client.close());
  return { backend, served, client };
}

/** Sends one request and reads the reply's bytes as they are, so the reply kind can be checked. */
async function rawReply(client: RawNbdClient, request: Parameters<RawNbdClient["send"]>[0], payload?: Uint8Array,
  data_bytes = 0): Promise<{ magic: number; error: number; cookie: bigint; data: Uint8Array }> {
  const cookie = client.send(request, payload);
  const header = viewOf(await client.readExactly(16));
  const error = header.getUint32(4);
  const data = error === 0 && data_bytes > 0 ? await client.readExactly(data_bytes) : new Uint8Array(0);
  expect(header.getBigUint64(8)).toBe(cookie);
  return { magic: header.getUint32(0), error, cookie, data };
}

describe("serving a socket in transmission phase (what the kernel is given)", () => {
  test("no greeting: the first bytes are the simple reply to the first request", async () => {
    const { client } = await servedPair();
    const reply = await rawReply(client, { command: NBD_CMD.FLUSH });
    expect(reply.magic).toBe(NBD_SIMPLE_REPLY_MAGIC);
    expect(reply.error).toBe(0);
  });

  test("write, read, flush, trim round trips with simple replies only", async () => {
    const { backend, client } = await servedPair();
    const data = pattern(8192, 7);
    const write = await rawReply(client, { command: NBD_CMD.WRITE, offset: 4096 }, data);
    expect([write.magic, write.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    expect(backend.bytes.subarray(4096, 4096 + 8192)).toEqual(data);

    const read = await rawReply(client, { command: NBD_CMD.READ, offset: 4096, length: 8192 }, undefined, 8192);
    expect([read.magic, read.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    expect(read.data).toEqual(data);

    const fua = await rawReply(client, { command: NBD_CMD.WRITE, offset: 0, flags: NBD_CMD_FLAG.FUA }, pattern(512, 1));
    expect([fua.magic, fua.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    expect(backend.counts.fua_writes).toBe(1);

    const flush = await rawReply(client, { command: NBD_CMD.FLUSH });
    expect([flush.magic, flush.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    expect(backend.counts.flush).toBe(1);

    const trim = await rawReply(client, { command: NBD_CMD.TRIM, offset: 4096, length: 4096 });
    expect([trim.magic, trim.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, 0]);
    expect(backend.counts.trim).toBe(1);
    const after = await rawReply(client, { command: NBD_CMD.READ, offset: 4096, length: 8192 }, undefined, 8192);
    expect(after.data.subarray(0, 4096)).toEqual(new Uint8Array(4096));
    expect(after.data.subarray(4096)).toEqual(data.subarray(4096));
  });

  test("pipelined requests are all answered, each by cookie", async () => {
    const { client } = await servedPair();
    const cookies = new Set<bigint>();
    for (let i = 0; i < 16; i++) cookies.add(client.send({ command: NBD_CMD.WRITE, offset: i * 4096 }, pattern(4096, i)));
    for (let i = 0; i < 16; i++) {
      const reply = await client.reply();
      expect(reply.error).toBe(0);
      expect(cookies.delete(reply.cookie)).toBe(true);
    }
    for (let i = 0; i < 16; i++) {
      expect((await rawReply(client, { command: NBD_CMD.READ, offset: i * 4096, length: 4096 }, undefined, 4096)).data)
        .toEqual(pattern(4096, i));
    }
  });

  test("an out-of-range read gets a simple EINVAL reply and the connection keeps serving", async () => {
    const { client } = await servedPair();
    const bad = await rawReply(client, { command: NBD_CMD.READ, offset: SIZE_BYTES, length: 512 });
    expect([bad.magic, bad.error]).toEqual([NBD_SIMPLE_REPLY_MAGIC, NBD_EINVAL]);
    const good = await rawReply(client, { command: NBD_CMD.FLUSH });
    expect(good.error).toBe(0);
  });

  test("the flags for the kernel are those of a writable export with flush, FUA and trim", async () => {
    const { served } = await servedPair();
    const wanted = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.SEND_FUA | NBD_FLAG.SEND_TRIM;
    expect(served.transmission_flags & wanted).toBe(wanted);
    expect(served.transmission_flags & NBD_FLAG.READ_ONLY).toBe(0);
  });

  test("NBD_CMD_DISC closes the connection; stop() closes it from our side", async () => {
    const first = await servedPair();
    first.client.send({ command: NBD_CMD.DISC });
    const closed = await Promise.race([first.served.closed.then(() => true), Bun.sleep(5_000).then(() => false)]);
    expect(closed).toBe(true);

    const second = await servedPair();
    await second.served.stop();
    expect(await second.client.waitClosed()).toBe(true);
  });
});

function deviceOptions(backend: MemoryBackend, log: string[], extra: Partial<DeviceOptions> = {}): DeviceOptions {
  const devdir = join(dir, `dev-${Math.random().toString(36).slice(2)}`);
  return {
    provname: "r0", uri: "nbd+unix:///r0?socket=/nonexistent", size_bytes: backend.size_bytes, sector_bytes: 512,
    rundir: dir, devdir, log: (m) => log.push(m), backend, ...extra,
  };
}

const nbdPresent = kernelNbdPresent();
if (nbdPresent) console.log("skip: the nbd module is loaded here, so the no-module tests do not apply");

describe("attaching without the nbd module", () => {
  test.skipIf(nbdPresent)("createKernelNbd fails with ENODEV naming what is missing, and leaves no link", async () => {
    const backend = new MemoryBackend({ size_bytes: SIZE_BYTES });
    const log: string[] = [];
    const opts = deviceOptions(backend, log);
    let error: unknown;
    try {
      await createKernelNbd(opts);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(NativeError);
    const err = error as NativeError;
    expect(err.code).toBe("ENODEV");
    expect(err.op).toBe("nbd-attach");
    expect(err.message).toMatch(/^nbd-attach socket fd \d+: no kernel nbd: neither the generic netlink family "nbd" nor \/dev\/nbd0 exists \(load it: modprobe nbd\) \(ENODEV\)$/);
    expect(existsSync(join(opts.devdir, "r0"))).toBe(false);
  });

  test("a block size the kernel cannot take is refused before anything is attached", async () => {
    const backend = new MemoryBackend({ size_bytes: SIZE_BYTES, block_bytes: 8192 });
    await expect(createKernelNbd(deviceOptions(backend, []))).rejects.toThrow("block size 8192 is outside 512..4096");
  });
});

describe("createDevice on Linux picks nbdfuse + loop when kernel nbd is absent or fails", () => {
  const missing = process.platform !== "linux" ? `not Linux (${process.platform})` : nbdfuseMissing();
  if (missing) console.log(`skip: nbdfuse + loop device tests: ${missing}`);

  async function withServer(run: (backend: MemoryBackend, uri: string) => Promise<void>): Promise<void> {
    const backend = new MemoryBackend({ size_bytes: SIZE_BYTES });
    const server = await NbdServer.start({ listen: { unix: join(dir, `r0-${Math.random().toString(36).slice(2)}.nbd`) }, export_name: "r0", backend, log: () => {} });
    try {
      await run(backend, server.address);
    } finally {
      await server.stop();
    }
  }

  async function expectNbdfuseLoop(opts: DeviceOptions): Promise<void> {
    const device = await createDevice(opts);
    try {
      expect(device.mechanism).toStartWith("nbdfuse+loop (/dev/loop");
      expect(readlinkSync(device.path)).toMatch(/^\/dev\/loop\d+$/);
    } finally {
      await device.destroy();
    }
    expect(existsSync(device.path)).toBe(false);
  }

  test.skipIf(missing !== null || nbdPresent)("module absent: straight to nbdfuse + loop, no kernel nbd attempt", async () => {
    await withServer(async (backend, uri) => {
      const log: string[] = [];
      await expectNbdfuseLoop(deviceOptions(backend, log, { uri }));
      expect(log.filter((m) => m.includes("ernel nbd"))).toEqual([]);
    });
  }, 30_000);

  test.skipIf(missing !== null || nbdPresent)("kernel nbd tried and failing: the reason is logged, then nbdfuse + loop", async () => {
    await withServer(async (backend, uri) => {
      const log: string[] = [];
      await expectNbdfuseLoop(deviceOptions(backend, log, { uri, kernel_nbd: true }));
      expect(log).toHaveLength(1);
      expect(log[0]).toMatch(/^Kernel nbd for r0 unavailable: nbd-attach socket fd \d+: no kernel nbd: .* \(ENODEV\); using nbdfuse \+ loop\.$/);
    });
  }, 30_000);
});

describe("stale cleanup", () => {
  test("nbdIndexOf recognises /dev/nbdN only", () => {
    expect(nbdIndexOf("/dev/nbd0")).toBe(0);
    expect(nbdIndexOf("/dev/nbd15")).toBe(15);
    expect(nbdIndexOf("/dev/nbd1p1")).toBeNull();
    expect(nbdIndexOf("/dev/loop0")).toBeNull();
  });

  test("a link to /dev/nbdN is removed; a device the kernel does not name ours is left attached", () => {
    const devdir = join(dir, "stale-nbd");
    mkdirSync(devdir, { recursive: true });
    // nbd99 has no /sys/block/nbd99/backend here (and on any normal machine): not provably ours.
    symlinkSync("/dev/nbd99", join(devdir, "r0"));
    const log: string[] = [];
    expect(cleanupKernelNbd({ provname: "r0", devdir, log: (m) => log.push(m) })).toEqual([`${devdir}/r0 -> /dev/nbd99`]);
    expect(isLink(join(devdir, "r0"))).toBe(false);
    expect(log).toEqual([]);
  });

  test("a link to anything else is not ours to remove here (nbdfuse + loop cleans its own)", () => {
    const devdir = join(dir, "stale-loop");
    mkdirSync(devdir, { recursive: true });
    symlinkSync("/dev/loop7", join(devdir, "r0"));
    expect(cleanupKernelNbd({ provname: "r0", devdir, log: () => {} })).toEqual([]);
    expect(readlinkSync(join(devdir, "r0"))).toBe("/dev/loop7");
    expect(cleanupKernelNbd({ provname: "absent", devdir, log: () => {} })).toEqual([]);
  });
});

function isLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
