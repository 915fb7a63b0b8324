// How a synchronization pass is reported: the worker times it from its syncstart to its syncdone
// event, and hastctl list prints it.
import { expect, test } from "bun:test";
import { formatLastSync } from "../../../src/ctl/format.ts";
import { SyncRate } from "../../../src/daemon/sync-rate.ts";

test("a pass is timed from syncstart to syncdone; an interrupted one is not reported", async () => {
  const rate = new SyncRate();
  rate.onEvent("syncstart", () => 0);
  rate.onEvent("syncintr", () => 0);
  expect(rate.last).toBeUndefined();
  await Bun.sleep(20);
  rate.onEvent("syncdone", () => 64 << 20);
  expect(rate.last!.bytes).toBe(64 << 20);
  expect(rate.last!.seconds).toBeGreaterThanOrEqual(0.015);
  expect(rate.last!.seconds).toBeLessThan(5);
  // A syncdone without a start (cannot happen in one worker) leaves the last report alone.
  const before = rate.last;
  rate.onEvent("syncdone", () => 1);
  expect(rate.last).toBe(before);
});

test("hastctl list prints bytes, duration, rate and when", () => {
  const line = formatLastSync({ bytes: 256 << 20, seconds: 2, finished: "2026-11-25T20:00:00.000Z" });
  expect(line).toBe("256MB in 2.0s, 128MB/s, finished 2026-11-25T20:00:00.000Z");
});
