import { describe, expect, test } from "bun:test";
import {
  authReplyBlock,
  challengeAuthBlock,
  checkAuthReply,
  checkChallengeAuth,
  clientProof,
  constantTimeEqual,
  serverProof,
  type AuthCheck,
  type AuthContext,
} from "../../../src/wire/peer/auth.ts";
import type { AuthBlock } from "../../../src/wire/peer/types.ts";
import { decodeOne, encode, prims } from "./helpers.ts";

const secret = (text: string) => new TextEncoder().encode(text);

interface Outcome {
  primary: AuthCheck;
  secondary: AuthCheck;
}

/** Runs the exchange as the two sides would, with every auth block passing through the codec. */
function exchange(primary_secret: Uint8Array | null, secondary_secret: Uint8Array | null): Outcome {
  const client_nonce = prims.randomBytes(32);
  const server_nonce = prims.randomBytes(32);
  const base = { resource: "shared", client_nonce, server_nonce };
  const secondary: AuthContext = { ...base, secret: secondary_secret };
  const primary: AuthContext = { ...base, secret: primary_secret };
  const challenge_auth = wire(challengeAuthBlock(secondary, prims), "challenge");
  const primary_check = checkChallengeAuth(primary, challenge_auth, prims);
  const auth = wire(authReplyBlock(primary, primary_check, prims), "auth");
  return { primary: primary_check, secondary: checkAuthReply(secondary, auth, prims) };
}

function wire(block: AuthBlock, as: "challenge" | "auth"): AuthBlock {
  const frame = as === "challenge" ? { kind: "challenge" as const, version: 1, server_nonce: new Uint8Array(32), auth: block } : { kind: "auth" as const, auth: block };
  const result = decodeOne(encode(frame));
  if (result.kind !== "frame" || (result.frame.kind !== "challenge" && result.frame.kind !== "auth")) throw new Error("auth block did not round trip");
  return result.frame.auth;
}

describe("peer authentication", () => {
  test("the same secret passes both ways", () => {
    expect(exchange(secret("s3cret"), secret("s3cret"))).toEqual({ primary: { ok: true }, secondary: { ok: true } });
  });

  test("no secret on either side passes (HAST behaviour, address check only)", () => {
    expect(exchange(null, null)).toEqual({ primary: { ok: true }, secondary: { ok: true } });
  });

  test("a wrong secret fails on the verifying side, and the primary withholds its proof", () => {
    const outcome = exchange(secret("one"), secret("two"));
    expect(outcome.primary).toEqual({ ok: false, reason: "peer's proof does not match: the secrets differ" });
    expect(outcome.secondary).toEqual({ ok: false, reason: "peer rejected our proof and withheld its own: the secrets differ" });
  });

  test("a secret on the secondary only fails on both sides with a clear message", () => {
    const outcome = exchange(null, secret("s"));
    expect(outcome.primary).toEqual({ ok: false, reason: "peer requires a secret, but none is configured here" });
    expect(outcome.secondary).toEqual({ ok: false, reason: "peer sent no proof: a secret is configured here but not on the peer" });
  });

  test("a secret on the primary only fails on both sides with a clear message", () => {
    const outcome = exchange(secret("s"), null);
    expect(outcome.primary).toEqual({ ok: false, reason: "peer sent no proof: a secret is configured here but not on the peer" });
    expect(outcome.secondary).toEqual({ ok: false, reason: "peer requires a secret, but none is configured here" });
  });

  test("a proof replayed under a different nonce fails", () => {
    const key = secret("shared secret");
    const first: AuthContext = { secret: key, resource: "shared", client_nonce: prims.randomBytes(32), server_nonce: prims.randomBytes(32) };
    const recorded = clientProof(first, key, prims);
    expect(checkAuthReply(first, { state: "proof", proof: recorded }, prims)).toEqual({ ok: true });
    const later: AuthContext = { ...first, server_nonce: prims.randomBytes(32) };
    expect(checkAuthReply(later, { state: "proof", proof: recorded }, prims).ok).toBe(false);
    const other_client: AuthContext = { ...first, client_nonce: prims.randomBytes(32) };
    expect(checkAuthReply(other_client, { state: "proof", proof: recorded }, prims).ok).toBe(false);
  });

  test("a server proof cannot be reflected as a client proof, nor used for another resource", () => {
    const key = secret("k");
    const nonce = prims.randomBytes(32);
    // Reflection: same nonce in both slots makes the HMAC inputs differ only by the label.
    const ctx: AuthContext = { secret: key, resource: "r", client_nonce: nonce, server_nonce: nonce };
    expect(checkAuthReply(ctx, { state: "proof", proof: serverProof(ctx, key, prims) }, prims).ok).toBe(false);
    const other_resource: AuthContext = { ...ctx, resource: "r2" };
    expect(checkAuthReply(other_resource, { state: "proof", proof: clientProof(ctx, key, prims) }, prims).ok).toBe(false);
  });

  test("proofs follow the documented construction", () => {
    const key = secret("k");
    const ctx: AuthContext = { secret: key, resource: "res", client_nonce: new Uint8Array(32).fill(1), server_nonce: new Uint8Array(32).fill(2) };
    const message = new Uint8Array([...secret("hast-server-v1"), ...ctx.client_nonce, ...ctx.server_nonce, ...secret("res")]);
    expect(serverProof(ctx, key, prims)).toEqual(prims.hmacSha256(key, message));
    const client_message = new Uint8Array([...secret("hast-client-v1"), ...ctx.server_nonce, ...ctx.client_nonce, ...secret("res")]);
    expect(clientProof(ctx, key, prims)).toEqual(prims.hmacSha256(key, client_message));
  });

  test("constantTimeEqual", () => {
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]))).toBe(true);
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 3]))).toBe(false);
    expect(constantTimeEqual(new Uint8Array([1, 2]), new Uint8Array([1]))).toBe(false);
  });
});
