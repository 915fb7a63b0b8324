// The storage a frontend (NBD server, GEOM Gate, ...) serves: the primary's replicated disk in
// production, a MemoryBackend in tests. Offsets and lengths arrive already validated against
// size_bytes and aligned to block_bytes.

export interface BlockBackend {
  readonly size_bytes: number;
  /** Minimum block (sector size), a power of two. */
  readonly block_bytes: number;
  /** Fills `into` fully from `offset`, or throws. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /** With `fua` the data is on stable storage when the promise resolves. null: the write already
   * succeeded (done within the call; the hot path of a local write, without a promise to settle).
   * `data` belongs to the caller again once it returned null or its promise settled (the NBD
   * server reuses it): keep a copy, not `data`. */
  write(offset: number, data: Uint8Array, fua: boolean): Promise<void> | null;
  /** Every write that completed before this call is on stable storage when it resolves. */
  flush(): Promise<void>;
  /** The range is unused; its contents are undefined afterwards. */
  trim(offset: number, length: number): Promise<void>;
  /** The range reads back as zeroes; `may_trim` allows deallocating it. */
  writeZeroes(offset: number, length: number, may_trim: boolean): Promise<void>;
}

/** Errors thrown by a backend carry an errno name in `code` ("EIO", "ENOSPC", ...). */
export class BackendError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = "BackendError";
  }
}
