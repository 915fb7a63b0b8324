// PrimaryConnector against a host at the secondary's address that does not know the secret: an
// ERROR it sends before authenticating is reported, never acted on. A split-brain claim made so
// once set the primary's split-brain state and raised the hook, which stops failover scripts
// (found by a review of peer authentication).
import { expect, test } from "bun:test";
import type { ResourceConfig } from "../../../src/config/index.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { PrimaryConnector } from "../../../src/daemon/primary-connector.ts";
import { bunPeerPrimitives } from "../../../src/io/peer-primitives.ts";
import { FrameEncoder } from "../../../src/wire/peer/index.ts";

/** A PrimaryConnector whose remote is `impostor`'s port (which does not know the secret). */
function connectorTo(port: number) {
  const lines: string[] = [];
  const events: string[] = [];
  const resource = {
    name: "r", remote: { kind: "tcp", family: 4, host: "127.0.0.1", port }, remote_text: `tcp://127.0.0.1:${port}`,
    source: null, secret: "the-real-secret", timeout_s: 2, checksum: "none", compression: "none", replication: "memsync",
  } as unknown as ResourceConfig;
  const engine = { resuid_unconfirmed: false, generation: { resuid: 5n, localcnt: 1n, remotecnt: 1n, flags: 0 } };
  const io = { connected: false, apply() {}, metadataWritten: () => true, closeLink() {}, backgroundFlush() {}, resumeSync() {}, oldestRemoteMs: () => null };
  const connector = new PrimaryConnector({
    resource, node: "a", meta: { datasize: 1 << 20, extentsize: 1 << 20 } as never, engine: engine as never, io: io as never,
    log: new Logger({ write: (_level, line) => void lines.push(line) }, 0), emit: (e) => void events.push(e),
  });
  return { connector, lines, events };
}

/** Listens on loopback and answers every HELLO with `frame`. */
function impostor(frame: Parameters<FrameEncoder["encode"]>[0]) {
  const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });
  const seen = { hellos: 0 };
  const listener = Bun.listen<undefined>({
    hostname: "127.0.0.1", port: 0,
    socket: {
      data(s) {
        seen.hellos++;
        const encoded = encoder.encode(frame);
        s.write(encoded.head);
        s.write(encoded.body);
        s.end();
      },
    },
  });
  return { listener, seen };
}

async function until(lines: string[], text: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!lines.some((l) => l.includes(text)) && Date.now() < deadline) await Bun.sleep(20);
}

test("an unauthenticated ERROR SPLIT_BRAIN is reported, not taken as split-brain", async () => {
  const fake = impostor({ kind: "error", code: "SPLIT_BRAIN", busy: false, message: "Split-brain condition!" });
  const { connector, lines, events } = connectorTo(fake.listener.port);
  connector.start();
  try {
    await until(lines, "before authenticating");
    expect(fake.seen.hellos).toBeGreaterThan(0);
    expect(lines.some((l) => l.includes("refused the connection before authenticating (SPLIT_BRAIN)"))).toBe(true);
    expect(connector.split_brain).toBe(false);
    expect(events).not.toContain("split-brain");
    expect(lines.some((l) => l.includes("Split-brain detected"))).toBe(false);
  } finally {
    connector.stop();
    fake.listener.stop(true);
  }
}, 10_000);

// It used to take frames of up to 32 MiB from whoever answered, buffering them before any proof.
test("before the secondary's proof only control frames are taken: a large one ends the attempt at its header", async () => {
  const fake = impostor({ kind: "write", seq: 1, offset: 0, length: 65536, memsync: false, sync: false, data: new Uint8Array(65536) });
  const { connector, lines } = connectorTo(fake.listener.port);
  connector.start();
  try {
    await until(lines, "exceeds 2048");
    expect(lines.some((l) => l.includes("Unable to connect") && l.includes("exceeds 2048"))).toBe(true);
  } finally {
    connector.stop();
    fake.listener.stop(true);
  }
}, 10_000);
