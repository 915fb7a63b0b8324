// hastd's control socket: JSON lines (docs/control.md), mode 0600 so only root can steer roles.
// Bad, oversized or unknown requests get an error reply; nothing a client sends can crash hastd.
// A request answered by a stream (`events`) keeps its connection: the lines follow the reply, and a
// client that falls EVENT_BACKLOG_MAX_BYTES behind is disconnected rather than waited for.
import type { Socket, UnixSocketListener } from "bun";
import { listenRestricted, prepareSocketPath, removeSocket } from "../io/unix-socket.ts";
import {
  CONTROL_LINE_MAX_BYTES, ControlError, encodeControlLine, parseControlRequest,
  type ControlEvent, type ControlReply, type ControlRequest, type ControlStreamEnd,
} from "../wire/control.ts";
import type { Logger } from "./log.ts";

/** Stream lines a client has not taken yet beyond which its stream is dropped. */
export const EVENT_BACKLOG_MAX_BYTES = 1024 * 1024;
/** Requests a client may send ahead of their replies (bytes not yet handled). Beyond, it is cut off. */
export const CONTROL_PIPELINE_MAX_BYTES = 4 * CONTROL_LINE_MAX_BYTES;
/** Requests handled in a row before the event loop gets a turn. */
const YIELD_EVERY_LINES = 64;

/** A reply after which the connection carries more lines, until either side ends it. */
export interface ControlStream {
  reply: ControlReply;
  /** The reply is queued: `send` queues a line, `end` writes the last one (`{"end": why}`) and
   * closes. Returns what to call when the connection closes. */
  attach(send: (message: ControlEvent) => void, end: (why: string) => void): () => void;
}

type Handler = (request: ControlRequest) => Promise<ControlReply | ControlStream>;

interface ConnState {
  buffer: string;
  /** A request is being handled: no more is read (nor handled) until its reply is out. */
  busy: boolean;
  /** The connection was ended here: nothing more is read. */
  ended: boolean;
  /** Requests refused as malformed on this connection (the first is logged as a warning). */
  rejected: number;
  decoder: TextDecoder;
  /** Reply bytes the kernel has not taken yet; while any wait, no new request is read. */
  out: Uint8Array[];
  out_bytes: number;
  /** Set while the connection carries a stream: it reads no more requests. */
  detach: (() => void) | null;
  closed: boolean;
}

/** Sends what the socket takes now, keeps the rest for `drain`; reading pauses meanwhile (the
 * `drain` handler starts it again once all is out). */
function flushOut(socket: Socket<ConnState>): void {
  const state = socket.data;
  const out = state.out;
  while (out.length > 0) {
    const head = out[0]!;
    const n = socket.write(head);
    if (n < 0) {
      out.length = 0;
      state.out_bytes = 0;
      return;
    }
    state.out_bytes -= n;
    if (n < head.length) {
      out[0] = head.subarray(n);
      socket.pause();
      return;
    }
    out.shift();
  }
}

export class ControlServer {
  private constructor(
    private listener: UnixSocketListener<ConnState>,
    readonly path: string,
  ) {}

