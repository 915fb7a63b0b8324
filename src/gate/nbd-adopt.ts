// Serves one already-connected descriptor in NBD transmission phase. The kernel nbd client
// (platform.md 3) is handed the other end of a socketpair and never handshakes: size and flags
// reach it through the attach call instead, and it expects simple replies only.
import type { Socket } from "bun";
import { NbdConnection } from "./nbd-connection.ts";
import { exportContext, type NbdServerOptions } from "./nbd-server.ts";

/** How long stop() waits for the backend calls of the connection to settle. */
const STOP_SETTLE_MS = 10_000;

export type AdoptOptions = Omit<NbdServerOptions, "listen" | "max_connections">;

export interface AdoptedConnection {
  /** Transmission flags (NBD_FLAG_*) the peer must be told out of band, e.g. NBD_ATTR_SERVER_FLAGS. */
  readonly transmission_flags: number;
  /** Resolves when the socket closed, from either side. */
  readonly closed: Promise<void>;
  /** Closes the socket and waits (bounded) for backend calls already started. */
  stop(): Promise<void>;
}

/** Takes ownership of fd (Bun closes it with the socket) and answers requests on it at once. */
export async function adoptTransmission(fd: number, opts: AdoptOptions): Promise<AdoptedConnection> {
  const ctx = exportContext(opts);
  const label = `nbd ${opts.export_name} fd ${fd} (transmission only)`;
  let connection: NbdConnection | undefined;
  let markClosed!: () => void;
  const closed = new Promise<void>((resolve) => (markClosed = resolve));
  // Bun.connect accepts { fd } at run time; its type definitions only list host/port and unix.
  const options = {
    fd,
    socket: {
      binaryType: "uint8array" as const,
      // open runs before Bun.connect resolves, so no request can arrive before the connection exists.
      open: (socket: Socket<undefined>) => {
        connection = new NbdConnection(socket as Socket<unknown>, ctx, label);
        connection.openInTransmission();
      },
      data: (_s: Socket<undefined>, chunk: Uint8Array) => connection?.onData(chunk),
      drain: () => connection?.onDrain(),
      close: () => {
        connection?.onClose();
        ctx.log("debug", `${label}: closed`);
        markClosed();
      },
      error: (_s: Socket<undefined>, err: Error) => ctx.log("warn", `${label}: socket error: ${err.message}`),
    },
  };
  const socket = await Bun.connect(options as unknown as Parameters<typeof Bun.connect>[0]) as Socket<undefined>;
  const adopted = connection;
  if (adopted === undefined) throw new Error(`${label}: socket opened without its open handler running`);
  return {
    transmission_flags: ctx.transmission_flags,
    closed,
    async stop() {
      const settled = adopted.settled();
      socket.end();
      const timer = Bun.sleep(STOP_SETTLE_MS).then(() => "timeout" as const);
      if ((await Promise.race([settled, timer])) === "timeout") {
        ctx.log("warn", `${label}: backend calls still running ${STOP_SETTLE_MS} ms after stop`);
      }
    },
  };
}
