// An in-memory BlockBackend for tests: a byte array, operation counters, injectable errors and
// per-operation delays (to make replies complete out of order).
import { BackendError, type BlockBackend } from "./block-backend.ts";

export type BackendOp = "read" | "write" | "flush" | "trim" | "writeZeroes";

export interface MemoryBackendOptions {
  size_bytes: number;
  block_bytes?: number;
  /** Milliseconds to wait before completing an operation (0 = complete on the next microtask; a
   * plain write without a failure queued for it completes within the call, as hastd's unreplicated
   * writes do). */
  delay_ms?: (op: BackendOp, offset: number) => number;
}

export class MemoryBackend implements BlockBackend {
  readonly size_bytes: number;
  readonly block_bytes: number;
  readonly bytes: Uint8Array;
  readonly counts: Record<BackendOp, number> & { fua_writes: number; may_trim_zeroes: number } = {
    read: 0, write: 0, flush: 0, trim: 0, writeZeroes: 0, fua_writes: 0, may_trim_zeroes: 0,
  };
  private readonly delay_ms: MemoryBackendOptions["delay_ms"];
  private readonly failures: { op: BackendOp; code: string }[] = [];

  constructor(options: MemoryBackendOptions) {
    const block_bytes = options.block_bytes ?? 512;
    if (!Number.isInteger(Math.log2(block_bytes))) throw new Error(`memory backend: block size ${block_bytes} is not a power of two`);
    if (!Number.isSafeInteger(options.size_bytes) || options.size_bytes % block_bytes !== 0) {
      throw new Error(`memory backend: size ${options.size_bytes} is not a multiple of the ${block_bytes}-byte block`);
    }
    this.size_bytes = options.size_bytes;
    this.block_bytes = block_bytes;
    this.bytes = new Uint8Array(options.size_bytes);
    this.delay_ms = options.delay_ms;
  }

  /** The next `op` throws a BackendError with this errno name. */
  failNext(op: BackendOp, code: string): void {
    this.failures.push({ op, code });
  }

  async read(offset: number, into: Uint8Array): Promise<void> {
    await this.enter("read", offset, into.byteLength);
    into.set(this.bytes.subarray(offset, offset + into.byteLength));
  }

  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> | null {
    const delay_ms = this.delayOf("write", offset);
    if (fua || delay_ms > 0 || this.failures.some((f) => f.op === "write")) return this.writeLater(offset, data, fua, delay_ms);
    try {
      this.admit("write", offset, data.byteLength);
    } catch (err) {
      return Promise.reject(err); // a backend's failures come as rejections, not throws
    }
    this.bytes.set(data, offset);
    return null;
  }

  private async writeLater(offset: number, data: Uint8Array, fua: boolean, delay_ms: number): Promise<void> {
    await this.enter("write", offset, data.byteLength, delay_ms);
    this.bytes.set(data, offset);
    if (fua) this.counts.fua_writes++;
  }

  async flush(): Promise<void> {
    await this.enter("flush", 0, 0);
  }

  async trim(offset: number, length: number): Promise<void> {
    await this.enter("trim", offset, length);
    this.bytes.fill(0, offset, offset + length);
  }

  async writeZeroes(offset: number, length: number, may_trim: boolean): Promise<void> {
    await this.enter("writeZeroes", offset, length);
    this.bytes.fill(0, offset, offset + length);
    if (may_trim) this.counts.may_trim_zeroes++;
  }

  private delayOf(op: BackendOp, offset: number): number {
    return this.delay_ms?.(op, offset) ?? 0;
  }

  /** Checks the range and counts the operation. */
  private admit(op: BackendOp, offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size_bytes) {
      throw new BackendError("EINVAL", `memory backend: ${op} offset ${offset} length ${length} outside ${this.size_bytes} bytes`);
    }
    this.counts[op]++;
  }

  private async enter(op: BackendOp, offset: number, length: number, delay_ms = this.delayOf(op, offset)): Promise<void> {
    this.admit(op, offset, length);
    if (delay_ms > 0) await Bun.sleep(delay_ms);
    const failure = this.failures.findIndex((f) => f.op === op);
    if (failure >= 0) {
      const { code } = this.failures.splice(failure, 1)[0]!;
      throw new BackendError(code, `memory backend: injected ${code} on ${op} at offset ${offset}`);
    }
  }
}
