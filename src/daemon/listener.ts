// The main process's replication listeners (spec 6.2, 11). A connecting primary must come from
// the `remote` address of some resource, name a resource whose role here is secondary, agree on
// a protocol version, and prove the shared secret (docs/protocol.md). Only then is its HANDSHAKE
// read and the connection handed to a new secondary worker, which answers it.
import { lookup } from "node:dns/promises";
import type { Socket, TCPSocketListener } from "bun";
import type { Address, ResourceConfig, Role } from "../config/index.ts";
import { formatAddress } from "../config/index.ts";
import { bunPeerPrimitives } from "../io/peer-primitives.ts";
import { native } from "../native.ts";
import {
  challengeAuthBlock, checkAuthReply, FrameDecoder, FrameEncoder, MAX_CONTROL_PAYLOAD_BYTES, negotiateVersion, NONCE_BYTES,
  type Frame, type Handshake, type PeerErrorName,
} from "../wire/peer/index.ts";
import type { Logger } from "./log.ts";
import { protocolVersions } from "./protocol-versions.ts";

/** Spec 6.6: handshake sockets on the secondary side get a fixed 20 s. */
export const HANDSHAKE_TIMEOUT_MS = 20_000;
export const PENDING_CONNECTIONS_MAX = 64;
/** Of those, from one address: a host that opens connections and sends nothing (or stalls the
 * address check on a slow resolver) cannot take every slot from the real primary. */
export const PENDING_PER_ADDRESS_MAX = 8;
const LISTEN_ATTEMPTS = 10;
const LISTEN_RETRY_MS = 500;

export interface Admission {
  resource: ResourceConfig;
  handshake: Handshake;
  fd: number;
  remote: string;
  /** The protocol version negotiated with the primary. */
  version: number;
}

export interface ListenerDeps {
  resources(): ResourceConfig[];
  roleOf(name: string): Role | undefined;
  /** Hands the connection over; the listener drops its own reference afterwards. */
  admit(a: Admission): Promise<void>;
  log: Logger;
}

interface Conn {
  /** Takes handshake frames only: anything with a larger body is refused before it is buffered. */
  decoder: FrameDecoder;
  state: "hello" | "auth" | "handshake" | "handed" | "refused";
  /** A frame is being handled (it may wait, on DNS or on the admission): the next waits for it. */
  stepping: boolean;
  remote: string;
  resource: ResourceConfig | null;
  client_nonce: Uint8Array;
  server_nonce: Uint8Array;
  version: number;
  timer: ReturnType<typeof setTimeout>;
}

const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });

function send(socket: Socket<Conn>, frame: Frame): void {
  const parts = encoder.encode(frame);
  socket.write(parts.head);
  if (parts.body.length) socket.write(parts.body);
  socket.flush();
}

/** Handed to a worker or refused: nothing more is read or counted for it here. */
function handshakeOver(c: Conn): boolean {
  return c.state === "handed" || c.state === "refused";
}

function normalizeIp(ip: string): string {
  return ip.startsWith("::ffff:") && ip.includes(".") ? ip.slice(7) : ip;
}

/** Spec 11: remote names are resolved again for every connection. */
async function addressMatches(remote: Address | null, ip: string): Promise<boolean> {
  if (!remote || remote.kind !== "tcp") return false;
  try {
    const found = await lookup(remote.host, { all: true, ...(remote.family ? { family: remote.family } : {}) });
    return found.some((a) => normalizeIp(a.address) === ip);
  } catch {
    return false;
  }
}

export class PeerListener {
  /** By formatAddress of what it listens on. */
  private listeners = new Map<string, TCPSocketListener<Conn>>();
  private warned_no_secret = new Set<string>();
  private pending = 0;
  private pending_from = new Map<string, number>();

  constructor(private deps: ListenerDeps) {}

  /**
   * Listens on `addresses`: those already listened on keep their socket, new ones are opened (one
   * that fails only warns), and once one at least listens the rest are closed (spec 3.2, 3.8
   * item 2). Else nothing changes and it throws "No address to listen on.". Returns what listens.
   */
  async listenOn(addresses: Address[]): Promise<{ bound: string[]; opened: string[]; closed: string[] }> {
    const wanted = new Map<string, Extract<Address, { kind: "tcp" }>>();
    for (const a of addresses) {
      if (a.kind !== "tcp") throw new Error(`listen address ${formatAddress(a)} must be TCP`);
      wanted.set(formatAddress(a), a);
    }
    const opened: string[] = [];
    for (const [key, a] of wanted) {
      if (this.listeners.has(key)) continue;
      const listener = await this.bind(a);
      if (listener === null) continue;
      this.listeners.set(key, listener);
      opened.push(key);
    }
    const bound = [...wanted.keys()].filter((key) => this.listeners.has(key));
    if (bound.length === 0) throw new Error("No address to listen on.");
    const closed = [...this.listeners.keys()].filter((key) => !wanted.has(key));
    // Handshakes already under way on a closed address go on (spec 3.8 closes the listening socket).
    for (const key of closed) {
      this.listeners.get(key)!.stop(false);
      this.listeners.delete(key);
    }
    return { bound, opened, closed };
  }

