// hastd's control socket: JSON lines (docs/control.md), mode 0600 so only root can steer roles.
// Bad, oversized or unknown requests get an error reply; nothing a client sends can crash hastd.
import type { Socket, UnixSocketListener } from "bun";
import { prepareSocketPath, removeSocket, restrictSocket } from "../io/unix-socket.ts";
import {
  CONTROL_LINE_MAX_BYTES, ControlError, encodeControlLine, parseControlRequest,
  type ControlReply, type ControlRequest,
} from "../wire/control.ts";
import type { Logger } from "./log.ts";

type Handler = (request: ControlRequest) => Promise<ControlReply>;

interface ConnState {
  buffer: string;
  busy: boolean;
  decoder: TextDecoder;
  /** Reply bytes the kernel has not taken yet; while any wait, no new request is read. */
  out: Uint8Array[];
}

/** Sends what the socket takes now, keeps the rest for `drain`; reading pauses meanwhile. */
function flushOut(socket: Socket<ConnState>): void {
  const out = socket.data.out;
  while (out.length > 0) {
    const head = out[0]!;
    const n = socket.write(head);
    if (n < 0) {
      out.length = 0;
      return;
    }
    if (n < head.length) {
      out[0] = head.subarray(n);
      socket.pause();
      return;
    }
    out.shift();
  }
  socket.resume();
}

export class ControlServer {
  private constructor(
    private listener: UnixSocketListener<ConnState>,
    readonly path: string,
  ) {}

  static async start(path: string, handler: Handler, log: Logger): Promise<ControlServer> {
    await prepareSocketPath(path, "control socket");
    const encoder = new TextEncoder();
    const reply = (socket: Socket<ConnState>, message: ControlReply) => {
      socket.data.out.push(encoder.encode(encodeControlLine(message)));
      flushOut(socket);
    };
    const listener = Bun.listen<ConnState>({
      unix: path,
      socket: {
        open(socket) {
          socket.data = { buffer: "", busy: false, decoder: new TextDecoder(), out: [] };
        },
        data(socket, chunk) {
          const state = socket.data;
          state.buffer += state.decoder.decode(chunk, { stream: true });
          if (state.buffer.length > CONTROL_LINE_MAX_BYTES && !state.buffer.includes("\n")) {
            reply(socket, { error: ControlError.INVALID, message: `request longer than ${CONTROL_LINE_MAX_BYTES} bytes`, resources: [] });
            socket.end();
            return;
          }
          void drainRequests(socket);
        },
        drain(socket) {
          flushOut(socket);
        },
        error(_socket, err) {
          log.debug(`control connection error: ${err.message}`);
        },
      },
    });
    // One request at a time per connection, in order; a slow role change never interleaves replies.
    async function drainRequests(socket: Socket<ConnState>): Promise<void> {
      const state = socket.data;
      if (state.busy) return;
      state.busy = true;
      try {
        for (let nl = state.buffer.indexOf("\n"); nl >= 0; nl = state.buffer.indexOf("\n")) {
          const line = state.buffer.slice(0, nl).trim();
          state.buffer = state.buffer.slice(nl + 1);
          if (!line) continue;
          const parsed = parseControlRequest(line);
          if (!parsed.ok) {
            log.warn(`control: rejected request: ${parsed.error}`);
            reply(socket, { error: ControlError.INVALID, message: parsed.error, resources: [] });
            continue;
          }
          try {
            reply(socket, await handler(parsed.value));
          } catch (err) {
            log.error(`control: ${parsed.value.cmd} failed: ${(err as Error).message}`);
            reply(socket, { error: ControlError.INVALID, message: (err as Error).message, resources: [] });
          }
        }
      } finally {
        state.busy = false;
      }
    }
    restrictSocket(path);
    return new ControlServer(listener, path);
  }

  stop(): void {
    this.listener.stop(true);
    removeSocket(this.path);
  }
}
