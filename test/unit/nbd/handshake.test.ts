import { describe, expect, test } from "bun:test";
import { NBD_INFO, NBD_OPT, NBD_REP, viewOf } from "../../../src/wire/nbd.ts";
import {
  decodeOption, encodeExportNameReply, encodeGreeting, encodeInfoBlockSize, encodeInfoDescription,
  encodeInfoExport, encodeInfoName, encodeOptionError, encodeOptionReply, encodeServerEntry,
  parseClientFlags, parseOptionHeader,
} from "../../../src/wire/nbd-handshake.ts";

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

function optionHeader(option: number, data_bytes: number, magic = 0x49484156454f5054n): Uint8Array {
  const out = new Uint8Array(16);
  const view = viewOf(out);
  view.setBigUint64(0, magic);
  view.setUint32(8, option);
  view.setUint32(12, data_bytes);
  return out;
}

function infoData(name: string, types: number[]): Uint8Array {
  const name_utf8 = new TextEncoder().encode(name);
  const out = new Uint8Array(4 + name_utf8.byteLength + 2 + 2 * types.length);
  const view = viewOf(out);
  view.setUint32(0, name_utf8.byteLength);
  out.set(name_utf8, 4);
  view.setUint16(4 + name_utf8.byteLength, types.length);
  types.forEach((t, i) => view.setUint16(6 + name_utf8.byteLength + 2 * i, t));
  return out;
}

describe("greeting and client flags", () => {
  test("greeting is NBDMAGIC, IHAVEOPT, flags 0x0003", () => {
    expect(hex(encodeGreeting())).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
  });

  test("client flags: fixed newstyle + no zeroes", () => {
    expect(parseClientFlags(new Uint8Array([0, 0, 0, 3]))).toEqual({ kind: "ok", value: { fixed_newstyle: true, no_zeroes: true }, bytes: 4 });
    expect(parseClientFlags(new Uint8Array([0, 0, 0, 1]))).toEqual({ kind: "ok", value: { fixed_newstyle: true, no_zeroes: false }, bytes: 4 });
  });

  test("client flags: partial buffer asks for 4 bytes", () => {
    expect(parseClientFlags(new Uint8Array([0, 0]))).toEqual({ kind: "need", bytes: 4 });
  });

  test("client flags: bits not offered are an error", () => {
    const parsed = parseClientFlags(new Uint8Array([0, 0, 0, 7]));
    expect(parsed.kind).toBe("error");
    if (parsed.kind === "error") expect(parsed.reason).toContain("0x00000007");
  });
});

describe("option header", () => {
  test("parses option number and data length", () => {
    expect(parseOptionHeader(optionHeader(NBD_OPT.GO, 42))).toEqual({ kind: "ok", value: { option: 7, data_bytes: 42 }, bytes: 16 });
  });

  test("every shorter prefix needs 16 bytes", () => {
    const full = optionHeader(NBD_OPT.LIST, 0);
    for (let n = 0; n < 16; n++) expect(parseOptionHeader(full.subarray(0, n))).toEqual({ kind: "need", bytes: 16 });
  });

  test("bad magic is an error naming the magic", () => {
    const parsed = parseOptionHeader(optionHeader(NBD_OPT.GO, 0, 0x1122334455667788n));
    expect(parsed).toEqual({ kind: "error", reason: "bad option magic 0x1122334455667788" });
  });

  test("works on a view at a non-zero offset", () => {
    const big = new Uint8Array(40);
    big.set(optionHeader(NBD_OPT.INFO, 9), 7);
    expect(parseOptionHeader(big.subarray(7))).toMatchObject({ kind: "ok", value: { option: 6, data_bytes: 9 } });
  });
});