  /** A hastd restarted right after a crash may find the port still held for a moment (a dying
   * worker, a closing socket): retried briefly before giving up on the address (null, warned). */
  private async bind(a: Extract<Address, { kind: "tcp" }>): Promise<TCPSocketListener<Conn> | null> {
    for (let attempt = 1; ; attempt++) {
      try {
        return this.listen(a);
      } catch (err) {
        if (attempt < LISTEN_ATTEMPTS && (err as NodeJS.ErrnoException).code === "EADDRINUSE") {
          await Bun.sleep(LISTEN_RETRY_MS);
          continue;
        }
        this.deps.log.warn(`Unable to listen on ${formatAddress(a)}: ${(err as Error).message}`);
        return null;
      }
    }
  }

  stop(): void {
    for (const l of this.listeners.values()) l.stop(true);
    this.listeners.clear();
  }

  private listen(a: Extract<Address, { kind: "tcp" }>): TCPSocketListener<Conn> {
    const host = a.host === "" ? (a.family === 6 ? "::" : "0.0.0.0") : a.host;
    return Bun.listen<Conn>({
      hostname: host, port: a.port, ...(a.family === 6 ? { ipv6Only: true } : {}),
      socket: {
        binaryType: "uint8array",
        open: (socket) => this.open(socket),
        data: (socket, chunk) => this.data(socket, chunk),
        close: (socket) => this.closed(socket),
        error: (socket, err) => this.deps.log.debug(`peer connection from ${socket.data?.remote}: ${err.message}`),
      },
    });
  }

  private open(socket: Socket<Conn>): void {
    const remote = `${normalizeIp(socket.remoteAddress)}`;
    const from = this.pending_from.get(remote) ?? 0;
    if (this.pending >= PENDING_CONNECTIONS_MAX || from >= PENDING_PER_ADDRESS_MAX) {
      this.deps.log.warn(`Too many handshakes in progress${from >= PENDING_PER_ADDRESS_MAX ? ` from ${remote}` : ""}; dropping ${remote}.`);
      socket.end();
      return;
    }
    this.pending++;
    this.pending_from.set(remote, from + 1);
    socket.data = {
      decoder: new FrameDecoder(bunPeerPrimitives, { max_payload_bytes: MAX_CONTROL_PAYLOAD_BYTES }),
      state: "hello", stepping: false, remote, resource: null,
      client_nonce: new Uint8Array(0), server_nonce: new Uint8Array(0), version: 0,
      timer: setTimeout(() => this.reject(socket, null, `no handshake within ${HANDSHAKE_TIMEOUT_MS / 1000} s`), HANDSHAKE_TIMEOUT_MS),
    };
    socket.pause();
    void this.screen(socket);
  }

  /** Before reading anything: is the peer the `remote` of any resource? */
  private async screen(socket: Socket<Conn>): Promise<void> {
    const ip = socket.data.remote;
    const results = await Promise.all(this.deps.resources().map((r) => addressMatches(r.remote, ip)));
    if (!results.some(Boolean)) {
      this.reject(socket, null, `Client ${ip} isn't known.`);
      return;
    }
    socket.resume();
  }

  private closed(socket: Socket<Conn>): void {
    const c = socket.data;
    if (!c) return;
    clearTimeout(c.timer);
    this.settled(c);
    c.state = "refused";
  }

  /** The connection's handshake is over (handed, refused or closed): its slot is free. */
  private settled(c: Conn): void {
    if (handshakeOver(c)) return;
    this.pending--;
    const from = (this.pending_from.get(c.remote) ?? 1) - 1;
    if (from > 0) this.pending_from.set(c.remote, from);
    else this.pending_from.delete(c.remote);
  }

  /** `logged`: what the log says, where it says more than the peer is told. */
  private reject(socket: Socket<Conn>, code: PeerErrorName | null, message: string, busy = false, logged = message): void {
    const c = socket.data;
    this.deps.log.warn(`Refused replication connection from ${c.remote}${c.resource ? ` for ${c.resource.name}` : ""}: ${logged}`);
    if (code) send(socket, { kind: "error", code, busy, message });
    this.settled(c);
    c.state = "refused";
    clearTimeout(c.timer);
    socket.end();
  }

  private data(socket: Socket<Conn>, chunk: Uint8Array): void {
    const c = socket.data;
    if (handshakeOver(c)) return;
    c.decoder.push(chunk);
    if (!c.stepping) void this.steps(socket);
  }

