// Who may replicate, and what a damaged payload does (issue 4, "What it must show" 5): the shared
// secret (both sides, a wrong one, one side only), a primary connecting from an address the
// secondary does not know, and a WRITE whose payload a proxy corrupts on the way with `checksum
// crc32` and `sha256`: the secondary notices, writes nothing, drops the link, and the resync
// after the reconnect makes both components identical.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { Harness, MiB, Pair, waitFor, type Settings } from "./harness.ts";
import { FRAME_WRITE, TcpProxy } from "./tcp-proxy.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("repl-auth");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const DATA_BYTES = 16 * MiB;
const sha256 = (bytes: Uint8Array) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

/** A pair with the given per-node resource settings, up with A primary; not waited for. */
async function pairWith(node_settings: Record<string, Settings>, on?: Record<string, Settings>): Promise<Pair> {
  const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 }, node_settings, ...(on ? { on } : {}) });
  await pair.up();
  return pair;
}

/** The primary stays degraded and the secondary never started a worker for it. */
async function expectRefused(pair: Pair): Promise<void> {
  expect((await pair.status(pair.a)).status).toBe("degraded");
  expect(pair.daemon(pair.b).log).not.toContain("Connected to the primary");
  expect(pair.daemon(pair.a).log).not.toContain("Connected to tcp://");
}

describe("peer authentication", () => {
  test("the same secret on both nodes: connected", async () => {
    const pair = await pairWith({ nodea: { secret: "s3cret-one" }, nodeb: { secret: "s3cret-one" } });
    await pair.waitSynced(pair.a);
    expect(pair.daemon(pair.b).log).not.toContain("No secret configured");
  }, 60_000);

  test("different secrets: refused on both sides, each saying the secrets differ", async () => {
    const pair = await pairWith({ nodea: { secret: "s3cret-one" }, nodeb: { secret: "s3cret-two" } });
    await pair.daemon(pair.a).waitLog("peer's proof does not match: the secrets differ", 15_000);
    await pair.daemon(pair.b).waitLog("peer rejected our proof and withheld its own: the secrets differ", 15_000);
    await expectRefused(pair);
  }, 60_000);

  test("a secret on the secondary only: refused, the primary is told a secret is required", async () => {
    const pair = await pairWith({ nodeb: { secret: "s3cret-one" } });
    await pair.daemon(pair.a).waitLog("peer requires a secret, but none is configured here", 15_000);
    await pair.daemon(pair.b).waitLog("peer sent no proof: a secret is configured here but not on the peer", 15_000);
    await expectRefused(pair);
  }, 60_000);

  test("a secret on the primary only: refused on both sides", async () => {
    const pair = await pairWith({ nodea: { secret: "s3cret-one" } });
    await pair.daemon(pair.a).waitLog("peer sent no proof: a secret is configured here but not on the peer", 15_000);
    await pair.daemon(pair.b).waitLog("peer requires a secret, but none is configured here", 15_000);
    await expectRefused(pair);
  }, 60_000);

  test("a primary connecting from an address the secondary does not know is refused before any frame", async () => {
    // A binds 127.0.0.2 for its outgoing connection; B only knows A as 127.0.0.1.
    const pair = await pairWith({}, { nodea: { source: "127.0.0.2" } });
    await pair.daemon(pair.b).waitLog("Refused replication connection from 127.0.0.2: Client 127.0.0.2 isn't known.", 15_000);
    await pair.daemon(pair.a).waitLog("Unable to connect to", 15_000);
    await expectRefused(pair);
  }, 60_000);

  test("a remote the secondary resolves to another address: the primary is refused", async () => {
    // B expects A at 127.0.0.3; A connects from 127.0.0.1.
    const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4 }, remote: { nodeb: "tcp://127.0.0.3:8457" } });
    await pair.up();
    await pair.daemon(pair.b).waitLog("Client 127.0.0.1 isn't known.", 15_000);
    await expectRefused(pair);
  }, 60_000);
});

describe("payload checksums", () => {
  for (const checksum of ["crc32", "sha256"] as const) {
    test(`${checksum}: a corrupted WRITE is detected, not written, and resynchronized after the reconnect`, async () => {
      const pair = Pair.create(h, { data_bytes: DATA_BYTES, settings: { timeout: 4, checksum } });
      const { a, b } = pair;
      const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
      h.onCleanup(() => proxy.stop());
      pair.reconfigure({ remote: { [a.name]: proxy.address } });
      await pair.up();
      await pair.waitSynced(a);
      const zeros = sha256(new Uint8Array(MiB));
      expect(await pair.dataSha256(b, { offset: 3 * MiB, length: MiB })).toBe(zeros);

      proxy.corruptPayload({ frame_type: FRAME_WRITE });
      proxy.refuse(true); // hold the reconnect until the damage has been looked at
      const data = randomBytes(MiB);
      const client = await RawNbdClient.connect({ unix: pair.nbd(a) });
      try {
        await client.handshake({ export_name: "r0" });
        await nbdWrite(client, 3 * MiB, data); // succeeds: the local leg did
      } finally {
        client.close();
      }
      expect(proxy.counters.corrupted).toBe(1);
      const why = checksum === "crc32" ? /crc32 0x[0-9a-f]+ != computed 0x[0-9a-f]+/ : /sha256 mismatch/;
      await pair.daemon(b).waitLog(why, 10_000);
      await pair.daemon(b).waitLog("Disconnected from the primary: malformed frame");
      await waitFor("A degraded", async () => (await pair.status(a)).status === "degraded", 10_000);
      expect((await pair.status(a)).dirty).toBeGreaterThanOrEqual(2 * MiB);
      // B wrote neither the damaged nor the real data.
      expect(await pair.dataSha256(b, { offset: 3 * MiB, length: MiB })).toBe(zeros);

      proxy.refuse(false);
      await pair.waitSynced(a);
      expect(await pair.dataSha256(b, { offset: 3 * MiB, length: MiB })).toBe(sha256(data));
      expect(await pair.dataSha256(b)).toBe(await pair.dataSha256(a));
    }, 60_000);
  }
});
