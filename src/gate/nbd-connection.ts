// One NBD client connection: handshake (fixed newstyle), then transmission with pipelined
// requests answered as they complete. Socket writes may be partial: the rest is queued and
// resumed on drain. Reading stops while the in-flight bound is reached or the receive buffer
// is full, so memory per connection stays bounded.
//
// Hot path (docs/performance.md): request headers are parsed in place in the receive buffer;
// replies that complete in the same tick are corked into one socket write (one syscall for a
// burst of QD32 write acks instead of 32); WRITE acks are written straight into the cork buffer;
// large WRITE payloads are received straight into pooled buffers (receivePayload).
import type { Socket } from "bun";
import {
  NBD_CMD, NBD_CMD_FLAG, NBD_INFO, NBD_OPT, NBD_REP, PAYLOAD_BYTES_MAX, REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_HEADER_BYTES, commandName, nbdErrorForErrnoName, optionName, type NbdErrorName, type ParseResult,
} from "../wire/nbd.ts";
import { BufferPool } from "./buffer-pool.ts";
import {
  decodeOption, encodeExportNameReply, encodeGreeting, encodeInfoBlockSize, encodeInfoDescription,
  encodeInfoExport, encodeInfoName, encodeOptionError, encodeOptionReply, encodeServerEntry,
  parseClientFlags, parseOptionHeader, type BlockSizes, type OptionHeader, type OptionRequest,
} from "../wire/nbd-handshake.ts";
import {
  OFFSET_DATA_HEADER_BYTES, checkRequest, encodeErrorChunk, encodeSimpleReply, parseRequestHeader,
  writeOffsetDataHeader, writeSimpleReplyHeader, type ExportLimits, type NbdRequest, type RequestCheck,
} from "../wire/nbd-transmission.ts";
import type { BlockBackend } from "./block-backend.ts";
import { ReceiveBuffer, type QueuedRead } from "../wire/receive-buffer.ts";
import { queuedRead, socketFd } from "../io/queued-read.ts";
import { NativeError } from "../native.ts";

/** Requests started but not yet fully replied to, per connection. */
export const IN_FLIGHT_REQUESTS_MAX = 64;
/** READ/WRITE data held by in-flight requests, per connection (one request may always run). */
export const IN_FLIGHT_BYTES_MAX = 64 * 1024 * 1024;
/** Option data we buffer; longer options get ERR_TOO_BIG and their data is skipped. */
export const OPTION_DATA_BYTES_MAX = 64 * 1024;
/** Options a client may send before it must choose an export. */
export const HANDSHAKE_OPTIONS_MAX = 1024;
export const HANDSHAKE_TIMEOUT_S = 30;
/** We stop reading once this much unparsed input is buffered (one header + max payload). */
export const RECEIVE_BYTES_MAX = REQUEST_HEADER_BYTES + PAYLOAD_BYTES_MAX;
/** Replies up to this size are copied into the cork buffer; larger ones are written as they are. */
export const CORK_COPY_BYTES_MAX = 16 * 1024;
/** Size of the per-connection cork buffer (replies completed in one tick, sent in one write). */
export const CORK_BYTES = 128 * 1024;
/** READ replies and WRITE payloads at least this large reuse buffers the connection is done with... */
export const POOL_MIN_BYTES = 4 * 1024;
/** ...up to this many bytes of them kept per connection. */
export const POOL_BYTES_MAX = 16 * 1024 * 1024;

/** A request's reply this large is a READ reply from the pool (every other reply is smaller). */
function isReadReply(bytes: Uint8Array, requests: number): boolean {
  return requests > 0 && bytes.byteLength >= POOL_MIN_BYTES;
}

export type LogLevel = "info" | "warn" | "error" | "debug";

/** What every connection of one server shares. */
export interface ExportContext {
  export_name: string;
  description: string | undefined;
  backend: BlockBackend;
  limits: ExportLimits;
  block_sizes: BlockSizes;
  transmission_flags: number;
  log: (level: LogLevel, msg: string) => void;
  handshake_timeout_ms: number;
}

type Phase = "client_flags" | "options" | "transmission" | "closing" | "closed";

/** Bytes waiting for the socket to drain, and the requests whose replies end in them. */
interface QueuedWrite {
  bytes: Uint8Array;
  requests: number;
  cost_bytes: number;
  /** A pooled READ reply buffer to reuse once these bytes are out. */
  recycle: Uint8Array | null;
}

