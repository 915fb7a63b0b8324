// Streaming frame decoder. push() socket chunks, then call next() until it says "need-more".
// Bad input never throws: next() returns an error value (and keeps returning it), and the
// caller ends the connection logging `reason`. A payload is allocated only once all of its
// bytes have arrived, or, given a QueuedRead, once a large one starts to arrive (it is then
// filled straight from the socket); memory per connection stays within one bounded frame plus
// one chunk. A large WRITE of plain data (no checksum, no compression) may instead go to a sink
// the consumer gives for it (landedWrite): the secondary's disk.
import { QUEUED_READ_MIN_BYTES, ReceiveBuffer, type MessageSink, type QueuedRead } from "../receive-buffer.ts";
import { HEADER_BYTES, MAX_DATA_PAYLOAD_BYTES } from "./constants.ts";
import { DecodeFailure } from "./errors.ts";
import { decodeFrameBody, isPlainWrite, landedWrite, writeHeadOf } from "./frame.ts";
import { decodeHeader, type Header, typeName } from "./header.ts";
import type { DecodeResult, PeerPrimitives, WriteHead } from "./types.ts";

const NEED_MORE: DecodeResult = { kind: "need-more" };

export class FrameDecoder {
  readonly #prims: PeerPrimitives;
  /** Unconsumed input, in the chunks it arrived in. */
  readonly #rx: ReceiveBuffer;
  #header: Header | null = null;
  #failure: DecodeResult | null = null;
  /** The last payload was large: more are likely queued right behind it. */
  #streaming = false;
  readonly #header_scratch = new Uint8Array(HEADER_BYTES);
  readonly #payload_alloc: (n: number) => Uint8Array;
  readonly #sink_for: ((write: WriteHead) => MessageSink | null) | undefined;
  /** Where the current frame's payload goes: a sink its consumer gave, null for a buffer,
   * undefined until decided (sink_for is asked once per frame). */
  #sink: MessageSink | null | undefined = undefined;
  #max_payload_bytes: number;

  /**
   * payload_alloc: where a payload that spans chunks is assembled (default: a new array each time),
   * e.g. a pool the consumer gives buffers back to once it is done with a frame. copy_payloads:
   * every payload is copied there, none is a view of a pushed chunk, and each chunk is freed once
   * consumed (ReceiveBuffer copy_messages): for chunks that are fresh socket reads, ours alone.
   * sink_for: asked, when the header of a WRITE of plain data of QUEUED_READ_MIN_BYTES or more
   * arrives and the socket may be read directly, where its payload goes; null: a buffer as
   * usual. Such a frame is then returned as landedWrite, once all of its payload went there.
   * max_payload_bytes: a frame with a larger payload is an error as soon as its header arrives
   * (before authentication a peer has no business sending data, nor buffering it here).
   */
  constructor(prims: PeerPrimitives, opts: DecoderOptions = {}) {
    this.#prims = prims;
    this.#payload_alloc = opts.payload_alloc ?? newArray;
    this.#sink_for = opts.sink_for;
    this.#max_payload_bytes = opts.max_payload_bytes ?? MAX_DATA_PAYLOAD_BYTES;
    const copy = opts.copy_payloads === true;
    this.#rx = new ReceiveBuffer({ free_consumed: copy, copy_messages: copy });
  }

  /** Frames with payloads up to `max_bytes` are taken from now on (the peer proved itself). */
  allowPayloads(max_bytes: number): void {
    this.#max_payload_bytes = max_bytes;
  }

  /** The last payload was large and nothing of the next frame is here yet: the next one may well
   * be on its way (a stream of large frames). */
  get streaming(): boolean {
    return this.#streaming && this.#header === null && this.#rx.bytes === 0;
  }

  /** Bytes received but not yet consumed by a returned frame. */
  get buffered_bytes(): number {
    return this.#rx.bytes;
  }

