// hastctl side of the control socket: one request line out, one reply line back, and for a stream
// (`events`) the lines that follow it until hastd ends it.
import type { Address } from "../config/index.ts";
import { formatAddress } from "../config/index.ts";
import { EX_OSERR, EX_UNAVAILABLE, ExitError } from "../core/sysexits.ts";
import { CONTROL_LINE_MAX_BYTES, encodeControlLine, parseControlReply, type ControlReply, type ControlRequest } from "../wire/control.ts";
import { debug } from "./debug.ts";

/** FreeBSD hastctl waits 20 s for the control connection, whatever the config says. */
export const CONTROL_TIMEOUT_MS = 20_000;
/**
 * A role change may take longer: hastd stops the old worker (30 s, then SIGKILL and at most 30 s
 * more), flushes the component (at most 120 s) and waits for a new primary worker to serve (at
 * most 60 s). Giving up sooner would report a failure for a change that then takes effect.
 */
export const ROLE_TIMEOUT_MS = 300_000;
/** The longest line hastd may send (a status reply of many resources). */
const REPLY_LINE_MAX_BYTES = CONTROL_LINE_MAX_BYTES * 64;

/** Handles one line from hastd; returns false when it wants no more (the connection is closed). */
type LineHandler = (line: string, where: string) => boolean;

/** Sends `request`, hands hastd's lines to `onLine` until it wants no more, and resolves with
 * whether it got there (false: hastd closed the connection first). `timeout_ms` bounds the wait
 * for the first line only; a line that is not what `onLine` expects rejects with its ExitError. */
function exchange(address: Address, request: ControlRequest, onLine: LineHandler, timeout_ms: number): Promise<boolean> {
  if (address.kind !== "uds") throw new ExitError(`control address ${formatAddress(address)} is not a unix socket`, EX_OSERR);
  const where = formatAddress(address);
  return new Promise<boolean>((resolve, reject) => {
    let received = "";
    let lines = 0;
    let connected = false;
    let settled = false;
    const decoder = new TextDecoder();
    const finish = (err: ExitError | null, done = false) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(done);
    };
    let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(() => {
      const late = connected && request.cmd === "role" ? " (the role change may still take effect: hastctl status tells)" : "";
      finish(new ExitError(`no reply from hastd at ${where} within ${timeout_ms / 1000} s${late}`, connected ? EX_UNAVAILABLE : EX_OSERR));
    }, timeout_ms);
    const unreachable = (err: Error) => {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === "ENOENT" || code === "ECONNREFUSED" ? "hastd is not running"
        : code === "EACCES" || code === "EPERM" ? "permission denied (the control socket is mode 0600, for the user hastd runs as)" : err.message;
      finish(new ExitError(`cannot connect to hastd at ${where}: ${reason}`, EX_OSERR));
    };
    Bun.connect({
      unix: address.path,
      socket: {
        open(socket) {
          connected = true;
          const line = encodeControlLine(request);
          debug(1, `to ${where}: ${line.trimEnd()}`);
          socket.write(line);
          socket.flush();
        },
        data(socket, chunk) {
          received += decoder.decode(chunk, { stream: true });
          for (let nl = received.indexOf("\n"); nl >= 0 && !settled; nl = received.indexOf("\n")) {
            const line = received.slice(0, nl);
            received = received.slice(nl + 1);
            debug(lines++ === 0 ? 1 : 2, `from ${where}: ${line}`);
            clearTimeout(timer);
            timer = undefined;
            let more: boolean;
            try {
              more = onLine(line, where);
            } catch (err) {
              finish(err instanceof ExitError ? err : new ExitError((err as Error).message, EX_UNAVAILABLE));
              socket.end();
              return;
            }
            // Settle before end(): end() runs the close handler synchronously.
            if (!more) {
              finish(null, true);
              socket.end();
              return;
            }
          }
          if (received.length > REPLY_LINE_MAX_BYTES) {
            finish(new ExitError(`reply from hastd at ${where} is too long`, EX_UNAVAILABLE));
            socket.end();
          }
        },
        close() {
          finish(null, false);
        },
        error(_socket, err) {
          finish(new ExitError(`control connection to ${where} failed: ${err.message}`, EX_UNAVAILABLE));
        },
        connectError(_socket, err) {
          unreachable(err);
        },
      },
    }).catch(unreachable);
  });
}

function parseReply(line: string, where: string): ControlReply {
  const parsed = parseControlReply(line);
  if (!parsed.ok) throw new ExitError(`malformed reply from hastd at ${where}: ${parsed.error}`, EX_UNAVAILABLE);
  return parsed.value;
}

export async function controlRequest(address: Address, request: ControlRequest,
  timeout_ms = request.cmd === "role" ? ROLE_TIMEOUT_MS : CONTROL_TIMEOUT_MS): Promise<ControlReply> {
  let reply: ControlReply | undefined;
  await exchange(address, request, (line, where) => {
    reply = parseReply(line, where);
    return false;
  }, timeout_ms);
  if (!reply) throw new ExitError(`hastd at ${formatAddress(address)} closed the connection without a reply`, EX_UNAVAILABLE);
  return reply;
}

/** A request answered by a stream: `onReply` gets the reply (returns false to end there), then
 * `onLine` every line after it. Resolves when hastd closes the stream. */
export async function controlStream(
  address: Address, request: ControlRequest, onReply: (reply: ControlReply) => boolean, onLine: LineHandler,
): Promise<void> {
  let replied = false;
  const where = formatAddress(address);
  const ended_by_us = await exchange(address, request, (line, at) => {
    if (replied) return onLine(line, at);
    replied = true;
    return onReply(parseReply(line, at));
  }, CONTROL_TIMEOUT_MS);
  if (!replied) throw new ExitError(`hastd at ${where} closed the connection without a reply`, EX_UNAVAILABLE);
  if (!ended_by_us) throw new ExitError(`hastd at ${where} closed the event stream`, EX_UNAVAILABLE);
}
