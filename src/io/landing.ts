// A large WRITE's data straight from the peer socket to the local disk: the secondary's half of
// the zero-copy resync (the primary's is sendfile, PeerLink.sendWriteFromFile). The kernel moves
// the socket's pages into a pipe and from there into the disk's page cache, one copy in all,
// where a read into memory and a pwrite make two (docs/performance.md, twelfth round).
import { native } from "../native.ts";
import type { MessageSink } from "../wire/receive-buffer.ts";
import type { LocalDisk } from "./disk.ts";

/**
 * One WRITE's payload, written into `disk` from `base` on as it arrives: bytes the event loop
 * already delivered with pwrite, bytes still queued on the socket with splice. After a failed
 * write (or drop()) the rest of the payload is still taken off the socket, so the stream stays in
 * step, and dropped; `error` says what failed, for the answer.
 */
export class Landing implements MessageSink {
  error: Error | null = null;
  /** Bytes written straight from the socket (splice), not through memory. */
  spliced = 0;
  private dropping = false;

  constructor(
    private readonly socket: number,
    private readonly what: string,
    private readonly pipe: [number, number],
    private readonly disk: LocalDisk,
    private readonly base: number,
  ) {}

  /** Takes the rest of the payload off the socket without writing it (the write must not happen). */
  drop(): void {
    this.dropping = true;
  }

  write(bytes: Uint8Array, at: number): void {
    if (this.error !== null || this.dropping) return;
    try {
      this.disk.write(bytes, this.base + at);
    } catch (err) {
      this.error = err as Error;
    }
  }

  take(at: number, max: number, wait_us: number): number {
    if (this.error !== null || this.dropping) return native.spliceIn(this.socket, this.what, this.pipe, -1, this.disk.path, 0, max, wait_us).taken;
    const r = this.disk.receive(this.socket, this.what, this.pipe, this.base + at, max, wait_us);
    this.error = r.error;
    if (r.error === null) this.spliced += r.taken;
    return r.taken;
  }
}
