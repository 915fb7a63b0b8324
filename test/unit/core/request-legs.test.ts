// RequestLegs: every order of leg completions in every mode, against the rules written out
// independently here (spec 9, 6.4 and the module's two deliberate differences).
import { describe, expect, test } from "bun:test";
import { RequestLegs, type LegOutcome, type ReplicationMode } from "../../../src/core/request-legs.ts";

type Event = "local-ok" | "local-fail" | "received" | "remote-ok" | "remote-fail";

const MODES: ReplicationMode[] = ["fullsync", "memsync", "async"];

function apply(legs: RequestLegs, event: Event): LegOutcome {
  switch (event) {
    case "local-ok": return legs.localDone(true);
    case "local-fail": return legs.localDone(false);
    case "received": return legs.remoteReceived();
    case "remote-ok": return legs.remoteDone(true);
    case "remote-fail": return legs.remoteDone(false);
  }
}

/** Every event sequence: one local completion placed anywhere among the remote leg's events. */
function sequences(sent: boolean): Event[][] {
  const remotes: Event[][] = sent
    ? [["remote-ok"], ["remote-fail"], ["received", "remote-ok"], ["received", "remote-fail"]]
    : [[]];
  const out: Event[][] = [];
  for (const local of ["local-ok", "local-fail"] as const) {
    for (const remote of remotes) {
      for (let at = 0; at <= remote.length; at++) out.push([...remote.slice(0, at), local, ...remote.slice(at)]);
    }
  }
  return out;
}

interface Expected {
  ack_step: number;
  ack_ok: boolean;
  final_step: number;
  local_ok: boolean;
  remote_ok: boolean;
}

/** The rules, stated from the spec rather than from the implementation. */
function expected(mode: ReplicationMode, sent: boolean, events: Event[]): Expected {
  const local_step = events.findIndex((e) => e.startsWith("local"));
  const local_ok = events[local_step] === "local-ok";
  const done_step = sent ? events.findIndex((e) => e.startsWith("remote")) : -1;
  const remote_ok = sent && events[done_step] === "remote-ok";
  const final_step = Math.max(local_step, done_step);
  const first_remote = sent ? events.findIndex((e) => e === "received" || e.startsWith("remote")) : -1;
  let ack_step: number;
  if (!local_ok) ack_step = final_step; // a failed local leg waits for the peer's disk in every mode
  else if (mode === "async") ack_step = local_step;
  else if (mode === "memsync") ack_step = Math.max(local_step, first_remote);
  else ack_step = final_step;
  return { ack_step, ack_ok: local_ok || remote_ok, final_step, local_ok, remote_ok };
}

describe("RequestLegs: every completion order", () => {
  for (const mode of MODES) {
    for (const sent of [true, false]) {
      for (const events of sequences(sent)) {
        test(`${mode}, ${sent ? "sent" : "unsent"}: ${events.join(" → ")}`, () => {
          const want = expected(mode, sent, events);
          const legs = new RequestLegs(mode, sent);
          const acks: number[] = [];
          const finals: number[] = [];
          events.forEach((event, step) => {
            const out = apply(legs, event);
            if (out.ack) {
              acks.push(step);
              expect(out.ack).toEqual({ ok: want.ack_ok, error_from: want.ack_ok ? null : "local" });
            }
            if (out.final) {
              finals.push(step);
              expect(out.final).toEqual({ local_ok: want.local_ok, remote_ok: want.remote_ok });
            }
          });
          expect(acks).toEqual([want.ack_step]);
          expect(finals).toEqual([want.final_step]);
          expect(acks[0]!).toBeLessThanOrEqual(finals[0]!);
        });
      }
    }
  }
});

describe("RequestLegs: named cases", () => {
  test("memsync answers on received, finishes on the peer's disk write", () => {
    const legs = new RequestLegs("memsync", true);
    expect(legs.localDone(true)).toEqual({});
    expect(legs.remoteReceived()).toEqual({ ack: { ok: true, error_from: null } });
    expect(legs.remote_state).toBe("received");
    expect(legs.remoteDone(false)).toEqual({ final: { local_ok: true, remote_ok: false } });
  });

  test("memsync with a failed local leg ignores received and waits for the peer's disk", () => {
    const legs = new RequestLegs("memsync", true);
    expect(legs.remoteReceived()).toEqual({});
    expect(legs.localDone(false)).toEqual({});
    expect(legs.remoteDone(true)).toEqual({ ack: { ok: true, error_from: null }, final: { local_ok: false, remote_ok: true } });
  });

  test("both legs failed: the local error is reported", () => {
    const legs = new RequestLegs("fullsync", true);
    expect(legs.remoteDone(false)).toEqual({});
    expect(legs.localDone(false)).toEqual({ ack: { ok: false, error_from: "local" }, final: { local_ok: false, remote_ok: false } });
  });

  test("async answers at the local write and finishes in the background", () => {
    const legs = new RequestLegs("async", true);
    expect(legs.localDone(true)).toEqual({ ack: { ok: true, error_from: null } });
    expect(legs.remoteDone(true)).toEqual({ final: { local_ok: true, remote_ok: true } });
  });

  test("unsent remote leg: final at the local completion with remote_ok false", () => {
    for (const mode of MODES) {
      const legs = new RequestLegs(mode, false);
      expect(legs.remote_state).toBe("unsent");
      expect(legs.localDone(true)).toEqual({ ack: { ok: true, error_from: null }, final: { local_ok: true, remote_ok: false } });
    }
  });

  test("a leg completed twice, or a received after the end, throws", () => {
    const legs = new RequestLegs("memsync", true);
    legs.localDone(true);
    expect(() => legs.localDone(true)).toThrow("local leg completed twice");
    legs.remoteDone(true);
    expect(() => legs.remoteReceived()).toThrow("early ack on a remote leg in state ok");
    expect(() => legs.remoteDone(true)).toThrow("remote leg completed in state ok");
    expect(() => new RequestLegs("fullsync", false).remoteDone(true)).toThrow("remote leg completed in state unsent");
  });
});
