import { describe, expect, test } from "bun:test";
import { messageBytes, NBD_CMD, NBD_CMD_FLAG, NBD_REPLY_TYPE, nbdErrorForErrnoName, viewOf } from "../../../src/wire/nbd.ts";
import {
  OFFSET_DATA_HEADER_BYTES, checkRequest, encodeErrorChunk, encodeRequestHeader, encodeSimpleReply,
  parseReplyHeader, parseRequestHeader, requestPayloadBytes, writeOffsetDataHeader, type ExportLimits,
  type NbdRequest,
} from "../../../src/wire/nbd-transmission.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const limits: ExportLimits = { size_bytes: 1 << 20, block_bytes: 512, payload_bytes_max: 1 << 25, read_only: false };

function req(command: number, offset = 0, length = 512, flags = 0): NbdRequest {
  return { command, offset, length, flags, cookie: 0x0102030405060708n };
}

describe("request header", () => {
  test("decodes a READ header byte by byte", () => {
    const bytes = Buffer.from("25609513" + "0001" + "0000" + "0102030405060708" + "0000000000001000" + "00000200", "hex");
    expect(parseRequestHeader(bytes)).toEqual({
      kind: "ok", bytes: 28, value: { flags: 1, command: 0, cookie: 0x0102030405060708n, offset: 4096, length: 512 },
    });
  });

  test("round-trips through encodeRequestHeader", () => {
    const request = req(NBD_CMD.WRITE_ZEROES, 2 ** 40, 0xffffffff, NBD_CMD_FLAG.NO_HOLE);
    expect(parseRequestHeader(encodeRequestHeader(request))).toEqual({ kind: "ok", value: request, bytes: 28 });
  });

  test("every partial prefix needs 28 bytes", () => {
    const full = encodeRequestHeader(req(NBD_CMD.READ));
    for (let n = 0; n < 28; n++) expect(parseRequestHeader(full.subarray(0, n))).toEqual({ kind: "need", bytes: 28 });
  });

  test("bad magic is an error", () => {
    const bytes = encodeRequestHeader(req(NBD_CMD.READ));
    bytes[0] = 0x12;
    expect(parseRequestHeader(bytes)).toEqual({ kind: "error", reason: "bad request magic 0x12609513" });
  });

  test("offsets above 2^53 parse as larger than any export", () => {
    const bytes = encodeRequestHeader(req(NBD_CMD.READ));
    bytes.fill(0xff, 16, 24);
    const parsed = parseRequestHeader(bytes);
    expect(parsed.kind === "ok" && parsed.value.offset > Number.MAX_SAFE_INTEGER).toBe(true);
  });

  test("only WRITE carries a payload", () => {
    expect(requestPayloadBytes(req(NBD_CMD.WRITE, 0, 4096))).toBe(4096);
    expect(requestPayloadBytes(req(NBD_CMD.READ, 0, 4096))).toBe(0);
    expect(requestPayloadBytes(req(NBD_CMD.WRITE_ZEROES, 0, 4096))).toBe(0);
  });
});

describe("checkRequest", () => {
  const errorOf = (r: NbdRequest, l: ExportLimits = limits) => {
    const check = checkRequest(r, l);
    return check.kind === "reject" ? `${check.error}${check.close ? "+close" : ""}` : check.kind;
  };

  test("valid requests pass", () => {
    expect(errorOf(req(NBD_CMD.READ, 0, 512))).toBe("ok");
    expect(errorOf(req(NBD_CMD.WRITE, (1 << 20) - 512, 512, NBD_CMD_FLAG.FUA))).toBe("ok");
    expect(errorOf(req(NBD_CMD.FLUSH, 0, 0))).toBe("ok");
    expect(errorOf(req(NBD_CMD.FLUSH, 0, 0, NBD_CMD_FLAG.FUA))).toBe("ok");
    expect(errorOf(req(NBD_CMD.TRIM, 0, 1 << 20))).toBe("ok");
    expect(errorOf(req(NBD_CMD.CACHE, 0, 4096))).toBe("ok");
    expect(errorOf(req(NBD_CMD.WRITE_ZEROES, 0, 4096, NBD_CMD_FLAG.NO_HOLE | NBD_CMD_FLAG.FAST_ZERO | NBD_CMD_FLAG.FUA))).toBe("ok");
  });

  test("DISC asks to disconnect", () => {
    expect(errorOf(req(NBD_CMD.DISC, 0, 0))).toBe("disconnect");
  });

  test("unknown commands and unsupported commands are EINVAL", () => {
    expect(errorOf(req(NBD_CMD.BLOCK_STATUS))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.RESIZE))).toBe("EINVAL");
    expect(errorOf(req(99))).toBe("EINVAL");
  });

  test("unknown or misplaced flags are EINVAL", () => {
    expect(errorOf(req(NBD_CMD.READ, 0, 512, NBD_CMD_FLAG.DF))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.WRITE, 0, 512, NBD_CMD_FLAG.NO_HOLE))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.READ, 0, 512, 0x8000))).toBe("EINVAL");
  });

  test("beyond the end: READ/TRIM/CACHE EINVAL, WRITE/WRITE_ZEROES ENOSPC", () => {
    const end = 1 << 20;
    expect(errorOf(req(NBD_CMD.READ, end, 512))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.TRIM, end - 512, 1024))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.CACHE, end, 512))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.WRITE, end, 512))).toBe("ENOSPC");
    expect(errorOf(req(NBD_CMD.WRITE_ZEROES, 2 ** 60, 512))).toBe("ENOSPC");
  });

  test("misaligned offset or length and zero length are EINVAL", () => {
    expect(errorOf(req(NBD_CMD.READ, 1, 512))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.WRITE, 0, 100))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.READ, 0, 0))).toBe("EINVAL");
    expect(errorOf(req(NBD_CMD.FLUSH, 512, 0))).toBe("EINVAL");
  });

  test("oversized READ is EOVERFLOW; oversized WRITE is EOVERFLOW and closes", () => {
    const big = { ...limits, size_bytes: 1 << 30 };
    expect(errorOf(req(NBD_CMD.READ, 0, (1 << 25) + 512), big)).toBe("EOVERFLOW");
    expect(errorOf(req(NBD_CMD.WRITE, 0, (1 << 25) + 512), big)).toBe("EOVERFLOW+close");
    expect(errorOf(req(NBD_CMD.TRIM, 0, (1 << 25) + 512), big)).toBe("ok");
    // Whatever else is wrong, an oversized WRITE's payload cannot be skipped: always close.
    expect(errorOf(req(NBD_CMD.WRITE, 0, 0xffffffff, 0x8000), big)).toBe("EOVERFLOW+close");
    expect(errorOf(req(NBD_CMD.WRITE, 1, 0xffffffff), { ...big, read_only: true })).toBe("EOVERFLOW+close");
  });

  test("read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM", () => {
    const ro = { ...limits, read_only: true };
    expect(errorOf(req(NBD_CMD.WRITE), ro)).toBe("EPERM");
    expect(errorOf(req(NBD_CMD.TRIM), ro)).toBe("EPERM");
    expect(errorOf(req(NBD_CMD.WRITE_ZEROES), ro)).toBe("EPERM");
    expect(errorOf(req(NBD_CMD.READ), ro)).toBe("ok");
    expect(errorOf(req(NBD_CMD.FLUSH, 0, 0), ro)).toBe("ok");
  });
});