describe("decodeOption", () => {
  test("EXPORT_NAME: whole data is the name, empty = default", () => {
    expect(decodeOption(NBD_OPT.EXPORT_NAME, new TextEncoder().encode("r0"))).toEqual({ kind: "export_name", name: "r0" });
    expect(decodeOption(NBD_OPT.EXPORT_NAME, new Uint8Array(0))).toEqual({ kind: "export_name", name: "" });
  });

  test("EXPORT_NAME: invalid UTF-8, NUL and over-long names are invalid", () => {
    expect(decodeOption(NBD_OPT.EXPORT_NAME, new Uint8Array([0xff, 0xfe]))).toMatchObject({ kind: "invalid", reason: "EXPORT_NAME: export name is not valid UTF-8" });
    expect(decodeOption(NBD_OPT.EXPORT_NAME, new Uint8Array([0x61, 0]))).toMatchObject({ kind: "invalid" });
    expect(decodeOption(NBD_OPT.EXPORT_NAME, new Uint8Array(4097).fill(0x61))).toMatchObject({ kind: "invalid" });
  });

  test("GO and INFO: name and info requests", () => {
    expect(decodeOption(NBD_OPT.GO, infoData("r0", [3, 1, 2]))).toEqual({ kind: "go", name: "r0", info_types: [3, 1, 2] });
    expect(decodeOption(NBD_OPT.INFO, infoData("", []))).toEqual({ kind: "info", name: "", info_types: [] });
  });

  test("GO: short data, name overrun and count mismatch are invalid", () => {
    expect(decodeOption(NBD_OPT.GO, new Uint8Array(5))).toMatchObject({ kind: "invalid", option: 7 });
    const overrun = infoData("abc", []);
    viewOf(overrun).setUint32(0, 100);
    expect(decodeOption(NBD_OPT.GO, overrun)).toMatchObject({ kind: "invalid", reason: "GO: name length 100 exceeds the data" });
    const extra = new Uint8Array([...infoData("a", [1]), 0]);
    expect(decodeOption(NBD_OPT.GO, extra)).toMatchObject({ kind: "invalid" });
    const short = infoData("a", [1, 2]).subarray(0, 10);
    expect(decodeOption(NBD_OPT.INFO, short)).toMatchObject({ kind: "invalid" });
  });

  test("LIST and STRUCTURED_REPLY take no data", () => {
    expect(decodeOption(NBD_OPT.LIST, new Uint8Array(0))).toEqual({ kind: "list" });
    expect(decodeOption(NBD_OPT.LIST, new Uint8Array(1))).toMatchObject({ kind: "invalid" });
    expect(decodeOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(0))).toEqual({ kind: "structured_reply" });
    expect(decodeOption(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(3))).toMatchObject({ kind: "invalid" });
  });

  test("ABORT ignores data", () => {
    expect(decodeOption(NBD_OPT.ABORT, new Uint8Array(5))).toEqual({ kind: "abort" });
  });

  test("unknown and unimplemented options are unsupported", () => {
    for (const option of [0, NBD_OPT.PEEK_EXPORT, NBD_OPT.STARTTLS, NBD_OPT.LIST_META_CONTEXT, NBD_OPT.SET_META_CONTEXT, NBD_OPT.EXTENDED_HEADERS, 0xdead]) {
      expect(decodeOption(option, new Uint8Array(0))).toEqual({ kind: "unsupported", option });
    }
  });
});

describe("option replies", () => {
  test("ACK header layout", () => {
    expect(hex(encodeOptionReply(NBD_OPT.GO, NBD_REP.ACK))).toBe("0003e889045565a9" + "00000007" + "00000001" + "00000000");
  });

  test("error reply carries the message", () => {
    const reply = encodeOptionError(NBD_OPT.LIST, NBD_REP.ERR_UNSUP, "no");
    expect(hex(reply)).toBe("0003e889045565a9" + "00000003" + "80000001" + "00000002" + "6e6f");
    expect(() => encodeOptionError(1, NBD_REP.ACK, "x")).toThrow("not an error");
  });

  test("NBD_INFO_EXPORT: type 0, u64 size, u16 flags", () => {
    expect(hex(encodeInfoExport(2 ** 40 + 5, 0x056d))).toBe("0000" + "0000010000000005" + "056d");
    expect(() => encodeInfoExport(-1, 0)).toThrow();
  });

  test("NBD_INFO_NAME and DESCRIPTION", () => {
    expect(hex(encodeInfoName("r0"))).toBe("0001" + "7230");
    expect(hex(encodeInfoDescription("d"))).toBe("0002" + "64");
  });

  test("NBD_INFO_BLOCK_SIZE: min, preferred, max payload", () => {
    const info = encodeInfoBlockSize({ minimum_bytes: 512, preferred_bytes: 4096, maximum_payload_bytes: 32 * 1024 * 1024 });
    expect(hex(info)).toBe("0003" + "00000200" + "00001000" + "02000000");
    expect(NBD_INFO.BLOCK_SIZE).toBe(3);
  });

  test("NBD_INFO_BLOCK_SIZE rejects sizes the spec forbids", () => {
    expect(() => encodeInfoBlockSize({ minimum_bytes: 3, preferred_bytes: 4096, maximum_payload_bytes: 4096 })).toThrow();
    expect(() => encodeInfoBlockSize({ minimum_bytes: 131072, preferred_bytes: 131072, maximum_payload_bytes: 131072 })).toThrow();
    expect(() => encodeInfoBlockSize({ minimum_bytes: 512, preferred_bytes: 256, maximum_payload_bytes: 4096 })).toThrow();
    expect(() => encodeInfoBlockSize({ minimum_bytes: 512, preferred_bytes: 4096, maximum_payload_bytes: 1024 })).toThrow();
  });

  test("NBD_REP_SERVER entry: u32 name length, name, description", () => {
    expect(hex(encodeServerEntry("r0", "x"))).toBe("00000002" + "7230" + "78");
    expect(hex(encodeServerEntry("r0"))).toBe("00000002" + "7230");
  });

  test("EXPORT_NAME reply: 134 bytes with zeroes, 10 without", () => {
    const padded = encodeExportNameReply(1 << 20, 0x016d, false);
    expect(padded.byteLength).toBe(134);
    expect(hex(padded.subarray(0, 10))).toBe("0000000000100000" + "016d");
    expect(padded.subarray(10).every((b) => b === 0)).toBe(true);
    expect(encodeExportNameReply(1 << 20, 0x016d, true).byteLength).toBe(10);
  });
});
