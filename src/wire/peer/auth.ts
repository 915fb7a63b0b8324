// Mutual shared-secret authentication (docs/protocol.md §5). The secondary proves first, in
// CHALLENGE; the primary checks that proof before it answers with its own, in AUTH. Proofs bind
// both nonces, the direction (distinct labels) and the resource, so none can be replayed or
// reflected. Secret absent on one side only: both sides fail with a message that says so.
import { CLIENT_PROOF_LABEL, NONCE_BYTES, PROOF_BYTES, SERVER_PROOF_LABEL } from "./constants.ts";
import { encodeUtf8 } from "./body.ts";
import type { AuthBlock, PeerPrimitives } from "./types.ts";

export interface AuthContext {
  /** The shared secret, or null when none is configured for this resource. */
  secret: Uint8Array | null;
  resource: string;
  client_nonce: Uint8Array;
  server_nonce: Uint8Array;
}

export type AuthCheck = { ok: true } | { ok: false; reason: string };

/** HMAC-SHA256(secret, "hast-server-v1" ‖ client_nonce ‖ server_nonce ‖ resource). */
export function serverProof(ctx: AuthContext, secret: Uint8Array, prims: PeerPrimitives): Uint8Array {
  return proof(prims, secret, SERVER_PROOF_LABEL, ctx.client_nonce, ctx.server_nonce, ctx.resource);
}

/** HMAC-SHA256(secret, "hast-client-v1" ‖ server_nonce ‖ client_nonce ‖ resource). */
export function clientProof(ctx: AuthContext, secret: Uint8Array, prims: PeerPrimitives): Uint8Array {
  return proof(prims, secret, CLIENT_PROOF_LABEL, ctx.server_nonce, ctx.client_nonce, ctx.resource);
}

/** Secondary: the auth block of its CHALLENGE. */
export function challengeAuthBlock(ctx: AuthContext, prims: PeerPrimitives): AuthBlock {
  if (ctx.secret === null) return { state: "no-secret" };
  return { state: "proof", proof: serverProof(ctx, ctx.secret, prims) };
}

/** Primary: verifies the CHALLENGE's auth block. */
export function checkChallengeAuth(ctx: AuthContext, peer: AuthBlock, prims: PeerPrimitives): AuthCheck {
  return checkPeer(ctx.secret, peer, (secret) => serverProof(ctx, secret, prims));
}

/**
 * Primary: the auth block of its AUTH frame. The proof is given only to a secondary that proved
 * itself; otherwise a configured secret is announced but withheld.
 */
export function authReplyBlock(ctx: AuthContext, challenge: AuthCheck, prims: PeerPrimitives): AuthBlock {
  if (ctx.secret === null) return { state: "no-secret" };
  if (!challenge.ok) return { state: "withheld" };
  return { state: "proof", proof: clientProof(ctx, ctx.secret, prims) };
}

/** Secondary: verifies the AUTH frame's auth block. */
export function checkAuthReply(ctx: AuthContext, peer: AuthBlock, prims: PeerPrimitives): AuthCheck {
  return checkPeer(ctx.secret, peer, (secret) => clientProof(ctx, secret, prims));
}

function checkPeer(secret: Uint8Array | null, peer: AuthBlock, expected: (secret: Uint8Array) => Uint8Array): AuthCheck {
  if (secret === null) {
    if (peer.state === "no-secret") return { ok: true };
    return { ok: false, reason: "peer requires a secret, but none is configured here" };
  }
  switch (peer.state) {
    case "no-secret":
      return { ok: false, reason: "peer sent no proof: a secret is configured here but not on the peer" };
    case "withheld":
      return { ok: false, reason: "peer rejected our proof and withheld its own: the secrets differ" };
    case "proof":
      if (constantTimeEqual(peer.proof, expected(secret))) return { ok: true };
      return { ok: false, reason: "peer's proof does not match: the secrets differ" };
  }
}

/** Compares without an early exit, so the time taken does not reveal where the first difference is. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a[i]! ^ b[i]!;
  return difference === 0;
}

function proof(
  prims: PeerPrimitives,
  secret: Uint8Array,
  label: string,
  first_nonce: Uint8Array,
  second_nonce: Uint8Array,
  resource: string,
): Uint8Array {
  if (secret.length === 0) throw new Error("auth: empty secret (config must reject it)");
  if (first_nonce.length !== NONCE_BYTES || second_nonce.length !== NONCE_BYTES) {
    throw new Error(`auth: nonces must be ${NONCE_BYTES} bytes`);
  }
  const label_bytes = encodeUtf8(label);
  const resource_bytes = encodeUtf8(resource);
  const message = new Uint8Array(label_bytes.length + 2 * NONCE_BYTES + resource_bytes.length);
  message.set(label_bytes, 0);
  message.set(first_nonce, label_bytes.length);
  message.set(second_nonce, label_bytes.length + NONCE_BYTES);
  message.set(resource_bytes, label_bytes.length + 2 * NONCE_BYTES);
  const mac = prims.hmacSha256(secret, message);
  if (mac.length !== PROOF_BYTES) throw new Error(`auth: HMAC returned ${mac.length} bytes, expected ${PROOF_BYTES}`);
  return mac;
}