export class NbdConnection {
  private phase: Phase = "client_flags";
  /** Chunks come from the Bun socket's data callback: fresh buffers, ours alone. WRITE payloads
   * are copied into pooled buffers, so each chunk is freed once consumed (ReceiveBuffer). */
  private readonly rx = new ReceiveBuffer({ free_consumed: true, copy_messages: true });
  private readonly tx: QueuedWrite[] = [];
  /** Replies completed but not yet written, in order; always logically after everything in `tx`. */
  private cork: Uint8Array | null = null;
  private cork_bytes = 0;
  private cork_requests = 0;
  private cork_cost_bytes = 0;
  private flush_scheduled = false;
  private readonly pool = new BufferPool(POOL_MIN_BYTES, POOL_BYTES_MAX);
  private readonly poolTake = (n: number) => this.pool.take(n);
  private no_zeroes = false;
  private structured_replies = false;
  private options_seen = 0;
  private option_header: OptionHeader | null = null;
  private option_discard_bytes = 0;
  /** A WRITE whose header was consumed and whose payload has not fully arrived yet. */
  private pending_write: { request: NbdRequest; check: RequestCheck } | null = null;
  private readonly read_queued: QueuedRead | undefined;
  private in_flight_requests = 0;
  private in_flight_bytes = 0;
  private blocked = false;
  /** The client closed its sending side (a half-close): what it sent is served, then the end. */
  private input_ended = false;
  private reading_paused = false;
  private pumping = false;
  private pump_again = false;
  /** Backend calls started and not yet finished, and who waits for that to reach zero. */
  private executing = 0;
  private settle_waiters: (() => void)[] = [];
  private handshake_timer: ReturnType<typeof setTimeout> | null = null;
  private rejections = 0;

  constructor(
    private readonly socket: Socket<unknown>,
    private readonly ctx: ExportContext,
    readonly label: string,
  ) {
    const fd = socketFd(socket);
    this.read_queued = fd === undefined ? undefined : queuedRead(fd, label);
  }

  open(): void {
    // A deadline for the whole handshake, on a timer of its own: a socket's idle timeout would let
    // a client that trickles bytes hold its connection slot for ever.
    this.handshake_timer = setTimeout(() => this.handshakeExpired(), this.ctx.handshake_timeout_ms);
    this.send(encodeGreeting());
  }

  /** For a peer that skips the handshake (the kernel nbd client): requests from the first byte,
   * simple replies only, since structured replies can only be negotiated in the handshake. */
  openInTransmission(): void {
    if (this.phase !== "client_flags") throw new Error(`${this.label}: openInTransmission after the connection started`);
    this.enterTransmission();
  }

  onData(chunk: Uint8Array): void {
    if (this.phase === "closing" || this.phase === "closed") return;
    this.rx.push(chunk);
    this.pump();
  }

  onDrain(): void {
    this.flushQueue();
  }

  /** The client half-closed: the requests it sent are carried out and answered, then it closes. */
  onEnd(): void {
    this.input_ended = true;
    this.pump();
  }

  private handshakeExpired(): void {
    this.handshake_timer = null;
    if (this.phase === "client_flags" || this.phase === "options") {
      this.closeNow("warn", `handshake not finished within ${this.ctx.handshake_timeout_ms / 1000} s`);
    }
  }

  private stopHandshakeTimer(): void {
    if (this.handshake_timer !== null) clearTimeout(this.handshake_timer);
    this.handshake_timer = null;
  }

  /** The socket closed (by either side): stop sending; in-flight backend calls finish on their own.
   * A WRITE whose payload had not all arrived is dropped, neither carried out nor answered. */
  onClose(): void {
    if (this.phase !== "closed") this.dropCutWrite();
    this.phase = "closed";
    this.stopHandshakeTimer();
    this.dropOutput();
    this.rx.clear();
  }

  /** A WRITE whose payload had not all arrived when the client went: dropped, neither carried out
   * nor answered, its in-flight budget given back. */
  private dropCutWrite(): void {
    const cut = this.pending_write?.request;
    if (cut === undefined) return;
    this.ctx.log("warn", `${this.label}: disconnected during the payload of a WRITE of ${cut.length} bytes at offset ${cut.offset}: dropped, neither written nor answered`);
    this.pending_write = null;
    this.in_flight_requests--;
    this.in_flight_bytes -= costBytes(cut);
  }