  /**
   * Frames may reference `chunk` (zero copy), so the caller must not modify it afterwards.
   * Contract: next() was drained to "need-more" (or "error") before each push.
   */
  push(chunk: Uint8Array): void {
    if (this.#failure !== null || chunk.length === 0) return;
    if (this.#rx.bytes >= this.#needed_bytes()) throw new Error("FrameDecoder.push: a complete frame is pending; drain next() first");
    this.#rx.push(chunk);
  }

  /**
   * The next frame, "need-more" or "error". With `read`, a large payload that has not arrived is
   * filled with the bytes queued behind the pushed ones (read throws are passed on). With
   * `pull_wait_us` too, while `streaming`, the next header is first read from the socket, waiting
   * that long at most for it.
   */
  next(read?: QueuedRead, pull_wait_us?: number): DecodeResult {
    if (this.#failure !== null) return this.#failure;
    try {
      return this.#next(read, pull_wait_us);
    } catch (error) {
      if (!(error instanceof DecodeFailure)) throw error;
      this.#failure = { kind: "error", code: error.code, reason: error.reason };
      this.#rx.clear();
      return this.#failure;
    }
  }

  #next(read: QueuedRead | undefined, pull_wait_us: number | undefined): DecodeResult {
    if (this.#header === null) {
      if (pull_wait_us !== undefined && read !== undefined && this.streaming) this.#rx.pull(HEADER_BYTES, read, pull_wait_us);
      if (this.#rx.bytes < HEADER_BYTES) return NEED_MORE;
      // Copied, never a view: a chunk something was lent from is not freed (copy_payloads).
      this.#rx.fill(this.#header_scratch, 0);
      this.#header = decodeHeader(this.#header_scratch);
      if (this.#header.payload_bytes > MAX_DATA_PAYLOAD_BYTES) throw new Error("FrameDecoder: header validation let an oversized payload through");
      if (this.#header.payload_bytes > this.#max_payload_bytes) {
        throw new DecodeFailure("TOO_LARGE", `${typeName(this.#header.type) ?? "frame"}: payload of ${this.#header.payload_bytes} bytes exceeds ${this.#max_payload_bytes} here`);
      }
    }
    const header = this.#header;
    if (this.#sink === undefined && read !== undefined && this.#sink_for !== undefined && sinkable(header) && this.#rx.partial_bytes === 0) {
      this.#sink = this.#sink_for(writeHeadOf(header));
    }
    if (this.#sink) return this.#sinkPayload(header, this.#sink, read !== undefined);
    // A payload inside one chunk is a view of it (zero copy; copied with copy_payloads); one that
    // spans chunks is copied once, or, when large and still arriving, filled straight from the socket.
    const payload = this.#rx.takeMessage(header.payload_bytes, this.#payload_alloc, read);
    if (payload === null) return NEED_MORE;
    this.#header = null;
    this.#sink = undefined;
    this.#streaming = payload.byteLength >= QUEUED_READ_MIN_BYTES;
    return { kind: "frame", frame: decodeFrameBody(header, payload, this.#prims) };
  }

  #sinkPayload(header: Header, sink: MessageSink, direct: boolean): DecodeResult {
    if (!this.#rx.sinkMessage(header.payload_bytes, sink, direct)) return NEED_MORE;
    this.#header = null;
    this.#sink = undefined;
    this.#streaming = true;
    return { kind: "frame", frame: landedWrite(header) };
  }

  #needed_bytes(): number {
    if (this.#header === null) return HEADER_BYTES;
    return this.#header.payload_bytes - this.#rx.partial_bytes;
  }
}

export interface DecoderOptions {
  payload_alloc?: (n: number) => Uint8Array;
  copy_payloads?: boolean;
  sink_for?: (write: WriteHead) => MessageSink | null;
  max_payload_bytes?: number;
}

/** A WRITE whose payload is its data as it is, large enough to be worth a sink. */
function sinkable(header: Header): boolean {
  return isPlainWrite(header) && header.payload_bytes >= QUEUED_READ_MIN_BYTES;
}

function newArray(n: number): Uint8Array {
  return new Uint8Array(n);
}
