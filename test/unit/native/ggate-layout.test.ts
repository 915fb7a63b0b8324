// GEOM Gate structures and ioctl numbers as native/ggate.c compiles them, checked against the
// numbers of platform.md 4.1 (ioctls) and 4.2 (LP64 layouts). The C file also asserts them with
// _Static_assert; this test catches a table and an assert that drift together, on any host.
import { describe, expect, test } from "bun:test";
import { BIO, readGgateRequest, serveGgateRequest, SLOT_DATA_BYTES } from "../../../src/gate/ggate.ts";
import { MemoryBackend } from "../../../src/gate/memory-backend.ts";
import { native, NativeError } from "../../../src/native.ts";

const layout = native.ggateLayout();

/** platform.md 4.2: every field offset of every structure, and the structure sizes. */
const STRUCTS: Record<string, { size: number; fields: Record<string, number> }> = {
  create: {
    size: 2608,
    fields: {
      gctl_version: 0, gctl_mediasize: 8, gctl_sectorsize: 16, gctl_flags: 20, gctl_maxcount: 24,
      gctl_timeout: 28, gctl_name: 32, gctl_info: 287, gctl_readprov: 2335, gctl_readoffset: 2592, gctl_unit: 2600,
    },
  },
  modify: {
    size: 2336,
    fields: {
      gctl_version: 0, gctl_unit: 4, gctl_modify: 8, gctl_mediasize: 16, gctl_info: 24, gctl_readprov: 2072,
      gctl_readoffset: 2328,
    },
  },
  destroy: { size: 268, fields: { gctl_version: 0, gctl_unit: 4, gctl_force: 8, gctl_name: 12 } },
  cancel: { size: 272, fields: { gctl_version: 0, gctl_unit: 4, gctl_seq: 8, gctl_name: 16 } },
  io: {
    size: 56,
    fields: {
      gctl_version: 0, gctl_unit: 4, gctl_seq: 8, gctl_cmd: 16, gctl_offset: 24, gctl_length: 32, gctl_data: 40,
      gctl_error: 48,
    },
  },
};

/** platform.md 4.1: _IOWR('m', n, struct), LP64. */
const IOCTLS: Record<string, number> = {
  create: 0xca306d00, modify: 0xc9206d01, destroy: 0xc10c6d02, cancel: 0xc1106d03, start: 0xc0386d04, done: 0xc0386d05,
};

/** FreeBSD <sys/ioccom.h> _IOWR, computed here independently of the C macro. */
function iowr(group: string, n: number, size_bytes: number): number {
  return (0xc0000000 | ((size_bytes & 0x1fff) << 16) | (group.charCodeAt(0) << 8) | n) >>> 0;
}

describe("GEOM Gate layout (platform.md 4.2)", () => {
  for (const [name, spec] of Object.entries(STRUCTS)) {
    test(`g_gate_ctl_${name}: ${spec.size} bytes, every field at its offset`, () => {
      expect(layout.get(`${name}.size`)).toBe(spec.size);
      const compiled: Record<string, number | undefined> = {};
      for (const field of Object.keys(spec.fields)) compiled[field] = layout.get(`${name}.${field}`);
      expect(compiled).toEqual(spec.fields);
    });
  }

  test("the layout lists no field the spec does not know", () => {
    const known = new Set<string>();
    for (const [name, spec] of Object.entries(STRUCTS)) {
      known.add(`${name}.size`);
      for (const field of Object.keys(spec.fields)) known.add(`${name}.${field}`);
    }
    const unknown = [...layout.keys()].filter((k) => !k.startsWith("ioctl.") && !k.startsWith("const.") && !known.has(k));
    expect(unknown).toEqual([]);
  });
});

describe("GEOM Gate ioctl numbers (platform.md 4.1)", () => {
  const order = ["create", "modify", "destroy", "cancel", "start", "done"];
  for (const [cmd, value] of Object.entries(IOCTLS)) {
    test(`G_GATE_CMD_${cmd.toUpperCase()} = 0x${value.toString(16)}`, () => {
      expect(layout.get(`ioctl.${cmd}`)).toBe(value);
      const struct = cmd === "start" || cmd === "done" ? "io" : cmd;
      expect(iowr("m", order.indexOf(cmd), STRUCTS[struct]!.size)).toBe(value);
    });
  }

  test("G_GATE_VERSION 3, NAME_MAX 255, G_GATE_INFOSIZE 2048", () => {
    expect([layout.get("const.version"), layout.get("const.name_bytes"), layout.get("const.info_bytes")]).toEqual([3, 255, 2048]);
  });
});