  /** Resolves when every backend call this connection started has settled. */
  async settled(): Promise<void> {
    if (this.executing === 0) return;
    await new Promise<void>((resolve) => this.settle_waiters.push(resolve));
  }

  // ---- input ----

  private pump(): void {
    if (this.pumping) {
      this.pump_again = true;
      return;
    }
    this.pumping = true;
    try {
      do {
        this.pump_again = false;
        if (this.phase === "client_flags") this.readClientFlags();
        if (this.phase === "options") this.readOptions();
        if (this.phase === "transmission") this.readRequests();
      } while (this.pump_again);
    } finally {
      this.pumping = false;
    }
    // Replies of requests answered while they were read leave together (flushSoon).
    if (this.cork_bytes > 0) this.flushSoon();
    // Nothing more will come: once every request read is started (none waits for room), close.
    if (this.input_ended && !this.blocked && this.phase !== "closing" && this.phase !== "closed") {
      const cut = this.pending_write !== null;
      this.dropCutWrite();
      if (this.rx.bytes > 0 && !cut) this.closeAfterDrain("warn", "client closed its side in the middle of a request");
      else this.closeAfterDrain("debug", "client closed its sending side");
      return;
    }
    this.updateReading();
  }

  private readClientFlags(): void {
    const parsed = parseClientFlags(this.rx.peek(Math.min(this.rx.bytes, 4)));
    if (parsed.kind === "need") return;
    if (parsed.kind === "error") return this.closeNow("warn", parsed.reason);
    this.rx.discard(parsed.bytes);
    this.no_zeroes = parsed.value.no_zeroes;
    this.phase = "options";
  }

  private readOptions(): void {
    while (this.phase === "options") {
      if (this.option_discard_bytes > 0) {
        this.option_discard_bytes -= this.rx.discard(this.option_discard_bytes);
        if (this.option_discard_bytes > 0) return;
      }
      if (this.option_header === null) {
        const parsed = parseOptionHeader(this.rx.peek(Math.min(this.rx.bytes, 16)));
        if (parsed.kind === "need") return;
        if (parsed.kind === "error") return this.closeNow("warn", parsed.reason);
        this.rx.discard(parsed.bytes);
        if (++this.options_seen > HANDSHAKE_OPTIONS_MAX) {
          return this.closeNow("warn", `more than ${HANDSHAKE_OPTIONS_MAX} handshake options`);
        }
        const { option, data_bytes } = parsed.value;
        if (data_bytes > OPTION_DATA_BYTES_MAX) {
          if (option === NBD_OPT.EXPORT_NAME) return this.closeNow("warn", `EXPORT_NAME data of ${data_bytes} bytes`);
          this.send(encodeOptionError(option, NBD_REP.ERR_TOO_BIG, `${optionName(option)} data of ${data_bytes} bytes exceeds ${OPTION_DATA_BYTES_MAX}`));
          this.option_discard_bytes = data_bytes;
          continue;
        }
        this.option_header = parsed.value;
      }
      const { option, data_bytes } = this.option_header;
      if (this.rx.bytes < data_bytes) return;
      this.option_header = null;
      this.handleOption(option, decodeOption(option, this.rx.take(data_bytes)));
    }
  }

  private handleOption(option: number, request: OptionRequest): void {
    const { ctx } = this;
    switch (request.kind) {
      case "export_name":
        // JSON quoting: the name is the client's, and a newline in it must not forge a log line.
        if (!this.isOurExport(request.name)) return this.closeNow("warn", `EXPORT_NAME for unknown export ${JSON.stringify(request.name)}`);
        this.send(encodeExportNameReply(ctx.limits.size_bytes, ctx.transmission_flags, this.no_zeroes));
        return this.enterTransmission();
      case "abort":
        this.send(encodeOptionReply(option, NBD_REP.ACK));
        return this.closeAfterDrain("debug", "client sent NBD_OPT_ABORT");
      case "list":
        return this.sendAll([
          encodeOptionReply(option, NBD_REP.SERVER, encodeServerEntry(ctx.export_name, ctx.description)),
          encodeOptionReply(option, NBD_REP.ACK),
        ]);
      case "structured_reply":
        if (this.structured_replies) return this.send(encodeOptionError(option, NBD_REP.ERR_INVALID, "structured replies already negotiated"));
        this.structured_replies = true;
        return this.send(encodeOptionReply(option, NBD_REP.ACK));
      case "info":
      case "go":
        if (!this.isOurExport(request.name)) {
          return this.send(encodeOptionError(option, NBD_REP.ERR_UNKNOWN, `export ${JSON.stringify(request.name)} does not exist (this server has "${ctx.export_name}")`));
        }
        this.sendAll(this.infoReplies(option, request.info_types));
        if (request.kind === "go") this.enterTransmission();
        return;
      case "unsupported":
        return this.send(encodeOptionError(option, NBD_REP.ERR_UNSUP, `option ${optionName(option)} is not supported`));
      case "invalid":
        if (option === NBD_OPT.EXPORT_NAME) return this.closeNow("warn", request.reason);
        return this.send(encodeOptionError(option, NBD_REP.ERR_INVALID, request.reason));
    }
  }

