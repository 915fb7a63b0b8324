// Frames over a ByteStream: the replication connection between the two workers. It owns the
// decoder (a malformed frame ends the link with the decoder's reason), the encoder (the
// configured checksum and compression), keepalives, and the idle-receive timeout.
//
// With `pull_streams` (the secondary), large frames arriving back to back — a resync, 1 MiB
// writes — are read straight from the socket once the consumer answered those it has (onIdle),
// instead of through the event loop, whose every read is a fresh buffer and one more copy.
//
// A small frame goes to the socket as one write (header and body together). With `cork_bytes`,
// small frames sent in one tick are gathered and written together at the end of it, or whenever
// that many bytes are gathered: the secondary answers a burst of QD32 requests with one syscall
// instead of one per reply. Bulk data is never copied: its header is written, then the data as it
// is.
import { FrameDecoder, FrameEncoder, type DecodeResult, type DecoderOptions, type Frame, type PayloadEncoding, type PeerPrimitives, type WriteHead } from "../wire/peer/index.ts";
import { native, NativeError } from "../native.ts";
import { QUEUED_WAIT_US } from "../wire/receive-buffer.ts";
import type { ByteStream, StreamHandlers } from "./byte-stream.ts";
import type { LocalDisk } from "./disk.ts";
import { Landing } from "./landing.ts";

export interface LinkTimers {
  /** Send KEEPALIVE after this long without sending anything (primary); 0 = never. */
  keepalive_ms: number;
  /** Close after this long without receiving anything (secondary); 0 = never. */
  idle_receive_ms: number;
}

/** Frames up to this size (headers, replies, small writes) are copied into one buffer. */
const COPY_BYTES_MAX = 16 * 1024;
/**
 * Cork sizes. The secondary gathers a whole tick of replies. The primary writes its requests out
 * every ~48 KiB (eleven 4 KiB writes): the secondary starts on a burst while the primary is still
 * writing the rest locally. Gathering the primary's whole tick measured 25% slower on 4 KiB QD32
 * writes (the two workers then take turns instead of overlapping); one write per request 8% slower,
 * with ~15% more system time.
 */
export const CORK_REPLIES_BYTES = 256 * 1024;
export const CORK_REQUESTS_BYTES = 48 * 1024;

/** Frames one data event may take straight from the socket after a large one. It waits for each
 * as long as for the rest of a started message (QUEUED_WAIT_US); once a wait brings nothing, the
 * event loop takes over. */
const PULL_FRAMES_MAX = 16;

export interface PeerLinkOptions extends DecoderOptions {
  /** Gather small frames until the end of the tick, writing them out whenever this many bytes are
   * gathered (at least COPY_BYTES_MAX); absent, each frame is written at once. */
  cork_bytes?: number;
  /** After a large frame, wait briefly for the next one on the socket (see the header); for a
   * consumer that answers what it has in onIdle, or the peer would wait for those answers. */
  pull_streams?: boolean;
}

export class PeerLink {
  private readonly decoder: FrameDecoder;
  private readonly encoder: FrameEncoder;
  private last_sent_ms = Date.now();
  private last_received_ms = Date.now();
  private timer: ReturnType<typeof setInterval> | null = null;
  private closed_reason: string | null = null;
  /** Until start(): bytes and a close that arrived before anyone listened. */
  private early: Uint8Array[] | null = [];
  private early_close: string | null = null;
  private readonly cork: Uint8Array;
  private cork_used = 0;
  private cork_flush_scheduled = false;
  private readonly defer: boolean;
  private readonly pull_streams: boolean;
  /** The pipe Landings go through, made at the first one (null: the system has no splice). */
  private pipe: [number, number] | null | undefined;
  private onFrame: (frame: Frame) => void = () => {};
  private onClose: (reason: string) => void = () => {};
  private onIdle: () => void = () => {};

  /** Opens the stream with handlers bound to the link that is built around it. */
  static async over(open: (handlers: StreamHandlers) => Promise<ByteStream>, prims: PeerPrimitives, encoding: PayloadEncoding,
    opts: PeerLinkOptions = {}): Promise<PeerLink> {
    let link: PeerLink | null = null;
    const pending: Uint8Array[] = [];
    let pending_close: string | null = null;
    const stream = await open({
      data: (chunk) => (link ? link.receive(chunk) : pending.push(chunk)),
      close: (reason) => (link ? link.lost(reason) : (pending_close = reason)),
    });
    link = new PeerLink(stream, prims, encoding, opts);
    link.early!.push(...pending);
    link.early_close = pending_close;
    return link;
  }

