// The primary's side of connecting (spec 6.2, docs/protocol.md): TCP connect (binding `source`),
// HELLO → CHALLENGE (check the secondary's proof) → AUTH + HANDSHAKE → HANDSHAKE_REPLY + BITMAP,
// or an ERROR frame saying why the secondary refused.
import type { Address, ResourceConfig } from "../config/index.ts";
import type { Generation } from "../core/connect-decision.ts";
import { connectTcp } from "../io/byte-stream.ts";
import { FrameWaiter } from "../io/frame-waiter.ts";
import { CORK_REQUESTS_BYTES, PeerLink } from "../io/peer-link.ts";
import { protocolVersions } from "./protocol-versions.ts";
import {
  authReplyBlock, BitmapAssembler, checkChallengeAuth, MAX_CONTROL_PAYLOAD_BYTES, MAX_DATA_PAYLOAD_BYTES, NONCE_BYTES, negotiateVersion,
  type Frame, type HandshakeReply, type PeerError, type PeerPrimitives,
} from "../wire/peer/index.ts";

export interface PrimaryHandshakeInput {
  resource: ResourceConfig;
  node: string;
  /** Read as the HANDSHAKE leaves: a change made while connecting counts (see `sent`). */
  generation: () => Generation;
  /** Called once the secondary proved itself, before the HANDSHAKE leaves: what must be on this
   * node's disk first (a resuid drawn now); a reason when it is not, and the attempt fails. */
  beforeHandshake: () => string | null;
  virgin: boolean;
  datasize: number;
  extentsize: number;
  prims: PeerPrimitives;
}

export type HandshakeOutcome =
  /** version: the peer protocol version the secondary chose; sent: the counters the secondary
   * decided on, which the caller checks are still this node's before acting on the reply. */
  | { kind: "connected"; link: PeerLink; reply: HandshakeReply; bitmap: Uint8Array; version: number; sent: Generation }
  /** authenticated: the secondary had proved it knows the secret before it refused; an ERROR
   * before that may come from anyone who answers on its address. */
  | { kind: "refused"; error: PeerError; authenticated: boolean }
  | { kind: "failed"; reason: string };

function tcpTarget(a: Address): { host: string; port: number; family: 0 | 4 | 6 } {
  if (a.kind !== "tcp") throw new Error(`replication address ${a.path} must be TCP`);
  return { host: a.host, port: a.port, family: a.family };
}

export async function primaryHandshake(input: PrimaryHandshakeInput): Promise<HandshakeOutcome> {
  const { resource, prims } = input;
  const timeout_ms = resource.timeout_s * 1000;
  const source = resource.source ? tcpTarget(resource.source) : null;
  let link: PeerLink;
  try {
    link = await PeerLink.over(
      (handlers) => connectTcp({ ...tcpTarget(resource.remote!), source }, handlers, timeout_ms),
      // Until the secondary proved itself, whoever answers may send control frames only.
      prims, { checksum: resource.checksum, compression: resource.compression }, { cork_bytes: CORK_REQUESTS_BYTES, max_payload_bytes: MAX_CONTROL_PAYLOAD_BYTES },
    );
  } catch (err) {
    return { kind: "failed", reason: (err as Error).message };
  }
  const waiter = new FrameWaiter(link);
  const fail = (reason: string): HandshakeOutcome => {
    link.close(reason);
    return { kind: "failed", reason };
  };
  let authenticated = false;
  const expect = async <K extends Frame["kind"]>(kind: K): Promise<Extract<Frame, { kind: K }> | HandshakeOutcome> => {
    const got = await waiter.next(timeout_ms);
    if (got.kind === "timeout") return fail(`no ${kind} from ${link.remote} within ${resource.timeout_s} s`);
    if (got.kind === "closed") return { kind: "failed", reason: got.reason };
    if (got.frame.kind === "error") {
      link.close(`refused: ${got.frame.message}`);
      return { kind: "refused", error: got.frame, authenticated };
    }
    if (got.frame.kind !== kind) return fail(`expected ${kind} from ${link.remote}, got ${got.frame.kind}`);
    return got.frame as Extract<Frame, { kind: K }>;
  };

  const client_nonce = prims.randomBytes(NONCE_BYTES);
  const here = protocolVersions();
  link.send({ kind: "hello", version_min: here.min, version_max: here.max, client_nonce, resource: resource.name, node: input.node });
  const challenge = await expect("challenge");
  if (!("auth" in challenge) || challenge.kind !== "challenge") return challenge as HandshakeOutcome;
  if (negotiateVersion(challenge.version, challenge.version, here.min, here.max) === null) {
    return fail(`${link.remote} chose protocol version ${challenge.version}, outside the ${here.min}-${here.max} offered`);
  }
  const ctx = { secret: resource.secret === null ? null : new TextEncoder().encode(resource.secret), resource: resource.name, client_nonce, server_nonce: challenge.server_nonce };
  const check = checkChallengeAuth(ctx, challenge.auth, prims);
  link.send({ kind: "auth", auth: authReplyBlock(ctx, check, prims) });
  if (!check.ok) return fail(`authentication of ${link.remote} failed: ${check.reason}`);
  authenticated = true;
  link.allowPayloads(MAX_DATA_PAYLOAD_BYTES);
  const unready = input.beforeHandshake();
  if (unready !== null) return fail(unready);
  const sent = input.generation();
  link.send({
    kind: "handshake", resuid: sent.resuid, localcnt: sent.localcnt, remotecnt: sent.remotecnt,
    virgin: input.virgin, datasize_bytes: input.datasize, extentsize_bytes: input.extentsize, replication: resource.replication,
  });
  const reply = await expect("handshake-reply");
  if (reply.kind !== "handshake-reply") return reply as HandshakeOutcome;
  if (reply.datasize_bytes !== input.datasize) return fail(`Data size differs between nodes (local=${input.datasize}, remote=${reply.datasize_bytes}).`);
  if (reply.extentsize_bytes !== input.extentsize) return fail(`Extent size differs between nodes (local=${input.extentsize}, remote=${reply.extentsize_bytes}).`);
  let bitmap: Uint8Array = new Uint8Array(0);
  if (reply.bitmap_bytes > 0) {
    const assembler = new BitmapAssembler(reply.bitmap_bytes);
    for (;;) {
      const frame = await expect("bitmap");
      if (frame.kind !== "bitmap") return frame as HandshakeOutcome;
      const progress = assembler.add(frame.offset, frame.data);
      if (progress.kind === "error") return fail(`bad activemap from ${link.remote}: ${progress.reason}`);
      if (progress.kind === "done") {
        bitmap = progress.bitmap;
        break;
      }
    }
  }
  // The last frame may have come with the link's end (a bad frame behind it, a reset): that link
  // would be attached dead, its close already reported to the waiter alone.
  if (waiter.ended !== null) return { kind: "failed", reason: waiter.ended };
  return { kind: "connected", link, reply, bitmap, version: challenge.version, sent };
}