describe("replies", () => {
  test("simple reply layout", () => {
    expect(hex(encodeSimpleReply(0, 7n))).toBe("67446698" + "00000000" + "0000000000000007");
    expect(hex(encodeSimpleReply("ENOSPC", 7n))).toBe("67446698" + "0000001c" + "0000000000000007");
  });

  test("OFFSET_DATA chunk header with DONE", () => {
    const out = new Uint8Array(OFFSET_DATA_HEADER_BYTES + 4);
    writeOffsetDataHeader(out, 9n, 4096, 4);
    expect(hex(out.subarray(0, OFFSET_DATA_HEADER_BYTES))).toBe("668e33ef" + "0001" + "0001" + "0000000000000009" + "0000000c" + "0000000000001000");
  });

  test("ERROR chunk: u32 error, u16 length, message", () => {
    expect(hex(encodeErrorChunk(1n, "EIO", "bad"))).toBe("668e33ef" + "0001" + "8001" + "0000000000000001" + "00000009" + "00000005" + "0003" + "626164");
    expect(encodeErrorChunk(1n, "EIO", "x".repeat(5000)).byteLength).toBe(20 + 6 + 4096);
  });

  test("parseReplyHeader reads both kinds and asks for more bytes", () => {
    expect(parseReplyHeader(encodeSimpleReply("EINVAL", 3n))).toEqual({ kind: "ok", bytes: 16, value: { kind: "simple", error: 22, cookie: 3n } });
    const chunk = encodeErrorChunk(4n, "EPERM", "");
    expect(parseReplyHeader(chunk)).toEqual({
      kind: "ok", bytes: 20, value: { kind: "structured", flags: 1, type: NBD_REPLY_TYPE.ERROR, cookie: 4n, payload_bytes: 6 },
    });
    expect(parseReplyHeader(chunk.subarray(0, 10))).toEqual({ kind: "need", bytes: 20 });
    expect(parseReplyHeader(new Uint8Array(2))).toEqual({ kind: "need", bytes: 4 });
    expect(parseReplyHeader(new Uint8Array(16)).kind).toBe("error");
    expect(viewOf(chunk).getUint32(20)).toBe(1);
  });
});

describe("errno mapping", () => {
  test("maps by name, unknown names to EIO", () => {
    expect(nbdErrorForErrnoName("EDQUOT")).toBe("ENOSPC");
    expect(nbdErrorForErrnoName("EFBIG")).toBe("ENOSPC");
    expect(nbdErrorForErrnoName("EROFS")).toBe("EPERM");
    expect(nbdErrorForErrnoName("EOPNOTSUPP")).toBe("ENOTSUP");
    expect(nbdErrorForErrnoName("EWHATEVER")).toBe("EIO");
    expect(nbdErrorForErrnoName(undefined)).toBe("EIO");
    expect(nbdErrorForErrnoName(5)).toBe("EIO");
    // Names every object inherits are not errors of ours: never a success on the wire (review).
    for (const inherited of ["constructor", "toString", "valueOf", "hasOwnProperty", "__proto__"]) {
      expect(nbdErrorForErrnoName(inherited)).toBe("EIO");
    }
  });
});

describe("messageBytes", () => {
  test("cuts a long message at 4096 bytes, on a character boundary", () => {
    const cut = messageBytes(`x${"é".repeat(3000)}`); // 6001 bytes; byte 4096 is inside an "é"
    expect(cut.byteLength).toBe(4095);
    expect(new TextDecoder("utf-8", { fatal: true }).decode(cut)).toBe(`x${"é".repeat(2047)}`);
    expect(messageBytes("short")).toEqual(new TextEncoder().encode("short"));
  });
});