  static async start(path: string, handler: Handler, log: Logger): Promise<ControlServer> {
    await prepareSocketPath(path, "control socket");
    const encoder = new TextEncoder();
    const reply = (socket: Socket<ConnState>, message: ControlReply | ControlEvent | ControlStreamEnd) => {
      const line = encoder.encode(encodeControlLine(message));
      socket.data.out.push(line);
      socket.data.out_bytes += line.length;
      flushOut(socket);
    };
    const stream = (socket: Socket<ConnState>, s: ControlStream) => {
      if (socket.data.closed) {
        s.attach(() => {}, () => {})();
        return;
      }
      let open = true;
      reply(socket, s.reply);
      socket.data.detach = s.attach(
        (event) => {
          if (!open) return;
          if (socket.data.out_bytes > EVENT_BACKLOG_MAX_BYTES) {
            open = false;
            log.warn(`control: an event stream fell ${EVENT_BACKLOG_MAX_BYTES} bytes behind; disconnecting it.`);
            socket.data.out.length = 0;
            socket.data.out_bytes = 0;
            socket.end();
            return;
          }
          reply(socket, event);
        },
        (why) => {
          if (!open) return;
          open = false;
          reply(socket, { end: why });
          socket.end();
        },
      );
    };
    const listener = listenRestricted(path, () => Bun.listen<ConnState>({
      unix: path,
      socket: {
        open(socket) {
          socket.data = {
            buffer: "", busy: false, ended: false, rejected: 0, decoder: new TextDecoder(), out: [], out_bytes: 0, detach: null, closed: false,
          };
        },
        data(socket, chunk) {
          const state = socket.data;
          if (state.detach || state.ended) return;
          state.buffer += state.decoder.decode(chunk, { stream: true });
          const line_too_long = state.buffer.length > CONTROL_LINE_MAX_BYTES && !state.buffer.includes("\n");
          if (line_too_long || state.buffer.length > CONTROL_PIPELINE_MAX_BYTES) {
            const message = line_too_long ? `request longer than ${CONTROL_LINE_MAX_BYTES} bytes` : `more than ${CONTROL_PIPELINE_MAX_BYTES} bytes of requests ahead of their replies`;
            reply(socket, { error: ControlError.INVALID, message, resources: [] });
            state.ended = true;
            state.buffer = "";
            socket.end();
            return;
          }
          void drainRequests(socket);
        },
        drain(socket) {
          flushOut(socket);
          if (socket.data.out_bytes === 0) void drainRequests(socket);
        },
        close(socket) {
          socket.data.closed = true;
          const detach = socket.data.detach;
          socket.data.detach = null;
          detach?.();
        },
        error(_socket, err) {
          log.debug(`control connection error: ${err.message}`);
        },
      },
    }));
    // One request at a time per connection, in order; a slow role change never interleaves replies.
    // Nothing is read while one is handled or a reply waits for the client to take it: what a
    // client sends ahead stays bounded (CONTROL_PIPELINE_MAX_BYTES), and so do the replies queued.
    async function drainRequests(socket: Socket<ConnState>): Promise<void> {
      const state = socket.data;
      if (state.busy) return;
      if (state.detach) {
        // A stream handles no more requests, but must see the close.
        if (state.out_bytes === 0) socket.resume();
        return;
      }
      state.busy = true;
      socket.pause();
      let handled = 0;
      try {
        for (let nl = state.buffer.indexOf("\n"); nl >= 0 && state.out_bytes === 0 && !state.ended; nl = state.buffer.indexOf("\n")) {
          const line = state.buffer.slice(0, nl).trim();
          state.buffer = state.buffer.slice(nl + 1);
          if (!line) continue;
          // A client that sends lines by the thousand gets them handled between other work.
          if (++handled % YIELD_EVERY_LINES === 0) await new Promise((resolve) => setImmediate(resolve));
          const parsed = parseControlRequest(line);
          if (!parsed.ok) {
            if (state.rejected++ === 0) log.warn(`control: rejected request: ${parsed.error}`);
            else log.debug(`control: rejected request: ${parsed.error}`);
            reply(socket, { error: ControlError.INVALID, message: parsed.error, resources: [] });
            continue;
          }
          try {
            const answer = await handler(parsed.value);
            if ("attach" in answer) {
              stream(socket, answer);
              return;
            }
            reply(socket, answer);
          } catch (err) {
            log.error(`control: ${parsed.value.cmd} failed: ${(err as Error).message}`);
            reply(socket, { error: ControlError.INVALID, message: (err as Error).message, resources: [] });
          }
        }
      } finally {
        state.busy = false;
        // A stream reads nothing either, but must see the close.
        if (!state.ended && state.out_bytes === 0) socket.resume();
      }
    }
    return new ControlServer(listener, path);
  }

  stop(): void {
    this.listener.stop(true);
    removeSocket(this.path);
  }
}
