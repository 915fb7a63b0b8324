import { describe, expect, test } from "bun:test";
import { BitmapAssembler, bitmapFrames } from "../../../src/wire/peer/bitmap.ts";
import { BITMAP_CHUNK_BYTES } from "../../../src/wire/peer/constants.ts";
import { replyErrorFromSystemCode } from "../../../src/wire/peer/errors.ts";
import { expectedBitmapBytes, negotiateVersion } from "../../../src/wire/peer/handshake.ts";
import { requestRangeProblem } from "../../../src/wire/peer/validate.ts";
import { decodeAll, encode, patterned } from "./helpers.ts";

describe("version negotiation", () => {
  test("highest common version, or null without overlap", () => {
    expect(negotiateVersion(1, 1, 1, 1)).toBe(1);
    expect(negotiateVersion(1, 5, 2, 3)).toBe(3);
    expect(negotiateVersion(2, 2, 1, 3)).toBe(2);
    expect(negotiateVersion(4, 6, 1, 3)).toBeNull();
    expect(negotiateVersion(1, 1, 2, 3)).toBeNull();
  });
});

describe("bitmap transfer", () => {
  test("expected size is one bit per extent, rounded up to bytes", () => {
    expect(expectedBitmapBytes(1 << 30, 1 << 21)).toBe(64);
    expect(expectedBitmapBytes((1 << 30) + 1, 1 << 21)).toBe(65);
    expect(expectedBitmapBytes(4096, 1 << 21)).toBe(1);
  });

  test("a multi-chunk bitmap goes through BITMAP frames and reassembles", () => {
    const bitmap = patterned(2 * BITMAP_CHUNK_BYTES + 17);
    const frames = bitmapFrames(bitmap);
    expect(frames.length).toBe(3);
    const stream = frames.map((f) => encode(f, { checksum: "crc32", compression: "zstd" }));
    const assembler = new BitmapAssembler(bitmap.length);
    const progress = stream.flatMap((bytes) => decodeAll(bytes)).map((r) => {
      if (r.kind !== "frame" || r.frame.kind !== "bitmap") throw new Error("expected a bitmap frame");
      return assembler.add(r.frame.offset, r.frame.data);
    });
    expect(progress.map((p) => p.kind)).toEqual(["more", "more", "done"]);
    const last = progress[2]!;
    if (last.kind !== "done") throw new Error("not done");
    expect(Buffer.from(last.bitmap).equals(bitmap)).toBe(true);
  });

  test("out-of-order and overlong chunks are refused", () => {
    const assembler = new BitmapAssembler(10);
    expect(assembler.add(4, new Uint8Array(2))).toEqual({ kind: "error", reason: "BITMAP chunk at offset 4, expected 0" });
    expect(assembler.add(0, new Uint8Array(11))).toEqual({ kind: "error", reason: "BITMAP chunk ends at 11, bitmap is 10 bytes" });
    expect(assembler.add(0, new Uint8Array(4)).kind).toBe("more");
    expect(assembler.add(4, new Uint8Array(6)).kind).toBe("done");
  });

  test("an empty bitmap sends no frames", () => {
    expect(bitmapFrames(new Uint8Array(0))).toEqual([]);
  });
});

describe("request validation on the secondary", () => {
  test("alignment and device bounds", () => {
    expect(requestRangeProblem({ kind: "write", offset: 4096, length: 4096 }, 1 << 20, 4096)).toBeNull();
    expect(requestRangeProblem({ kind: "read", offset: 512, length: 4096 }, 1 << 20, 4096)).toBe(
      "read offset 512 length 4096 not aligned to the 4096-byte sector",
    );
    expect(requestRangeProblem({ kind: "delete", offset: 0, length: (1 << 20) + 4096 }, 1 << 20, 4096)).toBe(
      "delete ends at 1052672, beyond datasize 1048576",
    );
  });
});

describe("reply errors by name", () => {
  test("system error codes map to portable names", () => {
    expect(replyErrorFromSystemCode("EOPNOTSUPP")).toBe("ENOTSUP");
    expect(replyErrorFromSystemCode("ENOSPC")).toBe("ENOSPC");
    expect(replyErrorFromSystemCode("EBADF")).toBe("EIO");
    expect(replyErrorFromSystemCode(undefined)).toBe("EIO");
  });
});
