// The replication link: TCP-like connections (in order per direction, bytes may arrive split in
// several pieces), with latency, stalls, partitions and resets. A reset loses whatever is in
// flight; a graceful close delivers what was sent first, then the end-of-stream.
import type { Rng } from "./random.ts";
import type { Scheduler } from "./scheduler.ts";

export type Side = 0 | 1;

export interface Endpoint {
  onData(chunk: Uint8Array): void;
  onClose(reason: string): void;
}

type Item = { at_ms: number; chunk: Uint8Array } | { at_ms: number; close: string };

/** Bytes on their way to one side, strictly in order. */
class Direction {
  readonly items: Item[] = [];
  /** Identifies the one pump event that may deliver; older ones are stale. */
  token = 0;
}

export class Connection {
  readonly ends: [Endpoint | null, Endpoint | null] = [null, null];
  /** Whether each side may still send and receive. */
  readonly open: [boolean, boolean] = [true, true];
  readonly toward: [Direction, Direction] = [new Direction(), new Direction()];
  stalled_until_ms = 0;
  dropped = false;

  constructor(readonly id: number) {}

  get alive(): boolean {
    return this.open[0] && this.open[1] && !this.dropped;
  }
}

export class Network {
  latency_ms_max = 2;
  partitioned_until_ms = 0;
  private next_id = 1;
  private readonly live = new Set<Connection>();

  constructor(
    private readonly clock: Scheduler,
    private readonly rng: Rng,
  ) {}

  /** Until when a partition or a stall of a live connection keeps the nodes from talking. */
  get blocked_until_ms(): number {
    let until = this.partitioned_until_ms;
    for (const conn of this.live) until = Math.max(until, conn.stalled_until_ms);
    return until;
  }

  get partitioned(): boolean {
    return this.clock.now_ms < this.partitioned_until_ms;
  }

  /** A new connection, or null while the nodes cannot reach each other. */
  open(): Connection | null {
    if (this.partitioned) return null;
    const conn = new Connection(this.next_id++);
    this.live.add(conn);
    return conn;
  }

  send(conn: Connection, from: Side, bytes: Uint8Array): void {
    if (!conn.alive || bytes.length === 0) return;
    const to: Side = from === 0 ? 1 : 0;
    // Split like a socket may: the decoder has to reassemble.
    const pieces = bytes.length > 1 && this.rng.chance(0.3) ? this.rng.between(2, 3) : 1;
    let at = 0;
    for (let p = 0; p < pieces && at < bytes.length; p++) {
      const end = p === pieces - 1 ? bytes.length : Math.min(bytes.length, at + 1 + this.rng.int(bytes.length - at));
      this.enqueue(conn, to, { at_ms: this.arrival(), chunk: bytes.subarray(at, end) });
      at = end;
    }
  }

  /** `from` closed its socket: the peer reads what was sent, then the end of the stream. */
  close(conn: Connection, from: Side, reason: string): void {
    if (!conn.open[from]) return;
    conn.open[from] = false;
    conn.toward[from].items.length = 0;
    const to: Side = from === 0 ? 1 : 0;
    if (!conn.open[to]) return this.forget(conn);
    this.enqueue(conn, to, { at_ms: this.arrival(), close: reason });
  }

  /** The connection breaks: in-flight bytes are lost, both sides see an error. */
  reset(conn: Connection, reason: string): void {
    if (conn.dropped) return;
    conn.dropped = true;
    for (const side of [0, 1] as const) {
      const dir = conn.toward[side];
      dir.items.length = 0;
      if (conn.open[side]) this.enqueue(conn, side, { at_ms: this.arrival(), close: reason });
    }
  }

  /** Deliveries on live connections pause until `until_ms` (a stalled path). */
  stall(until_ms: number): void {
    for (const conn of this.live) conn.stalled_until_ms = Math.max(conn.stalled_until_ms, until_ms);
  }

  partition(until_ms: number): void {
    this.partitioned_until_ms = Math.max(this.partitioned_until_ms, until_ms);
    this.stall(until_ms);
  }

  heal(): void {
    this.partitioned_until_ms = this.clock.now_ms;
    for (const conn of this.live) {
      conn.stalled_until_ms = Math.min(conn.stalled_until_ms, this.clock.now_ms);
      for (const side of [0, 1] as const) this.pump(conn, side);
    }
  }

  resetAll(reason: string): void {
    for (const conn of [...this.live]) this.reset(conn, reason);
  }

  private arrival(): number {
    return this.clock.now_ms + this.rng.between(0, this.latency_ms_max);
  }

  private enqueue(conn: Connection, to: Side, item: Item): void {
    const dir = conn.toward[to];
    dir.items.push(item);
    if (dir.items.length === 1) this.pump(conn, to);
  }

  /** Schedules delivery of the head item, no earlier than its arrival or the end of a stall. */
  private pump(conn: Connection, to: Side): void {
    const dir = conn.toward[to];
    const head = dir.items[0];
    if (!head) return;
    const token = ++dir.token;
    this.clock.at(Math.max(head.at_ms, conn.stalled_until_ms), () => {
      if (token !== dir.token || dir.items[0] !== head) return;
      if (this.clock.now_ms < conn.stalled_until_ms) return this.pump(conn, to);
      dir.items.shift();
      if ("close" in head) {
        if (conn.open[to]) {
          conn.open[to] = false;
          if (!conn.open[0] && !conn.open[1]) this.forget(conn);
          conn.ends[to]?.onClose(head.close);
        }
      } else if (conn.open[to] && !conn.dropped) conn.ends[to]?.onData(head.chunk);
      this.pump(conn, to);
    });
  }

  private forget(conn: Connection): void {
    this.live.delete(conn);
  }
}
