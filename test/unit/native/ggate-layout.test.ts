// GEOM Gate structures and ioctl numbers as native/ggate.c compiles them, checked against the
// numbers of platform.md 4.1 (ioctls) and 4.2 (LP64 layouts). The C file also asserts them with
// _Static_assert; this test catches a table and an assert that drift together, on any host.
import { describe, expect, test } from "bun:test";
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
