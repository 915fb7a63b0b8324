// Bounded readers and writers for little-endian control bodies. Readers throw DecodeFailure.
import { MAX_NAME_BYTES, MAX_WIRE_INTEGER } from "./constants.ts";
import { fail } from "./errors.ts";

const TWO_32 = 0x1_0000_0000;
const utf8_decoder = new TextDecoder("utf-8", { fatal: true });
const utf8_encoder = new TextEncoder();

export class BodyWriter {
  readonly bytes: Uint8Array;
  readonly #view: DataView;
  #at = 0;

  constructor(capacity_bytes: number) {
    this.bytes = new Uint8Array(capacity_bytes);
    this.#view = new DataView(this.bytes.buffer);
  }

  get length(): number {
    return this.#at;
  }

  u8(value: number): void {
    this.#view.setUint8(this.#advance(1), value);
  }

  u16(value: number): void {
    this.#view.setUint16(this.#advance(2), value, true);
  }

  u32(value: number): void {
    this.#view.setUint32(this.#advance(4), value, true);
  }

  u64(value: number): void {
    assertWireInteger(value, "u64 field");
    const at = this.#advance(8);
    this.#view.setUint32(at, value % TWO_32, true);
    this.#view.setUint32(at + 4, Math.floor(value / TWO_32), true);
  }

  u64n(value: bigint): void {
    if (value < 0n || value > 0xffff_ffff_ffff_ffffn) throw new Error(`u64 field out of range: ${value}`);
    this.#view.setBigUint64(this.#advance(8), value, true);
  }

  raw(data: Uint8Array): void {
    this.bytes.set(data, this.#advance(data.length));
  }

  /** u8 length + UTF-8 bytes. */
  name(value: string, what: string): void {
    const encoded = utf8_encoder.encode(value);
    const problem = nameProblem(value, encoded.length);
    if (problem !== null) throw new Error(`cannot encode ${what} ${JSON.stringify(value)}: ${problem}`);
    this.u8(encoded.length);
    this.raw(encoded);
  }

  #advance(n: number): number {
    const at = this.#at;
    if (at + n > this.bytes.length) throw new Error(`body overflow: ${at + n} > ${this.bytes.length} bytes`);
    this.#at = at + n;
    return at;
  }
}

export class BodyReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #what: string;
  #at = 0;

  constructor(bytes: Uint8Array, what: string) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
  }

  u8(): number {
    return this.#view.getUint8(this.#take(1, "u8"));
  }

  u16(): number {
    return this.#view.getUint16(this.#take(2, "u16"), true);
  }

  u32(): number {
    return this.#view.getUint32(this.#take(4, "u32"), true);
  }

  u64(field: string): number {
    const at = this.#take(8, field);
    const value = this.#view.getUint32(at, true) + this.#view.getUint32(at + 4, true) * TWO_32;
    if (value > MAX_WIRE_INTEGER) fail("BAD_BODY", `${this.#what}: ${field} exceeds 2^53-1`);
    return value;
  }

  u64n(field: string): bigint {
    return this.#view.getBigUint64(this.#take(8, field), true);
  }

  raw(n: number, field: string): Uint8Array {
    const at = this.#take(n, field);
    return this.#bytes.subarray(at, at + n);
  }

  bool(field: string): boolean {
    const value = this.u8();
    if (value > 1) fail("BAD_BODY", `${this.#what}: ${field} must be 0 or 1, got ${value}`);
    return value === 1;
  }

  name(field: string): string {
    const length = this.u8();
    const value = decodeUtf8(this.raw(length, field), `${this.#what} ${field}`);
    const problem = nameProblem(value, length);
    if (problem !== null) fail("BAD_BODY", `${this.#what}: ${field} ${problem}`);
    return value;
  }

  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  end(): void {
    if (this.#at !== this.#bytes.length) {
      fail("BAD_BODY", `${this.#what}: ${this.#bytes.length - this.#at} trailing bytes`);
    }
  }

  #take(n: number, field: string): number {
    const at = this.#at;
    if (at + n > this.#bytes.length) fail("BAD_BODY", `${this.#what}: truncated at ${field}`);
    this.#at = at + n;
    return at;
  }
}

export function decodeUtf8(bytes: Uint8Array, what: string): string {
  try {
    return utf8_decoder.decode(bytes);
  } catch {
    return fail("BAD_UTF8", `${what} is not valid UTF-8`);
  }
}

export function encodeUtf8(value: string): Uint8Array {
  return utf8_encoder.encode(value);
}

/** Names end up in logs: non-empty, bounded, no control characters (no log injection). */
function nameProblem(value: string, length_bytes: number): string | null {
  if (length_bytes === 0) return "is empty";
  if (length_bytes > MAX_NAME_BYTES) return `is ${length_bytes} bytes, limit ${MAX_NAME_BYTES}`;
  if (hasControlCharacter(value)) return "contains a control character";
  return null;
}

export function hasControlCharacter(value: string): boolean {
  return /[\u0000-\u001f\u007f-\u009f]/.test(value);
}

export function assertWireInteger(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`${what} must be an integer in [0, 2^53-1], got ${value}`);
}
