// The primary's side of the handshake against a scripted secondary on loopback: a link that ends
// in the same read as the handshake's last frame is not reported connected (review: it was
// attached dead, and the worker's requests waited on it for ever).
import { afterEach, describe, expect, test } from "bun:test";
import type { TCPSocketListener } from "bun";
import type { ResourceConfig } from "../../../src/config/index.ts";
import { primaryHandshake } from "../../../src/daemon/primary-handshake.ts";
import { protocolVersions } from "../../../src/daemon/protocol-versions.ts";
import { challengeAuthBlock, FrameDecoder, type Frame } from "../../../src/wire/peer/index.ts";
import { encode, prims } from "../peer/helpers.ts";

const DATASIZE = 64 * 1024 * 1024;
const EXTENTSIZE = 2 * 1024 * 1024;
const MAP_BYTES = DATASIZE / EXTENTSIZE / 8;

let server: TCPSocketListener<{ decoder: FrameDecoder }> | null = null;
afterEach(() => {
  server?.stop(true);
  server = null;
});

/** A secondary that answers HELLO and HANDSHAKE, sending `after` right behind its BITMAP, in one write. */
function secondary(after: Uint8Array): number {
  const listening = Bun.listen<{ decoder: FrameDecoder }>({
    hostname: "127.0.0.1", port: 0,
    socket: {
      open: (s) => void (s.data = { decoder: new FrameDecoder(prims, {}) }),
      data(s, chunk) {
        s.data.decoder.push(chunk);
        for (let r = s.data.decoder.next(); r.kind === "frame"; r = s.data.decoder.next()) {
          const f: Frame = r.frame;
          if (f.kind === "hello") {
            const server_nonce = new Uint8Array(32);
            s.write(encode({ kind: "challenge", version: protocolVersions().max, server_nonce,
              auth: challengeAuthBlock({ secret: null, resource: "r0", client_nonce: f.client_nonce, server_nonce }, prims) }));
          } else if (f.kind === "handshake") {
            const parts = [
              encode({ kind: "handshake-reply", datasize_bytes: DATASIZE, extentsize_bytes: EXTENTSIZE, localcnt: 0n, remotecnt: 0n,
                syncsrc: "primary", virgin: false, bitmap_bytes: MAP_BYTES, cache_epoch: null }),
              encode({ kind: "bitmap", offset: 0, data: new Uint8Array(MAP_BYTES) }),
              after,
            ];
            s.write(Buffer.concat(parts));
          }
        }
      },
    },
  });
  server = listening;
  return listening.port;
}

async function handshake(port: number, beforeHandshake: () => string | null = () => null) {
  const resource = {
    name: "r0", timeout_s: 5, source: null, remote: { kind: "tcp", host: "127.0.0.1", port, family: 4 },
    checksum: "none", compression: "none", secret: null, replication: "fullsync",
  } as unknown as ResourceConfig;
  return await primaryHandshake({
    resource, node: "a", generation: () => ({ resuid: 1n, localcnt: 1n, remotecnt: 0n, flags: 0 }), virgin: false,
    datasize: DATASIZE, extentsize: EXTENTSIZE, prims, beforeHandshake,
  });
}

describe("primaryHandshake", () => {
  test("connected when the secondary's answer ends with its bitmap", async () => {
    const outcome = await handshake(secondary(new Uint8Array(0)));
    expect(outcome.kind).toBe("connected");
    if (outcome.kind === "connected") {
      expect(outcome.link.closed).toBe(false);
      outcome.link.close("test over");
    }
  });

  test("what must be on disk before the HANDSHAKE is readied only once a secondary answered (spec 4.4: a resuid at the first successful handshake)", async () => {
    let readied = 0;
    const unreachable = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = unreachable.port;
    unreachable.stop(true);
    expect((await handshake(port, () => (readied++, null))).kind).toBe("failed");
    expect(readied).toBe(0);
    const refused = await handshake(secondary(new Uint8Array(0)), () => (readied++, "the metadata could not be written"));
    expect(refused).toEqual({ kind: "failed", reason: "the metadata could not be written" });
    expect(readied).toBe(1);
  });

  test("failed when an undecodable frame follows the bitmap in the same read (the link ended with it)", async () => {
    const outcome = await handshake(secondary(new Uint8Array(64).fill(0xee)));
    expect(outcome.kind).toBe("failed");
  });
});
