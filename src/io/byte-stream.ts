// A connected byte stream for the peer link, whichever socket API carries it: node:net for the
// primary's outgoing connection (it can bind the `source` address, Bun.connect cannot) and
// Bun.connect({ fd }) for the secondary worker, which adopts a socket the main process accepted.
// Writes are queued here so callers never see a partial write.
import net from "node:net";
import type { Socket } from "bun";

export interface StreamHandlers {
  data(chunk: Uint8Array): void;
  close(reason: string): void;
}

export interface ByteStream {
  /** Queues bytes; they are sent in order. The caller must not modify them afterwards. */
  write(bytes: Uint8Array): void;
  /** Bytes accepted by write() but not yet handed to the kernel. */
  readonly queued_bytes: number;
  readonly remote: string;
  close(): void;
}

export interface TcpTarget {
  host: string;
  port: number;
  family: 0 | 4 | 6;
  source?: { host: string; port: number } | null;
}

/** Connects with node:net; rejects with a one-line reason after timeout_ms. */
export function connectTcp(target: TcpTarget, handlers: StreamHandlers, timeout_ms: number): Promise<ByteStream> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({
      host: target.host, port: target.port, noDelay: true,
      ...(target.family ? { family: target.family } : {}),
      ...(target.source ? { localAddress: target.source.host, localPort: target.source.port || undefined } : {}),
    });
    let open = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connect to ${target.host}:${target.port} timed out after ${timeout_ms / 1000} s`));
    }, timeout_ms);
    socket.once("connect", () => {
      clearTimeout(timer);
      open = true;
      socket.setNoDelay(true);
      resolve(nodeStream(socket, handlers));
    });
    socket.once("error", (err) => {
      if (open) return;
      clearTimeout(timer);
      reject(new Error(`connect to ${target.host}:${target.port} failed: ${err.message}`));
    });
  });
}

function nodeStream(socket: net.Socket, handlers: StreamHandlers): ByteStream {
  let closed = false;
  const close = (reason: string) => {
    if (closed) return;
    closed = true;
    handlers.close(reason);
  };
  socket.on("data", (chunk: Buffer) => handlers.data(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  socket.on("error", (err) => close(err.message));
  socket.on("end", () => close("connection closed by peer"));
  socket.on("close", () => close("connection closed"));
  return {
    write: (bytes) => {
      if (!closed) socket.write(bytes);
    },
    get queued_bytes() {
      return socket.writableLength;
    },
    remote: `${socket.remoteAddress}:${socket.remotePort}`,
    close: () => {
      socket.destroy();
      close("closed locally");
    },
  };
}

/** Adopts an already connected socket descriptor (the secondary worker's fd 3). */
export async function adoptFd(fd: number, handlers: StreamHandlers): Promise<ByteStream> {
  const queue: Uint8Array[] = [];
  let queued = 0;
  let closed = false;
  const close = (reason: string) => {
    if (closed) return;
    closed = true;
    handlers.close(reason);
  };
  const flush = (s: Socket<undefined>) => {
    while (queue.length > 0) {
      const head = queue[0]!;
      const n = s.write(head);
      if (n < 0) return close("write on a closed socket");
      queued -= n;
      if (n < head.length) {
        queue[0] = head.subarray(n);
        return;
      }
      queue.shift();
    }
  };
  const socket = await Bun.connect({
    fd,
    socket: {
      binaryType: "uint8array",
      data: (_s: Socket<undefined>, chunk: Uint8Array) => handlers.data(chunk),
      drain: (s: Socket<undefined>) => flush(s),
      close: () => close("connection closed"),
      end: () => close("connection closed by peer"),
      error: (_s: Socket<undefined>, err: Error) => close(err.message),
    },
  } as unknown as Parameters<typeof Bun.connect>[0]) as unknown as Socket<undefined>;
  socket.setNoDelay(true);
  return {
    write: (bytes) => {
      if (closed || bytes.length === 0) return;
      queue.push(bytes);
      queued += bytes.length;
      if (queue.length === 1) flush(socket);
    },
    get queued_bytes() {
      return queued;
    },
    remote: `${socket.remoteAddress}`,
    close: () => {
      socket.end();
      close("closed locally");
    },
  };
}
