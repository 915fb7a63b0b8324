// The main process's replication listener before authentication: frames are handled one at a
// time, nothing large is buffered, one address holds a few handshake slots at most, and the
// descriptor handed to the admission is the connection's own whatever becomes of Bun's socket
// meanwhile. A real listener on 127.0.0.1, a raw client.
import { afterEach, expect, test } from "bun:test";
import { fstatSync } from "node:fs";
import type { Socket } from "bun";
import type { ResourceConfig } from "../../../src/config/index.ts";
import { type Admission, PENDING_PER_ADDRESS_MAX, PeerListener } from "../../../src/daemon/listener.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { bunPeerPrimitives } from "../../../src/io/peer-primitives.ts";
import { type Frame, FrameDecoder, FrameEncoder, PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from "../../../src/wire/peer/index.ts";

const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });
const WAIT_MS = 5_000;
// The resources have no secret: the AUTH frame says so.
const AUTH: Frame = { kind: "auth", auth: { state: "no-secret" } };
const HANDSHAKE: Frame = {
  kind: "handshake", resuid: 1n, localcnt: 0n, remotecnt: 0n, virgin: true, datasize_bytes: 1 << 20, extentsize_bytes: 1 << 20, replication: "memsync",
};

function resource(name: string): ResourceConfig {
  return { name, remote: { kind: "tcp", family: 0, host: "127.0.0.1", port: 1 }, secret: null } as unknown as ResourceConfig;
}

function bytes(frame: Frame): Uint8Array {
  const parts = encoder.encode(frame);
  const out = new Uint8Array(parts.head.length + parts.body.length);
  out.set(parts.head);
  out.set(parts.body, parts.head.length);
  return out;
}

function hello(name: string): Uint8Array {
  return bytes({ kind: "hello", version_min: PROTOCOL_VERSION_MIN, version_max: PROTOCOL_VERSION_MAX, client_nonce: new Uint8Array(32).fill(7), resource: name, node: "a" });
}

interface Started {
  listener: PeerListener;
  port: number;
  warnings: string[];
  admitted: Admission[];
}

let started: Started | null = null;
let client: Socket<undefined> | null = null;

afterEach(() => {
  client?.terminate();
  client = null;
  started?.listener.stop();
  started = null;
});

async function listen(admit: (a: Admission) => Promise<void> = async () => {}): Promise<Started> {
  const warnings: string[] = [];
  const admitted: Admission[] = [];
  const listener = new PeerListener({
    resources: () => [resource("a"), resource("b")],
    roleOf: () => "secondary",
    admit: async (a) => {
      admitted.push(a);
      await admit(a);
    },
    log: new Logger({ write: (_level, line) => void warnings.push(line) }, 0),
  });
  for (let port = 20_000 + Math.floor(Math.random() * 20_000), tries = 0; tries < 20; port++, tries++) {
    try {
      await listener.listenOn([{ kind: "tcp", family: 4, host: "127.0.0.1", port }]);
      return (started = { listener, port, warnings, admitted });
    } catch {
      // taken: the next port
    }
  }
  throw new Error("no free port");
}

/** A raw client: every frame it receives, decoded. */
async function connect(port: number): Promise<{ frames: Frame[]; closed: () => boolean }> {
  const frames: Frame[] = [];
  const decoder = new FrameDecoder(bunPeerPrimitives);
  let closed = false;
  client = await Bun.connect({
    hostname: "127.0.0.1", port,
    socket: {
      data(_s, chunk) {
        decoder.push(new Uint8Array(chunk));
        for (let r = decoder.next(); r.kind === "frame"; r = decoder.next()) frames.push(r.frame);
      },
      close() {
        closed = true;
      },
    },
  });
  return { frames, closed: () => closed };
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

test("a second HELLO in the same packet is refused; it cannot change the resource the first is checked for", async () => {
  const s = await listen();
  const peer = await connect(s.port);
  client!.write(new Uint8Array([...hello("a"), ...hello("b")]));
  await until("the connection to end", peer.closed);
  expect(peer.frames.map((f) => f.kind)).toEqual(["challenge", "error"]);
  expect(s.warnings.join("\n")).toContain("for a: unexpected hello frame during the handshake");
  expect(s.admitted).toEqual([]);
});

test("a data frame before authentication is refused at its header, nothing of its body buffered", async () => {
  const s = await listen();
  const peer = await connect(s.port);
  const write = bytes({ kind: "write", seq: 1, offset: 0, length: 1 << 20, memsync: false, sync: false, data: new Uint8Array(1 << 20) });
  client!.write(write.subarray(0, 4096)); // the header and a little: the rest never comes
  await until("the connection to end", peer.closed);
  expect(s.warnings.join("\n")).toContain("exceeds 2048 here");
});

test("the admission gets a descriptor of its own: a reset while it waits leaves it this connection", async () => {
  let fd_alive = null as boolean | null;
  let resolveAdmitted!: () => void;
  const admitted = new Promise<void>((resolve) => (resolveAdmitted = resolve));
  const s = await listen(async (a) => {
    resolveAdmitted();
    await Bun.sleep(300); // the old worker's stop, the flush: the peer resets meanwhile
    fd_alive = fstatSync(a.fd).isSocket();
  });
  const peer = await connect(s.port);
  client!.write(hello("a"));
  await until("the challenge", () => peer.frames.length === 1);
  client!.write(new Uint8Array([...bytes(AUTH), ...bytes(HANDSHAKE)]));
  await admitted;
  client!.terminate(); // a reset: Bun closes its socket's descriptor
  client = null;
  await until("the admission to end", () => fd_alive !== null);
  expect(fd_alive).toBe(true);
});

test("an admission that throws is logged, not an unhandled rejection of the main process", async () => {
  const s = await listen(async () => {
    throw new Error("spawn failed: EBADF");
  });
  const peer = await connect(s.port);
  client!.write(hello("a"));
  await until("the challenge", () => peer.frames.length === 1);
  client!.write(new Uint8Array([...bytes(AUTH), ...bytes(HANDSHAKE)]));
  await until("the error to be logged", () => s.warnings.some((w) => w.includes("spawn failed: EBADF")));
  expect(s.admitted).toHaveLength(1);
});

test("one address holds at most PENDING_PER_ADDRESS_MAX handshakes; a slot freed takes the next", async () => {
  const s = await listen();
  const idle: Socket<undefined>[] = [];
  try {
    for (let i = 0; i < PENDING_PER_ADDRESS_MAX; i++) {
      idle.push(await Bun.connect({ hostname: "127.0.0.1", port: s.port, socket: { data() {} } }));
    }
    await Bun.sleep(100); // screened: all of them wait for their HELLO
    const peer = await connect(s.port);
    await until("the extra connection to be dropped", peer.closed);
    expect(s.warnings.join("\n")).toContain("Too many handshakes in progress from 127.0.0.1; dropping 127.0.0.1.");
    idle.pop()!.terminate();
    await Bun.sleep(100);
    const next = await connect(s.port);
    client!.write(hello("a"));
    await until("its challenge", () => next.frames.length === 1);
    expect(next.frames[0]!.kind).toBe("challenge");
  } finally {
    for (const socket of idle) socket.terminate();
  }
});
