// The connect decision table (spec 7.2), one test per row, every field of the result checked.
import { describe, expect, test } from "bun:test";
import { decideConnect, type Generation, type PrimaryHello } from "../../../src/core/connect-decision.ts";

const RESUID = 0x1234n;

function secondary(localcnt: bigint, remotecnt: bigint, resuid = RESUID): Generation {
  return { resuid, localcnt, remotecnt };
}

function hello(localcnt: bigint, remotecnt: bigint, extra: Partial<PrimaryHello> = {}): PrimaryHello {
  return { resuid: RESUID, localcnt, remotecnt, virgin: false, initial_full_sync: false, ...extra };
}

describe("decideConnect", () => {
  test("row 1: fresh secondary, virgin primary: adopt resuid, no map", () => {
    expect(decideConnect(secondary(0n, 0n, 0n), hello(0n, 0n, { virgin: true }))).toEqual({
      kind: "accept", row: 1, syncsrc: "primary", map: "none", adopt_resuid: true, virgin: true,
    });
  });

  test("row 1: fresh secondary, virgin primary asking for an initial full sync", () => {
    expect(decideConnect(secondary(0n, 0n, 0n), hello(0n, 0n, { virgin: true, initial_full_sync: true }))).toEqual({
      kind: "accept", row: 1, syncsrc: "primary", map: "full", adopt_resuid: true, virgin: true,
    });
  });

  test("row 1: re-created secondary, primary with history: full sync", () => {
    expect(decideConnect(secondary(0n, 0n, 0n), hello(5n, 3n))).toEqual({
      kind: "accept", row: 1, syncsrc: "primary", map: "full", adopt_resuid: true, virgin: true,
    });
  });

  test("row 2: resuid mismatch", () => {
    expect(decideConnect(secondary(1n, 1n, 0x99n), hello(1n, 1n))).toEqual({
      kind: "resuid-mismatch", row: 2,
      message: `Resource unique ID mismatch (primary=${RESUID}, secondary=${0x99n}).`,
    });
  });

  test("row 3: primary out of date: secondary's map, sync from the secondary", () => {
    expect(decideConnect(secondary(2n, 1n), hello(1n, 1n))).toEqual({
      kind: "accept", row: 3, syncsrc: "secondary", map: "own", adopt_resuid: false, virgin: false,
    });
  });

  test("row 4: in sync: secondary's map, sync from the primary just in case", () => {
    expect(decideConnect(secondary(3n, 4n), hello(4n, 3n))).toEqual({
      kind: "accept", row: 4, syncsrc: "primary", map: "own", adopt_resuid: false, virgin: false,
    });
  });

  test("row 5: secondary out of date: secondary's map, sync from the primary", () => {
    expect(decideConnect(secondary(0n, 0n), hello(1n, 0n))).toEqual({
      kind: "accept", row: 5, syncsrc: "primary", map: "own", adopt_resuid: false, virgin: false,
    });
  });

  test("row 6: both changed while apart: split-brain", () => {
    expect(decideConnect(secondary(2n, 0n), hello(1n, 1n))).toEqual({
      kind: "split-brain", row: 6, message: "Split-brain condition!",
    });
  });

  test("row 7: counters that cannot happen: full sync with a warning, direction by localcnt", () => {
    const toPrimary = decideConnect(secondary(1n, 5n), hello(2n, 1n)); // S.remote > P.local
    expect(toPrimary).toEqual({
      kind: "accept", row: 7, syncsrc: "primary", map: "full", adopt_resuid: false, virgin: false,
      warning: "Generation counters disagree (primary localcnt=2 remotecnt=1, secondary localcnt=1 remotecnt=5); doing a full synchronization.",
    });
    const fromSecondary = decideConnect(secondary(3n, 5n), hello(2n, 1n)); // S.local > P.remote, S.remote > P.local
    expect(fromSecondary).toMatchObject({ kind: "accept", row: 7, syncsrc: "secondary", map: "full", adopt_resuid: false, virgin: false });
    const primaryAhead = decideConnect(secondary(0n, 0n), hello(0n, 2n)); // P.remote > S.local
    expect(primaryAhead).toMatchObject({ kind: "accept", row: 7, syncsrc: "primary", map: "full" });
  });

  test("a restarted primary that wrote while apart is caught as split-brain once the secondary also wrote", () => {
    // Both ran as primary while apart, each bumping its own localcnt once (primary-engine tests
    // check the bump after a restart): must never read as "in sync".
    expect(decideConnect(secondary(2n, 0n), hello(2n, 1n)).kind).toBe("split-brain");
  });

  test("an incomplete secondary is never the sync source, even with newer counters: the primary's copy goes over its changes", () => {
    const warning = "This node's copy is incomplete, so the primary's copy is taken although this node changed data since: " +
      "those changes are dropped (the primary copies its own over them).";
    expect(decideConnect(secondary(5n, 3n), hello(3n, 4n), true)).toEqual({
      kind: "accept", row: 3, syncsrc: "primary", map: "own", adopt_resuid: false, virgin: false, warning,
    });
    const row7 = decideConnect(secondary(9n, 5n), hello(3n, 4n), true);
    expect(row7.kind === "accept" && [row7.row, row7.syncsrc, row7.map]).toEqual([7, "primary", "full"]);
    // Complete, the same counters make it the source.
    const source = decideConnect(secondary(5n, 3n), hello(3n, 4n), false);
    expect(source.kind === "accept" && source.syncsrc).toBe("secondary");
    // Where the primary is the source anyway, nothing changes.
    expect(decideConnect(secondary(3n, 3n), hello(3n, 3n), true)).toEqual(decideConnect(secondary(3n, 3n), hello(3n, 3n)));
  });
});
