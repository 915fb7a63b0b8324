// A minimal NBD client over Bun.connect: the demo uses it, and tests that need to send exactly the bytes they
// choose (bad requests, garbage, pipelining). Every wait is bounded.
import type { Socket } from "bun";
import { NBD_CMD, NBD_OPT, NBD_REP, NBD_REPLY_TYPE, viewOf } from "../wire/nbd.ts";
import { encodeRequestHeader, parseReplyHeader, type NbdRequest } from "../wire/nbd-transmission.ts";

const WAIT_MS = 5_000;

export interface Reply {
  cookie: bigint;
  /** NBD error number, 0 on success. */
  error: number;
  data?: Uint8Array;
}

export class RawNbdClient {
  private rx = new Uint8Array(0);
  private tx: Uint8Array[] = [];
  private wake: (() => void) | null = null;
  private readonly read_lengths = new Map<bigint, number>();
  closed = false;
  private next_cookie = 1n;

  private constructor(private socket: Socket<undefined>) {}

  /** `{ fd }` wraps a connected descriptor (taken over: closed with the client), e.g. one end of a
   * socketpair whose other end a server serves in transmission phase: then skip handshake(). */
  static async connect(target: { unix: string } | { hostname: string; port: number } | { fd: number }): Promise<RawNbdClient> {
    let client: RawNbdClient | undefined;
    const handlers = {
      binaryType: "uint8array" as const,
      data: (_s: Socket<undefined>, chunk: Uint8Array) => client!.onData(chunk),
      drain: () => client!.flush(),
      close: () => client!.onClose(),
      error: () => client?.onClose(),
    };
    // Bun.connect accepts { fd } at run time; its type definitions do not list it.
    const socket = "fd" in target
      ? await Bun.connect({ fd: target.fd, socket: handlers } as unknown as Parameters<typeof Bun.connect>[0]) as Socket<undefined>
      : "unix" in target
      ? await Bun.connect({ unix: target.unix, socket: handlers })
      : await Bun.connect({ hostname: target.hostname, port: target.port, socket: handlers });
    client = new RawNbdClient(socket);
    return client;
  }

  /** Greeting, client flags, optional STRUCTURED_REPLY, then GO for `export_name`. */
  /** Reads the 18-byte greeting and answers with client flags (fixed newstyle + no zeroes). */
  async greet(): Promise<void> {
    const greeting = await this.readExactly(18);
    if (Buffer.from(greeting.subarray(0, 8)).toString() !== "NBDMAGIC") throw new Error("raw client: bad greeting");
    this.write(new Uint8Array([0, 0, 0, 3]));
  }

  async handshake(options: { export_name?: string; structured?: boolean } = {}): Promise<{ size_bytes: number; flags: number }> {
    await this.greet();
    if (options.structured) {
      this.write(optionRequest(NBD_OPT.STRUCTURED_REPLY, new Uint8Array(0)));
      const reply = await this.optionReply();
      if (reply.type !== NBD_REP.ACK) throw new Error(`raw client: STRUCTURED_REPLY got 0x${reply.type.toString(16)}`);
    }
    this.write(optionRequest(NBD_OPT.GO, goData(options.export_name ?? "")));
    let size_bytes = -1, flags = -1;
    for (;;) {
      const reply = await this.optionReply();
      if (reply.type === NBD_REP.ACK) break;
      if (reply.type !== NBD_REP.INFO) throw new Error(`raw client: GO got reply type 0x${reply.type.toString(16)}`);
      const view = viewOf(reply.data);
      if (view.getUint16(0) === 0) {
        size_bytes = Number(view.getBigUint64(2));
        flags = view.getUint16(10);
      }
    }
    return { size_bytes, flags };
  }

  async optionReply(): Promise<{ option: number; type: number; data: Uint8Array }> {
    const header = viewOf(await this.readExactly(20));
    const length = header.getUint32(16);
    return { option: header.getUint32(8), type: header.getUint32(12), data: await this.readExactly(length) };
  }

  /** Sends a request (with its payload for WRITE) and returns its cookie. */
  send(request: Partial<NbdRequest> & { command: number }, payload?: Uint8Array): bigint {
    const cookie = request.cookie ?? this.next_cookie++;
    const full = { flags: 0, offset: 0, length: payload?.byteLength ?? 0, ...request, cookie };
    if (full.command === NBD_CMD.READ) this.read_lengths.set(cookie, full.length);
    this.write(encodeRequestHeader(full));
    if (payload) this.write(payload);
    return cookie;
  }