describe.skipIf(process.platform === "freebsd")("GEOM Gate entry points off FreeBSD", () => {
  const io = new Uint8Array(56);
  const data = new Uint8Array(4096);
  const cases: [string, () => unknown, string][] = [
    ["ggateCreate", () => native.ggateCreate(-1, "hast/shared", 1 << 20, 512, 0), "ggate-create /dev/hast/shared"],
    ["ggateStart", () => native.ggateStart(-1, 0, io, data), "ggate-start ggate unit 0"],
    ["ggateDone", () => native.ggateDone(-1, 0, io, 0, data), "ggate-done ggate unit 0"],
    ["ggateCancel", () => native.ggateCancel(-1, "hast/shared"), "ggate-cancel /dev/hast/shared"],
    ["ggateDestroy", () => native.ggateDestroy(-1, 0, true), "ggate-destroy ggate unit 0"],
  ];
  for (const [name, call, prefix] of cases) {
    test(`${name} refuses with ENOTSUP and says why`, () => {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NativeError);
      expect((err as NativeError).code).toBe("ENOTSUP");
      expect((err as NativeError).message).toBe(`${prefix}: Operation not supported (ENOTSUP, GEOM Gate exists only on FreeBSD)`);
    });
  }
});

// The part of the FreeBSD frontend (src/gate/ggate.ts) that runs without a kernel: reading what
// START left in a g_gate_ctl_io, and serving it on a BlockBackend.
describe("GEOM Gate request dispatch", () => {
  const SECTOR = 512;

  /** A g_gate_ctl_io as the kernel fills it on START, at the platform.md 4.2 offsets. */
  function startedIo(seq: bigint, cmd: number, offset: number, length: number): Uint8Array {
    const io = new Uint8Array(64);
    const view = new DataView(io.buffer);
    view.setUint32(0, 3, true);
    view.setBigUint64(8, seq, true);
    view.setUint32(16, cmd, true);
    view.setBigInt64(24, BigInt(offset), true);
    view.setBigInt64(32, BigInt(length), true);
    return io;
  }

  test("readGgateRequest reads seq, cmd, offset and length at the spec offsets", () => {
    expect(readGgateRequest(startedIo(0x1122334455667788n, BIO.WRITE, 1 << 40, 65536)))
      .toEqual({ seq: 0x1122334455667788n, cmd: BIO.WRITE, offset: 1 << 40, length: 65536 });
  });

  test("WRITE then READ go through the backend at the request's offset", async () => {
    const backend = new MemoryBackend({ size_bytes: 64 * SECTOR });
    const data = new Uint8Array(SLOT_DATA_BYTES);
    data.fill(0xab, 0, 2 * SECTOR);
    expect(await serveGgateRequest(backend, readGgateRequest(startedIo(1n, BIO.WRITE, 4 * SECTOR, 2 * SECTOR)), data)).toBeNull();
    expect(backend.bytes.subarray(4 * SECTOR, 6 * SECTOR).every((b) => b === 0xab)).toBe(true);
    expect(backend.bytes[6 * SECTOR]).toBe(0);
    const back = new Uint8Array(SLOT_DATA_BYTES);
    expect(await serveGgateRequest(backend, readGgateRequest(startedIo(2n, BIO.READ, 3 * SECTOR, 2 * SECTOR)), back)).toBeNull();
    expect([back[0], back[SECTOR], back[2 * SECTOR]]).toEqual([0, 0xab, 0]);
  });

  test("DELETE trims, FLUSH flushes, SPEEDUP is answered without touching the backend", async () => {
    const backend = new MemoryBackend({ size_bytes: 64 * SECTOR });
    const data = new Uint8Array(SECTOR);
    expect(await serveGgateRequest(backend, { seq: 1n, cmd: BIO.DELETE, offset: 0, length: 8 * SECTOR }, data)).toBeNull();
    expect(await serveGgateRequest(backend, { seq: 2n, cmd: BIO.FLUSH, offset: 0, length: 0 }, data)).toBeNull();
    expect(await serveGgateRequest(backend, { seq: 3n, cmd: BIO.SPEEDUP, offset: 0, length: 0 }, data)).toBeNull();
    expect([backend.counts.trim, backend.counts.flush, backend.counts.read, backend.counts.write]).toEqual([1, 1, 0, 0]);
  });

  test("errors: the backend's errno, EOPNOTSUPP for other bios, EINVAL out of range, EIO for a READ larger than the slot", async () => {
    const backend = new MemoryBackend({ size_bytes: 64 * SECTOR });
    const data = new Uint8Array(2 * SECTOR);
    backend.failNext("write", "ENOSPC");
    expect(await serveGgateRequest(backend, { seq: 1n, cmd: BIO.WRITE, offset: 0, length: SECTOR }, data)).toBe("ENOSPC");
    expect(await serveGgateRequest(backend, { seq: 2n, cmd: BIO.GETATTR, offset: 0, length: 0 }, data)).toBe("EOPNOTSUPP");
    expect(await serveGgateRequest(backend, { seq: 3n, cmd: BIO.READ, offset: 63 * SECTOR, length: 2 * SECTOR }, data)).toBe("EINVAL");
    expect(await serveGgateRequest(backend, { seq: 4n, cmd: BIO.READ, offset: 100, length: SECTOR }, data)).toBe("EINVAL");
    expect(await serveGgateRequest(backend, { seq: 5n, cmd: BIO.READ, offset: 0, length: 4 * SECTOR }, data)).toBe("EIO");
    expect(backend.counts.read).toBe(0);
  });
});
