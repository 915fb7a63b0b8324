// A TCP proxy for integration tests: sits between a primary and its secondary (the primary's
// `remote` points at the proxy) and can pass bytes through, cut every connection (close or
// RST), refuse new ones, stall (stop forwarding; TCP backpressure does the rest), throttle, and
// corrupt one byte in the payload of chosen peer-protocol frames (docs/protocol.md §2: 44-byte header, type at
// byte 5, payload_bytes at byte 32).
//
//   const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
//   ... remote 127.0.0.1:<proxy.port> ...
//   proxy.corruptPayload({ frame_type: FRAME_WRITE });   // next WRITE with a payload
//   proxy.holdRepliesAfter(4);                          // answers held once a HANDSHAKE passes
//   proxy.cut();                                        // drop every live connection
//   await proxy.stop();
import net from "node:net";

export const PEER_HEADER_BYTES = 44;
export const FRAME_WRITE = 17;
export const FRAME_REPLY = 32;

/** up = client → target (primary → secondary), down = target → client. */
export type Direction = "up" | "down";

export interface ProxyTarget {
  host: string;
  port: number;
}

interface CorruptRule {
  direction: Direction;
  frame_type: number;
  /** Frames of that type with a payload still to corrupt. */
  remaining: number;
}

/** Follows the frame boundaries of one direction of a peer connection. */
class FrameTracker {
  private header = new Uint8Array(PEER_HEADER_BYTES);
  private header_fill = 0;
  private payload_left = 0;
  private corrupt_this = false;
  lost_sync = false;

  /** Walks chunk in place; `wants(type)` says whether to flip the last byte of this frame's payload,
   * `seen(type)` hears of every frame header. */
  walk(chunk: Uint8Array, wants: (type: number) => boolean, seen: (type: number) => void = () => {}): number {
    let flipped = 0;
    let i = 0;
    while (i < chunk.length && !this.lost_sync) {
      if (this.payload_left > 0) {
        const n = Math.min(this.payload_left, chunk.length - i);
        this.payload_left -= n;
        i += n;
        if (this.payload_left === 0 && this.corrupt_this) {
          chunk[i - 1] = chunk[i - 1]! ^ 0x01;
          this.corrupt_this = false;
          flipped++;
        }
        continue;
      }
      const n = Math.min(PEER_HEADER_BYTES - this.header_fill, chunk.length - i);
      this.header.set(chunk.subarray(i, i + n), this.header_fill);
      this.header_fill += n;
      i += n;
      if (this.header_fill < PEER_HEADER_BYTES) break;
      this.header_fill = 0;
      const view = new DataView(this.header.buffer);
      if (view.getUint32(0, true) !== 0x54534148) {
        this.lost_sync = true; // not our protocol (or already corrupted): stop interpreting
        break;
      }
      this.payload_left = view.getUint32(32, true);
      seen(this.header[5]!);
      this.corrupt_this = this.payload_left > 0 && wants(this.header[5]!);
    }
    return flipped;
  }
}

interface Link {
  client: net.Socket;
  server: net.Socket;
  trackers: Record<Direction, FrameTracker>;
}