  /**
   * Starts delivering frames (and anything that arrived before); later calls replace the handlers.
   * `onIdle` runs whenever the frames received so far are delivered, before the link waits for more.
   * A link already closed reports it to the new handlers too, once the caller's turn is over.
   */
  start(onFrame: (frame: Frame) => void, onClose: (reason: string) => void, onIdle: () => void = () => {}): void {
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.onIdle = onIdle;
    const reason = this.closed_reason;
    if (reason !== null) {
      queueMicrotask(() => onClose(reason));
      return;
    }
    const early = this.early ?? [];
    this.early = null;
    // Reading the socket directly must wait until every chunk delivered before is decoded.
    early.forEach((chunk, i) => this.receive(chunk, i === early.length - 1));
    if (this.early_close !== null) this.lost(this.early_close);
  }

  private constructor(
    private stream: ByteStream,
    prims: PeerPrimitives,
    encoding: PayloadEncoding,
    opts: PeerLinkOptions,
  ) {
    this.decoder = new FrameDecoder(prims, opts);
    this.defer = opts.cork_bytes !== undefined;
    this.pull_streams = opts.pull_streams === true;
    this.cork = new Uint8Array(Math.max(opts.cork_bytes ?? 0, COPY_BYTES_MAX));
    this.encoder = new FrameEncoder(prims, encoding);
  }

  get remote(): string {
    return this.stream.remote;
  }

  /** Frames with payloads up to `max_bytes` are taken from now on (FrameDecoder.allowPayloads). */
  allowPayloads(max_bytes: number): void {
    this.decoder.allowPayloads(max_bytes);
  }

  get closed(): boolean {
    return this.closed_reason !== null;
  }

  get queued_bytes(): number {
    return this.stream.queued_bytes + this.cork_used;
  }

  private receive(chunk: Uint8Array, read_queued = true): void {
    if (this.closed) return;
    if (this.early) {
      this.early.push(chunk);
      return;
    }
    this.last_received_ms = Date.now();
    this.decoder.push(chunk);
    const read = read_queued ? this.stream.read_queued : undefined;
    for (let pulls = 0, pulling = false; ; ) {
      let result: DecodeResult;
      try {
        result = this.decoder.next(read, pulling ? QUEUED_WAIT_US : undefined);
      } catch (err) {
        if (!(err instanceof NativeError)) throw err;
        this.close(`receive from ${this.remote} failed: ${err.message}`);
        return;
      }
      if (result.kind === "need-more") {
        this.onIdle();
        if (pulling || this.closed || !this.pull_streams || read === undefined || pulls === PULL_FRAMES_MAX || !this.decoder.streaming) return;
        this.flushCork(); // the answers onIdle gave, which the peer may wait for before it sends more
        pulls++;
        pulling = true;
        continue;
      }
      pulling = false;
      if (result.kind === "error") {
        this.close(`malformed frame from ${this.remote}: ${result.reason}`);
        return;
      }
      this.onFrame(result.frame);
      if (this.closed) return;
    }
  }

  /**
   * Resolves once fewer than `max_bytes` wait in the send queue (or the link is closed): lets the
   * primary stop taking writes while the peer falls behind, instead of queueing without bound.
   */
  async room(max_bytes: number): Promise<void> {
    for (let waited_ms = 0; this.queued_bytes > max_bytes && !this.closed; waited_ms++) {
      await Bun.sleep(waited_ms < 100 ? 1 : 10);
    }
  }

  /** `stable`: the frame's data stays unchanged until the peer answered it or the link closed, so
   * a large body the socket does not take at once is queued as it is, not copied. */
  send(frame: Frame, stable = false): void {
    if (this.closed) return;
    const { head, body } = this.encoder.encode(frame);
    this.corkIn(head);
    if (head.length + body.length <= COPY_BYTES_MAX) {
      this.corkIn(body);
      if (this.defer) this.flushSoon();
      else this.flushCork();
    } else {
      this.flushCork();
      this.stream.write(body, stable);
    }
    this.last_sent_ms = Date.now();
  }

