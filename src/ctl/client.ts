// hastctl side of the control socket: one request line out, one reply line back.
import type { Address } from "../config/index.ts";
import { formatAddress } from "../config/index.ts";
import { EX_OSERR, EX_UNAVAILABLE, ExitError } from "../core/sysexits.ts";
import { CONTROL_LINE_MAX_BYTES, encodeControlLine, type ControlReply, type ControlRequest } from "../wire/control.ts";

/** FreeBSD hastctl waits 20 s for the control connection, whatever the config says. */
export const CONTROL_TIMEOUT_MS = 20_000;

export async function controlRequest(address: Address, request: ControlRequest, timeout_ms = CONTROL_TIMEOUT_MS): Promise<ControlReply> {
  if (address.kind !== "uds") throw new ExitError(`control address ${formatAddress(address)} is not a unix socket`, EX_OSERR);
  const where = formatAddress(address);
  return await new Promise<ControlReply>((resolve, reject) => {
    let received = "";
    let connected = false;
    let settled = false;
    const finish = (err: ExitError | null, reply?: ControlReply) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => {
      finish(new ExitError(`no reply from hastd at ${where} within ${timeout_ms / 1000} s`, connected ? EX_UNAVAILABLE : EX_OSERR));
    }, timeout_ms);
    Bun.connect({
      unix: address.path,
      socket: {
        open(socket) {
          connected = true;
          socket.write(encodeControlLine(request));
          socket.flush();
        },
        data(socket, chunk) {
          received += new TextDecoder().decode(chunk);
          if (received.length > CONTROL_LINE_MAX_BYTES * 64) {
            finish(new ExitError(`reply from hastd at ${where} is too long`, EX_UNAVAILABLE));
            socket.end();
            return;
          }
          const nl = received.indexOf("\n");
          if (nl < 0) return;
          // Settle before end(): end() runs the close handler synchronously.
          try {
            finish(null, JSON.parse(received.slice(0, nl)) as ControlReply);
          } catch {
            finish(new ExitError(`malformed reply from hastd at ${where}`, EX_UNAVAILABLE));
          }
          socket.end();
        },
        close() {
          finish(new ExitError(`hastd at ${where} closed the connection without a reply`, EX_UNAVAILABLE));
        },
        error(_socket, err) {
          finish(new ExitError(`control connection to ${where} failed: ${err.message}`, EX_UNAVAILABLE));
        },
        connectError(_socket, err) {
          const reason = (err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ECONNREFUSED"
            ? "hastd is not running" : err.message;
          finish(new ExitError(`cannot connect to hastd at ${where}: ${reason}`, EX_OSERR));
        },
      },
    }).catch((err: Error) => {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === "ENOENT" || code === "ECONNREFUSED" ? "hastd is not running" : err.message;
      finish(new ExitError(`cannot connect to hastd at ${where}: ${reason}`, EX_OSERR));
    });
  });
}