export class TcpProxy {
  private readonly links = new Set<Link>();
  /** Directions not forwarding (stall). */
  private readonly stalled = new Set<Direction>();
  private refusing = false;
  private rules: CorruptRule[] = [];
  /** A frame type whose passing "up" stalls "down" (holdRepliesAfter). */
  private hold_after: number | null = null;
  private throttle_bytes_per_s = 0;
  /** Bytes forwarded per direction, connections accepted, frames corrupted. */
  readonly counters = { up: 0, down: 0, accepted: 0, refused: 0, corrupted: 0 };

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly target: ProxyTarget,
  ) {}

  /** Listens on host (default 127.0.0.1), on a free port. */
  static async start(target: ProxyTarget, host = "127.0.0.1"): Promise<TcpProxy> {
    let proxy: TcpProxy | null = null;
    const server = net.createServer({ noDelay: true }, (socket) => proxy!.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, host, () => resolve());
    });
    proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port, target);
    return proxy;
  }

  get address(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  /** Live proxied connections. */
  get connections(): number {
    return this.links.size;
  }

  /** Drops every live connection (both sides see it closed), as a cable pull would. */
  cut(): void {
    for (const link of [...this.links]) this.drop(link);
  }

  /** Drops every live connection with a TCP RST to both sides (ECONNRESET, not an orderly close). */
  reset(): void {
    for (const link of [...this.links]) {
      this.links.delete(link);
      link.client.resetAndDestroy();
      link.server.resetAndDestroy();
    }
  }

  /** New connections are closed at once (true) or proxied again (false). */
  refuse(on: boolean): void {
    this.refusing = on;
  }

  /**
   * Stops forwarding in both directions, or only one (e.g. "down": the secondary's replies are
   * held while the primary's requests still arrive); bytes pile up in the kernel buffers until resume().
   */
  stall(direction?: Direction): void {
    for (const d of direction ? [direction] : (["up", "down"] as const)) this.stalled.add(d);
    for (const link of this.links) this.applyStall(link);
  }

  resume(): void {
    this.stalled.clear();
    for (const link of this.links) {
      link.client.resume();
      link.server.resume();
    }
  }

  /** The reading side of a stalled direction is paused: up reads the client, down the server. */
  private applyStall(link: Link): void {
    if (this.stalled.has("up")) link.client.pause();
    if (this.stalled.has("down")) link.server.pause();
  }

  /** Limits each direction of each connection to about bytes_per_s (0 = unlimited). */
  throttle(bytes_per_s: number): void {
    this.throttle_bytes_per_s = bytes_per_s;
  }

  /**
   * Once a frame of frame_type passes from the primary, stalls every answer ("down") until
   * resume(): e.g. a HANDSHAKE delivered whose HANDSHAKE_REPLY is held. Applies once.
   */
  holdRepliesAfter(frame_type: number): void {
    this.hold_after = frame_type;
  }

  /** Flips the last payload byte of the next `count` frames of frame_type that carry a payload. */
  corruptPayload(o: { frame_type: number; direction?: Direction; count?: number }): void {
    this.rules.push({ direction: o.direction ?? "up", frame_type: o.frame_type, remaining: o.count ?? 1 });
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    if (this.refusing) {
      this.counters.refused++;
      client.destroy();
      return;
    }
    this.counters.accepted++;
    const server = net.connect({ host: this.target.host, port: this.target.port, noDelay: true });
    const link: Link = { client, server, trackers: { up: new FrameTracker(), down: new FrameTracker() } };
    this.links.add(link);
    this.pipe(link, client, server, "up");
    this.pipe(link, server, client, "down");
    for (const s of [client, server]) {
      s.on("error", () => this.drop(link));
      s.on("close", () => this.drop(link));
    }
    this.applyStall(link);
  }

  private pipe(link: Link, from: net.Socket, to: net.Socket, direction: Direction): void {
    from.on("data", (chunk: Buffer) => {
      const bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      const tracker = link.trackers[direction];
      this.counters.corrupted += tracker.walk(bytes, (type) => this.claim(direction, type), (type) => {
        if (direction !== "up" || type !== this.hold_after) return;
        this.hold_after = null;
        this.stall("down"); // before the frame is forwarded: no answer to it can be on its way
      });
      this.counters[direction] += bytes.length;
      const more = to.write(bytes);
      const delay_ms = this.throttle_bytes_per_s ? (bytes.length / this.throttle_bytes_per_s) * 1000 : 0;
      if (!more || delay_ms > 0) {
        from.pause();
        let waiting = (more ? 0 : 1) + (delay_ms > 0 ? 1 : 0);
        const go = () => {
          if (--waiting === 0 && !this.stalled.has(direction) && this.links.has(link)) from.resume();
        };
        if (!more) to.once("drain", go);
        if (delay_ms > 0) setTimeout(go, delay_ms);
      }
    });
  }

  private claim(direction: Direction, type: number): boolean {
    const rule = this.rules.find((r) => r.direction === direction && r.frame_type === type && r.remaining > 0);
    if (!rule) return false;
    rule.remaining--;
    return true;
  }

  private drop(link: Link): void {
    if (!this.links.delete(link)) return;
    link.client.destroy();
    link.server.destroy();
  }
}