  /**
   * A WRITE whose data the kernel sends straight from `disk`'s page cache at `at` (sendfile): no
   * copy here, and on loopback none in the kernel. Only where the link's encoding need not see
   * the data (no checksum, no zstd) and nothing waits in the send queue; else it sends nothing
   * and returns false. What the socket does not take at once is sent from `rest(from)`, bytes
   * the caller keeps unchanged until answered. The range must stay unwritten until answered too
   * (a sync chunk's range lock): on loopback the peer copies from these very pages. A failure
   * once the header is out closes the link: the stream cannot be put back in step.
   */
  sendWriteFromFile(frame: WriteHead, disk: LocalDisk, at: number, rest: (from: number) => Uint8Array): boolean {
    const fd = this.stream.fd;
    if (this.closed || fd === undefined) return false;
    const head = this.encoder.plainWriteHead(frame);
    if (head === null) return false;
    this.flushCork();
    if (this.stream.queued_bytes > 0) return false;
    this.stream.write(head);
    try {
      const sent = this.stream.queued_bytes > 0 ? 0 : Math.max(0, disk.sendTo(fd, this.remote, at, frame.length));
      if (sent < frame.length) this.stream.write(rest(sent), true);
    } catch (err) {
      this.close(`sending WRITE ${frame.seq} from ${disk.path} failed: ${(err as Error).message}`);
    }
    this.last_sent_ms = Date.now();
    return true;
  }

  /** A sink for a payload arriving on this link (FrameDecoder sink_for) that moves it into
   * `disk` from `offset` on straight from the socket (splice); null where that cannot be. */
  landingTo(disk: LocalDisk, offset: number): Landing | null {
    const fd = this.stream.fd;
    if (this.closed || fd === undefined) return null;
    if (this.pipe === undefined) {
      try {
        this.pipe = native.splicePipe();
      } catch {
        return null; // no descriptor for a pipe now (EMFILE): this payload comes through memory
      }
    }
    return this.pipe === null ? null : new Landing(fd, this.remote, this.pipe, disk, offset);
  }

  private corkIn(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (this.cork_used + bytes.length > this.cork.byteLength) this.flushCork();
    this.cork.set(bytes, this.cork_used);
    this.cork_used += bytes.length;
  }

  private flushSoon(): void {
    if (this.cork_flush_scheduled) return;
    this.cork_flush_scheduled = true;
    queueMicrotask(() => {
      this.cork_flush_scheduled = false;
      if (!this.closed) this.flushCork();
    });
  }

  /** Writes out what is corked now rather than at the end of the tick. */
  flush(): void {
    if (!this.closed) this.flushCork();
  }

  /** The stream copies whatever it cannot send at once, so the cork is reused right away. */
  private flushCork(): void {
    if (this.cork_used === 0) return;
    this.stream.write(this.cork.subarray(0, this.cork_used));
    this.cork_used = 0;
  }

  startTimers(timers: LinkTimers): void {
    const tick_ms = Math.max(100, Math.min(timers.keepalive_ms || Infinity, timers.idle_receive_ms || Infinity) / 4);
    this.timer = setInterval(() => {
      const now = Date.now();
      if (timers.idle_receive_ms && now - this.last_received_ms > timers.idle_receive_ms) {
        this.close(`nothing received from ${this.remote} for ${Math.round(timers.idle_receive_ms / 1000)} s`);
      } else if (timers.keepalive_ms && now - this.last_sent_ms >= timers.keepalive_ms) {
        this.send({ kind: "keepalive" });
      }
    }, tick_ms);
  }

  private lost(reason: string): void {
    if (this.early) this.early_close = reason;
    else this.close(reason);
  }

  close(reason: string): void {
    if (this.closed) return;
    this.flushCork(); // e.g. the ERROR frame a refusal sends just before it closes
    this.closed_reason = reason;
    if (this.timer) clearInterval(this.timer);
    this.stream.close();
    for (const fd of this.pipe ?? []) {
      try {
        native.close(fd, "splice pipe");
      } catch {
        // Nothing was written through it that a close could lose.
      }
    }
    this.pipe = null;
    this.onClose(reason);
  }
}
