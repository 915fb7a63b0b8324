import { expect, test } from "bun:test";
import { Pacer } from "../../../src/daemon/pacer.ts";

const MiB = 1 << 20;

function recorder(rate: number | null): { pacer: Pacer; calls: [number, number][] } {
  const calls: [number, number][] = [];
  return { pacer: new Pacer(rate, (bytes, cap) => void calls.push([bytes, cap])), calls };
}

test("unpaced: the engine is told once, at the start, and no timer runs", async () => {
  const { pacer, calls } = recorder(null);
  pacer.start();
  await Bun.sleep(250);
  expect(calls).toEqual([[Infinity, Infinity]]);
  pacer.stop();
});

test("paced: the allowance starts at nothing (capped at a quarter second's worth) and grows with the time that passed", async () => {
  const { pacer, calls } = recorder(16 * MiB);
  const started_ms = performance.now();
  pacer.start();
  await Bun.sleep(350);
  pacer.stop();
  const elapsed_s = (performance.now() - started_ms) / 1000;
  expect(calls[0]).toEqual([0, 4 * MiB]);
  const ticks = calls.slice(1);
  expect(ticks.length).toBeGreaterThanOrEqual(2);
  for (const [bytes, cap] of ticks) {
    expect(cap).toBe(4 * MiB);
    expect(bytes).toBeGreaterThan(0);
  }
  // Each tick hands out the time since the last one: together, no more than the time that passed.
  const handed = ticks.reduce((sum, [bytes]) => sum + bytes, 0);
  expect(handed).toBeLessThanOrEqual(16 * MiB * elapsed_s);
  const after = calls.length;
  await Bun.sleep(250);
  expect(calls.length).toBe(after); // stopped: no more ticks
});

test("a reload's rate applies to work running only; lifting it tells the engine so", async () => {
  const { pacer, calls } = recorder(null);
  pacer.setRate(8 * MiB); // nothing runs: nothing to tell
  expect(calls).toEqual([]);
  pacer.start();
  expect(calls).toEqual([[0, 2 * MiB]]);
  pacer.setRate(null);
  expect(calls.at(-1)).toEqual([Infinity, Infinity]);
  const after = calls.length;
  await Bun.sleep(250);
  expect(calls.length).toBe(after); // no timer left behind
  pacer.setRate(MiB); // unpaced running one becomes paced
  expect(calls.at(-1)).toEqual([0, MiB / 4]);
  pacer.stop();
});
