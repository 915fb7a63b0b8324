// A connected byte stream for the peer link, whichever socket API carries it: Bun.connect for the
// primary's outgoing connection, node:net when it must bind a `source` address (Bun.connect
// cannot), and Bun.connect({ fd }) for the secondary worker, which adopts a socket the main
// process accepted. Writes are queued here so callers never see a partial write, and what waits
// in a queue is a copy: the caller may reuse its buffer as soon as write() returns (PeerLink
// refills its cork buffer at once), unless it says the bytes stay as they are until answered.
// Bun's own sockets keep a deep write queue moving several times faster than node:net does:
// measured 965 vs 398 MiB/s with 16 MiB in flight on loopback (docs/performance.md).
import net from "node:net";
import type { Socket } from "bun";
import type { QueuedRead } from "../wire/receive-buffer.ts";
import { queuedRead, socketFd } from "./queued-read.ts";

export interface StreamHandlers {
  data(chunk: Uint8Array): void;
  close(reason: string): void;
}

export interface ByteStream {
  /** Sends bytes in order; what the kernel does not take at once is copied and queued, unless the
   * caller vouches (`stable`) that the bytes stay unchanged until sent or the stream closed. */
  write(bytes: Uint8Array, stable?: boolean): void;
  /** Bytes accepted by write() but not yet handed to the kernel. */
  readonly queued_bytes: number;
  /** Reads bytes queued behind the delivered ones; only from inside the data handler, and only
   * where the socket API delivers every read at once (Bun's own sockets, not node:net). */
  readonly read_queued?: QueuedRead;
  /** The socket's descriptor, for moving bulk data straight between it and a file (sendfile,
   * splice) by the rules of src/io/queued-read.ts: writes only while nothing is queued here,
   * reads only from inside the data handler. Bun's own sockets only. */
  readonly fd?: number;
  readonly remote: string;
  close(): void;
}

export interface TcpTarget {
  host: string;
  port: number;
  family: 0 | 4 | 6;
  source?: { host: string; port: number } | null;
}

/** Connects; rejects with a one-line reason after timeout_ms. */
export function connectTcp(target: TcpTarget, handlers: StreamHandlers, timeout_ms: number): Promise<ByteStream> {
  return target.source ? connectNode(target, handlers, timeout_ms) : connectBun(target, handlers, timeout_ms);
}

function connectNode(target: TcpTarget, handlers: StreamHandlers, timeout_ms: number): Promise<ByteStream> {
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
    write: (bytes, stable) => {
      // node:net keeps a reference to whatever it cannot send at once; there is no telling which.
      if (!closed) socket.write(stable ? bytes : copyOf(bytes));
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
  const stream = new BunStream(handlers);
  const socket = await Bun.connect({ fd, socket: stream.socketHandlers() } as unknown as Parameters<typeof Bun.connect>[0]);
  return stream.attach(socket as unknown as Socket<undefined>);
}

/** Bun.connect: what the primary uses unless it must bind a source address. */
function connectBun(target: TcpTarget, handlers: StreamHandlers, timeout_ms: number): Promise<ByteStream> {
  const stream = new BunStream(handlers);
  const where = `${target.host}:${target.port}`;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`connect to ${where} timed out after ${timeout_ms / 1000} s`)), timeout_ms);
  });
  const connecting = Bun.connect({ hostname: target.host, port: target.port, socket: stream.socketHandlers() });
  return Promise.race([connecting, timeout]).then(
    (socket) => stream.attach(socket as unknown as Socket<undefined>),
    (err: Error) => {
      // A connect that completes after the timeout is closed at once.
      void connecting.then((late) => late.end(), () => undefined);
      throw err.message.startsWith("connect to ") ? err : new Error(`connect to ${where} failed: ${err.message}`);
    },
  ).finally(() => clearTimeout(timer));
}

/** A Bun socket with a write queue: Bun's write() may take part of a buffer; the rest waits for drain. */
class BunStream implements ByteStream {
  private readonly queue: Uint8Array[] = [];
  /** Per queue entry, the copy it is (part of), freed once written; null for the caller's bytes. */
  private readonly copies: (Uint8Array<ArrayBuffer> | null)[] = [];
  private queued = 0;
  private closed = false;
  private socket: Socket<undefined> | null = null;
  remote = "";
  read_queued: QueuedRead | undefined;
  fd: number | undefined;

  constructor(private readonly handlers: StreamHandlers) {}

  socketHandlers() {
    return {
      binaryType: "uint8array" as const,
      data: (_s: Socket<undefined>, chunk: Uint8Array) => this.handlers.data(chunk),
      drain: (s: Socket<undefined>) => this.flush(s),
      close: () => this.lost("connection closed"),
      end: () => this.lost("connection closed by peer"),
      error: (_s: Socket<undefined>, err: Error) => this.lost(err.message),
    };
  }

  attach(socket: Socket<undefined>): ByteStream {
    this.socket = socket;
    socket.setNoDelay(true);
    this.remote = `${socket.remoteAddress}`;
    this.fd = socketFd(socket as Socket<unknown>);
    this.read_queued = this.fd === undefined ? undefined : queuedRead(this.fd, `peer ${this.remote}`);
    return this;
  }

  get queued_bytes(): number {
    return this.queued;
  }

  write(bytes: Uint8Array, stable = false): void {
    if (this.closed || bytes.length === 0) return;
    let rest = bytes;
    if (this.queue.length === 0 && this.socket) {
      const n = this.socket.write(bytes);
      if (n < 0) return this.lost("write on a closed socket");
      if (n === bytes.length) return;
      rest = bytes.subarray(n);
    }
    const copy = stable ? null : copyOf(rest);
    this.queue.push(copy ?? rest);
    this.copies.push(copy);
    this.queued += rest.length;
  }

  close(): void {
    this.socket?.end();
    this.lost("closed locally");
  }

  private flush(s: Socket<undefined>): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = s.write(head);
      if (n < 0) return this.lost("write on a closed socket");
      this.queued -= n;
      if (n < head.length) {
        this.queue[0] = head.subarray(n);
        return;
      }
      this.queue.shift();
      const copy = this.copies.shift();
      // Freed now, not at some later collection: async writes stream copies through here, and
      // left to the collector they raised the worker's peak RSS by tens of MiB.
      if (copy) copy.buffer.transfer(0);
    }
  }

  private lost(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.close(reason);
  }
}

/** A copy whatever the view: Buffer#slice (payloads are Buffers) returns a view, not a copy. */
function copyOf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes);
}