  /** Next reply (simple, or a structured reply reassembled from its chunks). */
  async reply(): Promise<Reply> {
    const header = parseReplyHeader(await this.readExactly(4, true));
    if (header.kind === "error") throw new Error(`raw client: ${header.reason}`);
    const full = parseReplyHeader(await this.readExactly(header.kind === "need" ? header.bytes : 16));
    if (full.kind !== "ok") throw new Error("raw client: unparsable reply header");
    const h = full.value;
    if (h.kind === "simple") {
      const length = this.read_lengths.get(h.cookie);
      this.read_lengths.delete(h.cookie);
      const data = length !== undefined && h.error === 0 ? await this.readExactly(length) : undefined;
      return { cookie: h.cookie, error: h.error, data };
    }
    const payload = await this.readExactly(h.payload_bytes);
    if ((h.flags & 1) === 0) throw new Error("raw client: multi-chunk replies are not expected from this server");
    this.read_lengths.delete(h.cookie);
    if (h.type === NBD_REPLY_TYPE.OFFSET_DATA) return { cookie: h.cookie, error: 0, data: payload.subarray(8) };
    if (h.type === NBD_REPLY_TYPE.ERROR) return { cookie: h.cookie, error: viewOf(payload).getUint32(0) };
    if (h.type === NBD_REPLY_TYPE.NONE) return { cookie: h.cookie, error: 0 };
    throw new Error(`raw client: unexpected chunk type ${h.type}`);
  }

  write(bytes: Uint8Array): void {
    if (this.closed) return;
    this.tx.push(bytes);
    this.flush();
  }

  /** Resolves true once the server has closed the connection (false on timeout). */
  async waitClosed(timeout_ms = WAIT_MS): Promise<boolean> {
    const deadline = Date.now() + timeout_ms;
    while (!this.closed && Date.now() < deadline) await this.waitForData(deadline);
    return this.closed;
  }

  close(): void {
    this.socket.end();
    this.closed = true;
  }

  private flush(): void {
    while (this.tx.length > 0 && !this.closed) {
      const head = this.tx[0]!;
      const written = this.socket.write(head);
      if (written < 0) return;
      if (written < head.byteLength) {
        this.tx[0] = head.subarray(written);
        return;
      }
      this.tx.shift();
    }
  }

  private onData(chunk: Uint8Array): void {
    const merged = new Uint8Array(this.rx.byteLength + chunk.byteLength);
    merged.set(this.rx);
    merged.set(chunk, this.rx.byteLength);
    this.rx = merged;
    this.wake?.();
  }

  private onClose(): void {
    this.closed = true;
    this.wake?.();
  }

  private async waitForData(deadline: number): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }

  async readExactly(n: number, peek = false): Promise<Uint8Array> {
    const deadline = Date.now() + WAIT_MS;
    while (this.rx.byteLength < n) {
      if (this.closed) throw new Error(`raw client: connection closed while waiting for ${n} bytes`);
      if (Date.now() >= deadline) throw new Error(`raw client: timed out waiting for ${n} bytes`);
      await this.waitForData(deadline);
    }
    const out = this.rx.slice(0, n);
    if (!peek) this.rx = this.rx.subarray(n);
    return out;
  }
}

export function optionRequest(option: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(16 + data.byteLength);
  const view = viewOf(out);
  view.setBigUint64(0, 0x49484156454f5054n);
  view.setUint32(8, option);
  view.setUint32(12, data.byteLength);
  out.set(data, 16);
  return out;
}

/** NBD_OPT_GO / NBD_OPT_INFO data: the export name and no info requests. */
export function goData(export_name: string): Uint8Array {
  const name = new TextEncoder().encode(export_name);
  const data = new Uint8Array(4 + name.byteLength + 2);
  viewOf(data).setUint32(0, name.byteLength);
  data.set(name, 4);
  return data;
}

/** Sequential convenience calls on top of RawNbdClient (the demo and simple tests). */
export async function nbdWrite(client: RawNbdClient, offset: number, data: Uint8Array): Promise<void> {
  client.send({ command: NBD_CMD.WRITE, offset }, data);
  const reply = await client.reply();
  if (reply.error !== 0) throw new Error(`NBD write at ${offset} failed with error ${reply.error}`);
}

export async function nbdRead(client: RawNbdClient, offset: number, length: number): Promise<Uint8Array> {
  client.send({ command: NBD_CMD.READ, offset, length });
  const reply = await client.reply();
  if (reply.error !== 0 || !reply.data) throw new Error(`NBD read at ${offset} failed with error ${reply.error}`);
  return reply.data;
}

export async function nbdFlush(client: RawNbdClient): Promise<void> {
  client.send({ command: NBD_CMD.FLUSH });
  const reply = await client.reply();
  if (reply.error !== 0) throw new Error(`NBD flush failed with error ${reply.error}`);
}
