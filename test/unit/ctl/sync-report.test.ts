// How a synchronization pass and an online verification are reported: the worker times them, and
// hastctl list and status print them.
import { expect, test } from "bun:test";
import { formatLastSync, formatLastVerify, formatStatus, formatVerifyProgress } from "../../../src/ctl/format.ts";
import { SyncRate } from "../../../src/daemon/sync-rate.ts";
import { VerifyLog } from "../../../src/daemon/verify-log.ts";

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

test("a verification's progress and its last result, as hastctl list and status print them", () => {
  const v = { done: 32 << 20, total: 64 << 20, rate: 16 << 20, eta: 2, differ_bytes: 1 << 20, differ_chunks: 1, skipped_bytes: 2 << 20, failed_bytes: 0,
    compare: "sha256" as const, from_offset: 0 };
  expect(formatVerifyProgress(v)).toBe("32MB/64MB (50%), 16MB/s, ETA 2s, by SHA-256; 1 chunks (1.0MB) differed, 2.0MB skipped (still to be synchronized)");
  const last = { finished: "2026-11-28T03:00:00.000Z", seconds: 4, ended: "disconnected" as const, total_bytes: 64 << 20, same_bytes: 30 << 20,
    differ_bytes: 2 << 20, differ_chunks: 2, skipped_bytes: 0, failed_bytes: 1 << 20, compare: "data" as const, from_offset: 0, resume_offset: 33 << 20 };
  expect(formatLastVerify(last)).toBe("interrupted by the link's loss, 32MB compared by the peer's data in 4.0s; 2 chunks (2.0MB) differed, 1.0MB not compared (read errors); finished 2026-11-28T03:00:00.000Z; hastctl verify --resume goes on from offset 33MB");
  expect(formatVerifyProgress({ ...v, from_offset: 16 << 20 })).toBe("32MB/64MB (50%), 16MB/s, ETA 2s, from offset 16MB, by SHA-256; 1 chunks (1.0MB) differed, 2.0MB skipped (still to be synchronized)");
  expect(formatLastVerify({ ...last, ended: "complete", from_offset: 16 << 20, resume_offset: 80 << 20 }))
    .toBe("complete, 32MB compared from offset 16MB by the peer's data in 4.0s; 2 chunks (2.0MB) differed, 1.0MB not compared (read errors); finished 2026-11-28T03:00:00.000Z");
  const row = formatStatus([{ name: "r0", role: "primary", status: "complete", localpath: "/dev/da0", remoteaddr: "tcp://b", verify: v }]);
  expect(row.split("\n")[1]).toBe("r0\tcomplete primary        /dev/da0\ttcp://b\tverifying 32MB/64MB (50%), 16MB/s, ETA 2s");
});

test("a verification is timed from its start; its progress has a rate once two samples are apart; both say how it compares", async () => {
  const log = new VerifyLog();
  log.started("data");
  const counts = { from_offset: 0, done_bytes: 0, total_bytes: 1 << 20, same_bytes: 0, differ_bytes: 0, differ_chunks: 0, skipped_bytes: 0, failed_bytes: 0 };
  expect(log.progress(counts)).toMatchObject({ done: 0, total: 1 << 20, rate: 0, eta: null, compare: "data" });
  await Bun.sleep(20);
  const later = log.progress({ ...counts, done_bytes: 1 << 19, same_bytes: 1 << 19 });
  expect(later.rate).toBeGreaterThan(0);
  expect(later.eta).toBeGreaterThan(0);
  log.ended({ ...counts, done_bytes: 1 << 20, same_bytes: 1 << 20, ended: "complete", resume_offset: 1 << 20 });
  expect(log.last).toMatchObject({ ended: "complete", total_bytes: 1 << 20, same_bytes: 1 << 20, compare: "data" });
  expect(log.last!.seconds).toBeGreaterThanOrEqual(0.015);
});
