// NBD server for one export (docs/nbd.md): listens on a unix socket (mode 0600) or TCP, serves
// any number of concurrent connections up to max_connections from one BlockBackend, so
// NBD_FLAG_CAN_MULTI_CONN holds (one process, one backing store).
import { lstatSync, unlinkSync } from "node:fs";
import type { Socket, TCPSocketListener, UnixSocketListener } from "bun";
import { listenRestricted } from "../io/unix-socket.ts";
import { NBD_FLAG, PAYLOAD_BYTES_MAX, PREFERRED_BLOCK_BYTES } from "../wire/nbd.ts";
import type { BlockBackend } from "./block-backend.ts";
import { HANDSHAKE_TIMEOUT_S, NbdConnection, type ExportContext, type LogLevel } from "./nbd-connection.ts";

export interface NbdServerOptions {
  listen: { unix: string } | { hostname: string; port: number };
  export_name: string;
  description?: string;
  backend: BlockBackend;
  read_only?: boolean;
  log?: (level: LogLevel, msg: string) => void;
  max_connections?: number;
  /** Whole-handshake deadline (tests use a short one); HANDSHAKE_TIMEOUT_S by default. */
  handshake_timeout_ms?: number;
}

export const MAX_CONNECTIONS_DEFAULT = 64;
/** How long stop() waits for backend calls of closed connections to settle. */
const STOP_SETTLE_MS = 10_000;
const STALE_PROBE_MS = 1_000;

type Listener = UnixSocketListener<NbdConnection | undefined> | TCPSocketListener<NbdConnection | undefined>;

export class NbdServer {
  private readonly live = new Set<NbdConnection>();
  private next_id = 1;
  private listener: Listener | undefined;
  private stopped = false;

  private constructor(
    private readonly ctx: ExportContext,
    private readonly max_connections: number,
    private readonly listen: NbdServerOptions["listen"],
  ) {}

  /** nbd+unix:// or nbd:// URI of the export, as real clients (nbdinfo, qemu, nbdcopy) accept it. */
  get address(): string {
    const name = encodeURIComponent(this.ctx.export_name);
    if ("unix" in this.listen) return `nbd+unix:///${name}?socket=${this.listen.unix}`;
    const host = this.listen.hostname.includes(":") ? `[${this.listen.hostname}]` : this.listen.hostname;
    const listener = this.listener as TCPSocketListener<unknown> | undefined;
    return `nbd://${host}:${listener?.port ?? this.listen.port}/${name}`;
  }

  private get unix_path(): string | undefined {
    return "unix" in this.listen ? this.listen.unix : undefined;
  }

  static async start(opts: NbdServerOptions): Promise<NbdServer> {
    const ctx = exportContext(opts);
    const max_connections = opts.max_connections ?? MAX_CONNECTIONS_DEFAULT;
    if (!Number.isInteger(max_connections) || max_connections < 1) throw new Error(`nbd ${opts.export_name}: max_connections ${max_connections} must be a positive integer`);
    const server = new NbdServer(ctx, max_connections, opts.listen);
    if ("unix" in opts.listen) {
      const path = opts.listen.unix;
      await removeStaleSocket(path, opts.export_name);
      server.listener = listenRestricted(path, () => Bun.listen<NbdConnection | undefined>({ unix: path, allowHalfOpen: true, socket: server.handlers() }));
      ctx.log("info", `nbd ${opts.export_name}: listening on unix socket ${path}`);
      return server;
    }
    const { hostname, port } = opts.listen;
    // Half-open: a client that shuts down its sending side still gets the answers of what it sent.
    server.listener = Bun.listen<NbdConnection | undefined>({ hostname, port, allowHalfOpen: true, socket: server.handlers() });
    ctx.log("info", `nbd ${opts.export_name}: listening on ${server.address}`);
    return server;
  }

  connections(): number {
    return this.live.size;
  }