  private infoReplies(option: number, info_types: number[]): Uint8Array[] {
    const { ctx } = this;
    const infos = [encodeInfoExport(ctx.limits.size_bytes, ctx.transmission_flags), encodeInfoBlockSize(ctx.block_sizes)];
    if (info_types.includes(NBD_INFO.NAME)) infos.push(encodeInfoName(ctx.export_name));
    if (info_types.includes(NBD_INFO.DESCRIPTION) && ctx.description) infos.push(encodeInfoDescription(ctx.description));
    return [...infos.map((info) => encodeOptionReply(option, NBD_REP.INFO, info)), encodeOptionReply(option, NBD_REP.ACK)];
  }

  private isOurExport(name: string): boolean {
    return name === "" || name === this.ctx.export_name;
  }

  private enterTransmission(): void {
    this.phase = "transmission";
    this.stopHandshakeTimer();
    this.ctx.log("debug", `${this.label}: transmission started (${this.structured_replies ? "structured" : "simple"} replies)`);
  }

  private readRequests(): void {
    this.blocked = false;
    while (this.phase === "transmission") {
      if (this.pending_write !== null) {
        const { request, check } = this.pending_write;
        const payload = this.receivePayload(request.length);
        if (payload === null) return;
        this.pending_write = null;
        if (check.kind === "reject") this.rejectRequest(request, check.error, check.reason);
        else this.startRequest(request, payload);
        continue;
      }
      if (this.rx.bytes < REQUEST_HEADER_BYTES) return;
      const parsed = this.parseHeader();
      if (parsed.kind === "need") return;
      if (parsed.kind === "error") return this.closeNow("warn", parsed.reason);
      const request = parsed.value;
      const cost_bytes = costBytes(request);
      if (!this.canStart(cost_bytes)) {
        this.blocked = true;
        return;
      }
      this.rx.discard(parsed.bytes);
      const check = checkRequest(request, this.ctx.limits);
      if (check.kind === "disconnect") return this.closeAfterDrain("debug", "client sent NBD_CMD_DISC");
      this.beginRequest(cost_bytes);
      if (check.kind === "reject" && check.close) {
        this.rejectRequest(request, check.error, check.reason);
        return this.closeAfterDrain("warn", check.reason);
      }
      if (request.command === NBD_CMD.WRITE) {
        if (request.length > this.ctx.limits.payload_bytes_max) throw new Error(`${this.label}: oversized WRITE passed validation`);
        this.pending_write = { request, check };
      }
      else if (check.kind === "reject") this.rejectRequest(request, check.error, check.reason);
      else this.startRequest(request, undefined);
    }
  }

  /**
   * The pending WRITE's payload once all of it is here, else null. A large one that has not
   * arrived is filled in its pooled buffer, the rest of it straight from the socket.
   */
  private receivePayload(length: number): Uint8Array | null {
    try {
      return this.rx.takeMessage(length, this.poolTake, this.read_queued);
    } catch (err) {
      if (!(err instanceof NativeError)) throw err;
      this.closeNow("warn", err.message);
      return null;
    }
  }

  /** In place when the header lies in one chunk (nearly always), else from an assembled copy. */
  private parseHeader(): ParseResult<NbdRequest> {
    const head = this.rx.head;
    if (head !== undefined && this.rx.headBytes() >= REQUEST_HEADER_BYTES) return parseRequestHeader(head, this.rx.headOffset);
    return parseRequestHeader(this.rx.peek(REQUEST_HEADER_BYTES));
  }

