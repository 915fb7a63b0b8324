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

test("an unauthenticated ERROR SPLIT_BRAIN is reported, not taken as split-brain", async () => {
  const encoder = new FrameEncoder(bunPeerPrimitives, { checksum: "none", compression: "none" });
  let hellos = 0;
  const impostor = Bun.listen<undefined>({
    hostname: "127.0.0.1", port: 0,
    socket: {
      data(s) {
        hellos++;
        const frame = encoder.encode({ kind: "error", code: "SPLIT_BRAIN", busy: false, message: "Split-brain condition!" });
        s.write(frame.head);
        s.write(frame.body);
        s.end();
      },
    },
  });
  const lines: string[] = [];
  const events: string[] = [];
  const resource = {
    name: "r", remote: { kind: "tcp", family: 4, host: "127.0.0.1", port: impostor.port }, remote_text: `tcp://127.0.0.1:${impostor.port}`,
    source: null, secret: "the-real-secret", timeout_s: 2, checksum: "none", compression: "none", replication: "memsync",
  } as unknown as ResourceConfig;
  const engine = { resuid_unconfirmed: false, generation: { resuid: 5n, localcnt: 1n, remotecnt: 1n, flags: 0 } };
  const io = { connected: false, apply() {}, metadataWritten: () => true, closeLink() {}, backgroundFlush() {}, resumeSync() {}, oldestRemoteMs: () => null };
  const connector = new PrimaryConnector({
    resource, node: "a", meta: { datasize: 1 << 20, extentsize: 1 << 20 } as never, engine: engine as never, io: io as never,
    log: new Logger({ write: (_level, line) => void lines.push(line) }, 0), emit: (e) => void events.push(e),
  });
  connector.start();
  try {
    const deadline = Date.now() + 5000;
    while (!lines.some((l) => l.includes("before authenticating")) && Date.now() < deadline) await Bun.sleep(20);
    expect(hellos).toBeGreaterThan(0);
    expect(lines.some((l) => l.includes("refused the connection before authenticating (SPLIT_BRAIN)"))).toBe(true);
    expect(connector.split_brain).toBe(false);
    expect(events).not.toContain("split-brain");
    expect(lines.some((l) => l.includes("Split-brain detected"))).toBe(false);
  } finally {
    connector.stop();
    impostor.stop(true);
  }
}, 10_000);