  /** Closes the listener and every connection, waits for their backend calls, removes the unix socket. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const pending = [...this.live].map((c) => c.settled());
    this.listener?.stop(true);
    this.live.clear();
    const timer = Bun.sleep(STOP_SETTLE_MS).then(() => "timeout" as const);
    if ((await Promise.race([Promise.all(pending), timer])) === "timeout") {
      this.ctx.log("warn", `nbd ${this.ctx.export_name}: backend calls still running ${STOP_SETTLE_MS} ms after stop`);
    }
    if (this.unix_path !== undefined) unlinkIfSocket(this.unix_path);
    this.ctx.log("info", `nbd ${this.ctx.export_name}: stopped`);
  }

  private handlers() {
    return {
      binaryType: "uint8array" as const,
      open: (socket: Socket<NbdConnection | undefined>) => this.onOpen(socket),
      data: (socket: Socket<NbdConnection | undefined>, chunk: Uint8Array) => socket.data?.onData(chunk),
      drain: (socket: Socket<NbdConnection | undefined>) => socket.data?.onDrain(),
      end: (socket: Socket<NbdConnection | undefined>) => socket.data?.onEnd(),
      close: (socket: Socket<NbdConnection | undefined>) => this.onClose(socket),
      error: (socket: Socket<NbdConnection | undefined>, err: Error) => {
        this.ctx.log("warn", `${socket.data?.label ?? `nbd ${this.ctx.export_name}`}: socket error: ${err.message}`);
      },
    };
  }

  private onOpen(socket: Socket<NbdConnection | undefined>): void {
    const peer = this.unix_path !== undefined ? "unix" : `${socket.remoteAddress}`;
    const label = `nbd ${this.ctx.export_name} conn#${this.next_id++} (${peer})`;
    if (this.stopped || this.live.size >= this.max_connections) {
      this.ctx.log("warn", `${label}: refused: ${this.stopped ? "server stopping" : `already ${this.live.size} connections (max_connections ${this.max_connections})`}`);
      socket.data = undefined;
      socket.end();
      return;
    }
    if (this.unix_path === undefined) socket.setNoDelay(true);
    const connection = new NbdConnection(socket as Socket<unknown>, this.ctx, label);
    socket.data = connection;
    this.live.add(connection);
    this.ctx.log("debug", `${label}: connected`);
    connection.open();
  }

  private onClose(socket: Socket<NbdConnection | undefined>): void {
    const connection = socket.data;
    if (connection === undefined) return;
    connection.onClose();
    this.live.delete(connection);
    this.ctx.log("debug", `${connection.label}: disconnected`);
  }
}

/** What every connection of an export shares, checked against the backend. */
export function exportContext(opts: Omit<NbdServerOptions, "listen" | "max_connections">): ExportContext {
  const { backend, export_name } = opts;
  const block_bytes = backend.block_bytes;
  if (!Number.isInteger(Math.log2(block_bytes)) || block_bytes > 65536) {
    throw new Error(`nbd ${export_name}: backend block size ${block_bytes} must be a power of two <= 65536`);
  }
  if (!Number.isSafeInteger(backend.size_bytes) || backend.size_bytes % block_bytes !== 0) {
    throw new Error(`nbd ${export_name}: backend size ${backend.size_bytes} is not a multiple of its ${block_bytes}-byte block`);
  }
  if (new TextEncoder().encode(export_name).byteLength > 4096) throw new Error(`nbd: export name longer than 4096 bytes`);
  const read_only = opts.read_only ?? false;
  const common = NBD_FLAG.HAS_FLAGS | NBD_FLAG.SEND_FLUSH | NBD_FLAG.CAN_MULTI_CONN | NBD_FLAG.SEND_CACHE;
  const writable = NBD_FLAG.SEND_FUA | NBD_FLAG.SEND_TRIM | NBD_FLAG.SEND_WRITE_ZEROES | NBD_FLAG.SEND_FAST_ZERO;
  return {
    export_name,
    description: opts.description,
    backend,
    limits: { size_bytes: backend.size_bytes, block_bytes, payload_bytes_max: PAYLOAD_BYTES_MAX, read_only },
    block_sizes: {
      minimum_bytes: block_bytes,
      preferred_bytes: Math.max(PREFERRED_BLOCK_BYTES, block_bytes),
      maximum_payload_bytes: PAYLOAD_BYTES_MAX,
    },
    transmission_flags: common | (read_only ? NBD_FLAG.READ_ONLY : writable),
    log: opts.log ?? defaultLog,
    handshake_timeout_ms: opts.handshake_timeout_ms ?? HANDSHAKE_TIMEOUT_S * 1000,
  };
}

function defaultLog(level: LogLevel, msg: string): void {
  if (level === "warn" || level === "error") console.error(`${level}: ${msg}`);
}

/** A leftover socket file from a dead server is removed; a live one, or a non-socket, is an error. */
async function removeStaleSocket(path: string, export_name: string): Promise<void> {
  let is_socket: boolean;
  try {
    is_socket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!is_socket) throw new Error(`nbd ${export_name}: ${path} exists and is not a socket; refusing to replace it`);
  if (await socketAnswers(path)) throw new Error(`nbd ${export_name}: ${path} is in use by a running server`);
  unlinkSync(path);
}

async function socketAnswers(path: string): Promise<boolean> {
  const attempt = Bun.connect({ unix: path, socket: { data() {}, error() {} } })
    .then((socket) => {
      socket.end();
      return true;
    })
    .catch(() => false);
  const timeout = Bun.sleep(STALE_PROBE_MS).then(() => false);
  return Promise.race([attempt, timeout]);
}

function unlinkIfSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // already gone
  }
}