  private canStart(cost_bytes: number): boolean {
    if (this.in_flight_requests >= IN_FLIGHT_REQUESTS_MAX) return false;
    return this.in_flight_requests === 0 || this.in_flight_bytes + cost_bytes <= IN_FLIGHT_BYTES_MAX;
  }

  /** Counts a request in flight until its reply has been handed to the kernel. */
  private beginRequest(cost_bytes: number): void {
    this.in_flight_requests++;
    this.in_flight_bytes += cost_bytes;
  }

  /** Queues the reply; it leaves with the others of this tick (see flushSoon). */
  private finishRequest(request: NbdRequest, reply: Uint8Array): void {
    this.output(reply, 1, costBytes(request));
    this.flushSoon();
  }

  /** A successful reply without data: 16 bytes written straight into the cork buffer. */
  private finishOk(request: NbdRequest): void {
    if (this.phase === "closed") return;
    this.corkRoom(SIMPLE_REPLY_HEADER_BYTES);
    writeSimpleReplyHeader(this.cork!, 0, request.cookie, this.cork_bytes);
    this.cork_bytes += SIMPLE_REPLY_HEADER_BYTES;
    this.cork_requests++;
    this.cork_cost_bytes += costBytes(request);
    this.flushSoon();
  }

  /** Replies written to the kernel release their requests' in-flight budget. */
  private released(requests: number, cost_bytes: number): void {
    if (requests === 0) return;
    this.in_flight_requests -= requests;
    this.in_flight_bytes -= cost_bytes;
    if (this.in_flight_requests < 0 || this.in_flight_bytes < 0) throw new Error(`${this.label}: in-flight accounting went negative`);
    if (this.phase === "closing") this.maybeFinishClosing();
    else if (this.phase === "transmission") this.pump();
  }

  /** The first rejection of a connection is a warning (a client that sends bad requests is worth
   * knowing of); the rest are debug lines, so that such a client cannot flood the log. */
  private rejectRequest(request: NbdRequest, error: NbdErrorName, reason: string): void {
    const first = this.rejections++ === 0;
    this.ctx.log(first ? "warn" : "debug", `${this.label}: ${error} for ${reason}${first ? " (further rejections on this connection are logged at debug level)" : ""}`);
    this.finishRequest(request, this.errorReply(request, error, reason));
  }

  // ---- execution ----

  private startRequest(request: NbdRequest, payload: Uint8Array | undefined): void {
    this.executing++;
    // The common request, a plain WRITE, without the async frames of execute(): two fewer
    // promises and microtask turns per write (docs/performance.md, sixteenth round).
    if (request.command === NBD_CMD.WRITE && request.flags === 0 && payload !== undefined && payload.byteLength === request.length) {
      let done: Promise<void> | null;
      try {
        done = this.ctx.backend.write(request.offset, payload, false);
      } catch (err) {
        return this.requestDone(request, payload, this.failedReply(request, err));
      }
      if (done === null) return this.requestDone(request, payload, null);
      done.then(() => this.requestDone(request, payload, null), (err) => this.requestDone(request, payload, this.failedReply(request, err)));
      return;
    }
    void this.execute(request, payload);
  }

  /** Never rejects: a backend failure becomes an NBD error reply. */
  private async execute(request: NbdRequest, payload: Uint8Array | undefined): Promise<void> {
    let reply: Uint8Array | null;
    try {
      reply = await this.perform(request, payload);
    } catch (err) {
      reply = this.failedReply(request, err);
    }
    this.requestDone(request, payload, reply);
  }

  private failedReply(request: NbdRequest, err: unknown): Uint8Array {
    const code = (err as { code?: unknown } | null)?.code;
    const error = nbdErrorForErrnoName(code);
    const what = `${commandName(request.command)} offset ${request.offset} length ${request.length}`;
    this.ctx.log("error", `${this.label}: ${what} failed: ${(err as Error)?.message ?? String(err)} → ${error}`);
    return this.errorReply(request, error, `${what} failed with ${error}`);
  }

  /** The backend is done with a request: its reply (null for a plain success) is queued. */
  private requestDone(request: NbdRequest, payload: Uint8Array | undefined, reply: Uint8Array | null): void {
    // The backend is done with the payload once its promise settled (BlockBackend.write).
    if (payload !== undefined) this.pool.give(payload);
    if (--this.executing === 0 && this.settle_waiters.length > 0) {
      const waiters = this.settle_waiters;
      this.settle_waiters = [];
      for (const wake of waiters) wake();
    }
    if (reply === null) this.finishOk(request);
    else this.finishRequest(request, reply);
  }