  /** The frames at hand, one at a time: a frame that arrived with others is not looked at before
   * those ahead of it are handled (a second HELLO must not change the resource the first one is
   * being checked for). Nothing thrown here escapes: the connection is refused. */
  private async steps(socket: Socket<Conn>): Promise<void> {
    const c = socket.data;
    c.stepping = true;
    try {
      while (!handshakeOver(c)) {
        const r = c.decoder.next();
        if (r.kind === "need-more") return;
        if (r.kind === "error") return this.reject(socket, "PROTOCOL", `malformed frame: ${r.reason}`);
        await this.step(socket, r.frame);
      }
    } catch (err) {
      if (!handshakeOver(c)) this.reject(socket, null, `handshake failed: ${(err as Error).message}`);
      else this.deps.log.error(`Replication connection from ${c.remote}: ${(err as Error).message}`);
    } finally {
      c.stepping = false;
    }
  }

  private async step(socket: Socket<Conn>, frame: Frame): Promise<void> {
    const c = socket.data;
    if (frame.kind === "error") return this.reject(socket, null, `peer error: ${frame.message}`);
    if (c.state === "hello" && frame.kind === "hello") return await this.hello(socket, frame);
    if (c.state === "auth" && frame.kind === "auth") return this.auth(socket, frame);
    if (c.state === "handshake" && frame.kind === "handshake") return await this.handoff(socket, frame);
    this.reject(socket, "PROTOCOL", `unexpected ${frame.kind} frame during the handshake`);
  }

  private async hello(socket: Socket<Conn>, hello: Extract<Frame, { kind: "hello" }>): Promise<void> {
    const c = socket.data;
    socket.pause();
    const resource = this.deps.resources().find((r) => r.name === hello.resource);
    // Answered as for a resource of another node: the peer has not proved anything yet, and must
    // not learn which names are configured here.
    if (!resource) {
      return this.reject(socket, "NO_ACCESS", "No access to the resource.", false,
        `it asked for resource ${JSON.stringify(hello.resource)}, which is not configured here`);
    }
    c.resource = resource;
    if (!(await addressMatches(resource.remote, c.remote))) return this.reject(socket, "NO_ACCESS", "No access to the resource.");
    const role = this.deps.roleOf(resource.name);
    if (role !== "secondary") {
      return this.reject(socket, "NOT_SECONDARY", `Remote node acts as ${role} for the resource and not as secondary.`, role === "primary");
    }
    const here = protocolVersions();
    const version = negotiateVersion(hello.version_min, hello.version_max, here.min, here.max);
    if (version === null) {
      return this.reject(socket, "VERSION_MISMATCH", `no common protocol version (peer ${hello.version_min}-${hello.version_max}, here ${here.min}-${here.max})`);
    }
    if (resource.secret === null && !this.warned_no_secret.has(resource.name)) {
      this.warned_no_secret.add(resource.name);
      this.deps.log.warn(`[${resource.name}] No secret configured: the primary is accepted on its address alone (set 'secret' or 'secret_file').`);
    }
    c.version = version;
    c.client_nonce = hello.client_nonce;
    c.server_nonce = bunPeerPrimitives.randomBytes(NONCE_BYTES);
    c.state = "auth";
    send(socket, { kind: "challenge", version, server_nonce: c.server_nonce, auth: challengeAuthBlock(this.authContext(c), bunPeerPrimitives) });
    socket.resume();
  }

  private authContext(c: Conn) {
    const secret = c.resource!.secret;
    return {
      secret: secret === null ? null : new TextEncoder().encode(secret), resource: c.resource!.name,
      client_nonce: c.client_nonce, server_nonce: c.server_nonce,
    };
  }

  private auth(socket: Socket<Conn>, frame: Extract<Frame, { kind: "auth" }>): void {
    const c = socket.data;
    const check = checkAuthReply(this.authContext(c), frame.auth, bunPeerPrimitives);
    if (!check.ok) return this.reject(socket, "AUTH_FAILED", `authentication failed: ${check.reason}`);
    c.state = "handshake";
  }

  private async handoff(socket: Socket<Conn>, handshake: Handshake & { kind: "handshake" }): Promise<void> {
    const c = socket.data;
    socket.pause();
    // The primary sends nothing after HANDSHAKE until it is answered, so no bytes are left behind.
    if (c.decoder.buffered_bytes !== 0) return this.reject(socket, "PROTOCOL", "data after HANDSHAKE before its reply");
    if (this.deps.roleOf(c.resource!.name) !== "secondary") return this.reject(socket, "NOT_SECONDARY", "role changed during the handshake", true);
    // The admission may wait (the old worker's stop, the flush): the worker gets a descriptor of
    // its own, which stays this connection whatever Bun does meanwhile with its socket's (a reset
    // closes it, and the next connection may get its number).
    const fd = native.dup((socket as unknown as { fd: number }).fd, `peer connection from ${c.remote}`);
    this.settled(c);
    c.state = "handed";
    clearTimeout(c.timer);
    const { kind: _kind, ...hello } = handshake;
    try {
      await this.deps.admit({ resource: c.resource!, handshake: hello, fd, remote: c.remote, version: c.version });
    } finally {
      // The worker holds its own copy of the descriptor; dropping ours sends nothing to the peer.
      socket.end();
      native.close(fd, `peer connection from ${c.remote}`);
    }
  }
}