  /** Runs one request against the backend; the reply to send, or null for a plain success. */
  private async perform(request: NbdRequest, payload: Uint8Array | undefined): Promise<Uint8Array | null> {
    const { backend } = this.ctx;
    const { offset, length, flags } = request;
    const fua = (flags & NBD_CMD_FLAG.FUA) !== 0;
    switch (request.command) {
      case NBD_CMD.READ:
        return await this.readReply(request);
      case NBD_CMD.WRITE:
        if (payload === undefined || payload.byteLength !== length) throw new Error(`${this.label}: WRITE without its ${length}-byte payload`);
        await backend.write(offset, payload, fua);
        break;
      case NBD_CMD.FLUSH:
        await backend.flush();
        break;
      case NBD_CMD.TRIM:
        await backend.trim(offset, length);
        if (fua) await backend.flush();
        break;
      case NBD_CMD.CACHE:
        break; // a prefetch hint: the backend has no cache worth warming
      case NBD_CMD.WRITE_ZEROES:
        if ((flags & NBD_CMD_FLAG.FAST_ZERO) !== 0) {
          // BlockBackend cannot promise that zeroing is cheaper than writing, so fail fast.
          return this.errorReply(request, "ENOTSUP", "fast zero is not supported");
        }
        await backend.writeZeroes(offset, length, (flags & NBD_CMD_FLAG.NO_HOLE) === 0);
        if (fua) await backend.flush();
        break;
      default:
        throw new Error(`${this.label}: ${commandName(request.command)} passed validation but has no handler`);
    }
    return null;
  }

  /** ONE buffer = reply header + data; the backend fills the data part in place. */
  private async readReply(request: NbdRequest): Promise<Uint8Array> {
    const header_bytes = this.structured_replies ? OFFSET_DATA_HEADER_BYTES : SIMPLE_REPLY_HEADER_BYTES;
    const reply = this.pool.take(header_bytes + request.length);
    if (this.structured_replies) writeOffsetDataHeader(reply, request.cookie, request.offset, request.length);
    else writeSimpleReplyHeader(reply, 0, request.cookie);
    await this.ctx.backend.read(request.offset, reply.subarray(header_bytes));
    return reply;
  }

  private recycle(buf: Uint8Array | null): void {
    if (buf !== null) this.pool.give(buf);
  }

  private errorReply(request: NbdRequest, error: NbdErrorName, message: string): Uint8Array {
    return this.structured_replies ? encodeErrorChunk(request.cookie, error, message) : encodeSimpleReply(error, request.cookie);
  }

  // ---- output ----

  private sendAll(parts: Uint8Array[]): void {
    for (const part of parts) this.output(part, 0, 0);
    this.flush();
  }

  /** Handshake messages go out at once (in order behind anything queued). */
  private send(bytes: Uint8Array): void {
    this.output(bytes, 0, 0);
    this.flush();
  }

  /** Appends to the output in order: small pieces into the cork buffer, large ones as they are. */
  private output(bytes: Uint8Array, requests: number, cost_bytes: number): void {
    if (this.phase === "closed") return;
    if (bytes.byteLength <= CORK_COPY_BYTES_MAX) {
      this.corkRoom(bytes.byteLength);
      this.cork!.set(bytes, this.cork_bytes);
      this.cork_bytes += bytes.byteLength;
      this.cork_requests += requests;
      this.cork_cost_bytes += cost_bytes;
      if (isReadReply(bytes, requests)) this.recycle(bytes);
      return;
    }
    this.flush();
    this.write(bytes, requests, cost_bytes, isReadReply(bytes, requests) ? bytes : null);
  }

  /** Makes room for `bytes` in the cork buffer, writing out what it holds if needed. */
  private corkRoom(bytes: number): void {
    this.cork ??= new Uint8Array(CORK_BYTES);
    if (this.cork_bytes + bytes > this.cork.byteLength) this.flush();
  }

  /** Sends the corked replies once nothing else can complete in this tick: at once when no backend
   * call is pending (the common QD1 case, and the last reply of a burst), else on the next turn. */
  private flushSoon(): void {
    // Requests the backend answers within the call (BlockBackend.write's null) finish while
    // their batch is still being read: pump() flushes once it has read all it can.
    if (this.pumping) return;
    if (this.executing === 0) return this.flush();
    if (this.flush_scheduled) return;
    this.flush_scheduled = true;
    setImmediate(() => {
      this.flush_scheduled = false;
      this.flush();
    });
  }

  /** Writes the cork buffer out (copying it into the queue only if the socket takes part of it). */
  private flush(): void {
    if (this.cork_bytes === 0 || this.phase === "closed") return;
    const { cork_requests, cork_cost_bytes } = this;
    const bytes = this.cork!.subarray(0, this.cork_bytes);
    this.cork_bytes = 0;
    this.cork_requests = 0;
    this.cork_cost_bytes = 0;
    if (this.tx.length > 0) {
      this.tx.push({ bytes: bytes.slice(), requests: cork_requests, cost_bytes: cork_cost_bytes, recycle: null });
      return;
    }
    const written = this.socket.write(bytes);
    if (written < 0) return; // closed under us; onClose cleans up
    if (written < bytes.byteLength) {
      this.tx.push({ bytes: bytes.slice(written), requests: cork_requests, cost_bytes: cork_cost_bytes, recycle: null });
      return;
    }
    this.released(cork_requests, cork_cost_bytes);
  }

  private write(bytes: Uint8Array, requests: number, cost_bytes: number, recycle: Uint8Array | null): void {
    if (this.tx.length === 0) {
      const written = this.socket.write(bytes);
      if (written < 0) return;
      if (written === bytes.byteLength) {
        this.recycle(recycle);
        return this.released(requests, cost_bytes);
      }
      bytes = bytes.subarray(written);
    }
    this.tx.push({ bytes, requests, cost_bytes, recycle });
  }

  private flushQueue(): void {
    let requests = 0;
    let cost_bytes = 0;
    while (this.tx.length > 0 && this.phase !== "closed") {
      const head = this.tx[0]!;
      const written = this.socket.write(head.bytes);
      if (written < 0) return;
      if (written < head.bytes.byteLength) {
        head.bytes = head.bytes.subarray(written);
        break;
      }
      this.tx.shift();
      this.recycle(head.recycle);
      requests += head.requests;
      cost_bytes += head.cost_bytes;
    }
    if (this.tx.length === 0) this.flush();
    if (requests > 0) this.released(requests, cost_bytes);
    else if (this.phase === "closing") this.maybeFinishClosing();
    else if (this.tx.length === 0 && this.phase === "transmission") this.pump();
  }

  private dropOutput(): void {
    this.tx.length = 0;
    this.cork_bytes = 0;
    this.cork_requests = 0;
    this.cork_cost_bytes = 0;
  }

  private updateReading(): void {
    const pause = this.blocked || this.rx.bytes >= RECEIVE_BYTES_MAX || this.phase === "closing";
    if (pause === this.reading_paused || this.phase === "closed") return;
    this.reading_paused = pause;
    if (pause) this.socket.pause();
    else this.socket.resume();
  }

  // ---- closing ----

  /** Stops reading; closes once in-flight requests are answered and the replies are sent. */
  private closeAfterDrain(level: LogLevel, reason: string): void {
    this.ctx.log(level, `${this.label}: closing: ${reason}`);
    this.phase = "closing";
    this.pending_write = null;
    this.rx.clear();
    this.updateReading();
    this.maybeFinishClosing();
  }

  private maybeFinishClosing(): void {
    if (this.phase !== "closing" || this.in_flight_requests > 0 || this.tx.length > 0 || this.cork_bytes > 0) return;
    this.phase = "closed";
    this.socket.end();
  }

  /** Protocol violation: drop the connection now, queued replies included. */
  private closeNow(level: LogLevel, reason: string): void {
    this.ctx.log(level, `${this.label}: closing connection: ${reason}`);
    this.phase = "closed";
    this.dropOutput();
    this.rx.clear();
    this.pending_write = null;
    this.socket.end();
  }
}

/** Data bytes a request holds while in flight (READ reply buffer or WRITE payload). */
function costBytes(request: NbdRequest): number {
  if (request.command !== NBD_CMD.READ && request.command !== NBD_CMD.WRITE) return 0;
  return Math.min(request.length, PAYLOAD_BYTES_MAX);
}
