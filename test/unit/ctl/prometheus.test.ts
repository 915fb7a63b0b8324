// hastctl metrics' output (src/ctl/prometheus.ts) read back with a strict reader of the text format.
import { describe, expect, test } from "bun:test";
import { formatPrometheus } from "../../../src/ctl/prometheus.ts";
import type { ResourceStatus } from "../../../src/wire/control.ts";
import { parseExposition, sampleValue } from "./exposition.ts";

const primary: ResourceStatus = {
  name: "r0", role: "primary", provname: "r0", localpath: "/dev/vtbd1", remoteaddr: "tcp4://10.0.0.2:8457",
  replication: "memsync", checksum: "none", compression: "none", sync_rate: 50 << 20, status: "complete", workerpid: 4242,
  extentsize: 2 * 1024 * 1024, keepdirty: 64, dirty: 6 * 1024 * 1024, nbd: "unix:/var/run/hast/r0.sock",
  statistics: { reads: 10, writes: 20, deletes: 3, flushes: 4, activemap_updates: 5, direct_bytes: 1 << 30, sync_unchanged_bytes: 3 << 20,
    local_errors: { read: 1, write: 0, delete: 0, flush: 2 } },
  sync: { done: 1024, total: 4096, rate: 512, eta: 6 },
  last_sync: { bytes: 268435456, seconds: 0.25, finished: "2026-11-27T12:00:00.000Z" },
};
const stopped: ResourceStatus = {
  name: "r1", role: "init", provname: "r1", localpath: "/dev/vtbd2", remoteaddr: "none", replication: "async",
  workerpid: 0, extentsize: 0, keepdirty: 0, dirty: 0,
};

describe("hastctl metrics output", () => {
  test("every figure of a primary's status, in the text format", () => {
    const f = parseExposition(formatPrometheus([primary]));
    const r0 = { resource: "r0" };
    expect(sampleValue(f, "hast_up", r0)).toBe(1);
    expect(sampleValue(f, "hast_role", { ...r0, role: "primary" })).toBe(1);
    expect(sampleValue(f, "hast_role", { ...r0, role: "secondary" })).toBe(0);
    expect(sampleValue(f, "hast_role", { ...r0, role: "init" })).toBe(0);
    expect(sampleValue(f, "hast_info", { ...r0, provname: "r0", localpath: "/dev/vtbd1", remoteaddr: "tcp4://10.0.0.2:8457", replication: "memsync" })).toBe(1);
    expect(sampleValue(f, "hast_worker_running", r0)).toBe(1);
    expect(sampleValue(f, "hast_connected", r0)).toBe(1);
    expect(sampleValue(f, "hast_split_brain", r0)).toBe(0);
    expect(sampleValue(f, "hast_dirty_bytes", r0)).toBe(6 * 1024 * 1024);
    expect(sampleValue(f, "hast_extent_bytes", r0)).toBe(2 * 1024 * 1024);
    expect(sampleValue(f, "hast_reads_total", r0)).toBe(10);
    expect(sampleValue(f, "hast_writes_total", r0)).toBe(20);
    expect(sampleValue(f, "hast_deletes_total", r0)).toBe(3);
    expect(sampleValue(f, "hast_flushes_total", r0)).toBe(4);
    expect(sampleValue(f, "hast_activemap_updates_total", r0)).toBe(5);
    expect(sampleValue(f, "hast_direct_bytes_total", r0)).toBe(1 << 30);
    expect(sampleValue(f, "hast_sync_unchanged_bytes_total", r0)).toBe(3 << 20);
    expect(sampleValue(f, "hast_local_errors_total", { ...r0, op: "read" })).toBe(1);
    expect(sampleValue(f, "hast_local_errors_total", { ...r0, op: "flush" })).toBe(2);
    expect(sampleValue(f, "hast_sync_running", r0)).toBe(1);
    expect(sampleValue(f, "hast_sync_done_bytes", r0)).toBe(1024);
    expect(sampleValue(f, "hast_sync_total_bytes", r0)).toBe(4096);
    expect(sampleValue(f, "hast_sync_rate_bytes_per_second", r0)).toBe(512);
    expect(sampleValue(f, "hast_sync_eta_seconds", r0)).toBe(6);
    expect(sampleValue(f, "hast_sync_rate_limit_bytes_per_second", r0)).toBe(50 << 20);
    expect(f.find((x) => x.name === "hast_verify_rate_limit_bytes_per_second")).toBeUndefined(); // no verify_rate: no family
    expect(sampleValue(f, "hast_last_sync_bytes", r0)).toBe(268435456);
    expect(sampleValue(f, "hast_last_sync_duration_seconds", r0)).toBe(0.25);
    expect(sampleValue(f, "hast_last_sync_finished_timestamp_seconds", r0)).toBe(Date.UTC(2026, 10, 27, 12) / 1000);
    expect(f.find((x) => x.name === "hast_writes_total")?.type).toBe("counter");
    expect(f.find((x) => x.name === "hast_dirty_bytes")?.type).toBe("gauge");
  });

  test("a resource without a worker has no worker figures; a degraded one is not connected", () => {
    const degraded: ResourceStatus = { ...primary, name: "r2", status: "degraded", sync: { done: 0, total: 8192, rate: 0, eta: null } };
    delete degraded.last_sync;
    const f = parseExposition(formatPrometheus([stopped, degraded]));
    expect(sampleValue(f, "hast_role", { resource: "r1", role: "init" })).toBe(1);
    expect(sampleValue(f, "hast_worker_running", { resource: "r1" })).toBe(0);
    for (const name of ["hast_connected", "hast_extent_bytes", "hast_reads_total", "hast_sync_running"]) {
      expect(f.find((x) => x.name === name)?.samples.some((s) => s.labels.resource === "r1")).toBeFalsy();
    }
    expect(sampleValue(f, "hast_connected", { resource: "r2" })).toBe(0);
    // No rate yet: no ETA sample rather than a made-up one; no pass completed: no last_sync figures.
    expect(sampleValue(f, "hast_sync_total_bytes", { resource: "r2" })).toBe(8192);
    expect(f.find((x) => x.name === "hast_sync_eta_seconds")).toBeUndefined();
    expect(f.find((x) => x.name === "hast_last_sync_bytes")).toBeUndefined();
    // Both resources' samples of a family sit together under one HELP and TYPE.
    expect(f.find((x) => x.name === "hast_up")?.samples.map((s) => s.labels.resource)).toEqual(["r1", "r2"]);
  });

  test("a secondary says whether its copy is complete once a worker told; a primary says nothing of it", () => {
    const secondary: ResourceStatus = { ...primary, name: "r3", role: "secondary", copy_incomplete: true };
    delete secondary.sync;
    const complete: ResourceStatus = { ...secondary, name: "r4", copy_incomplete: false };
    const f = parseExposition(formatPrometheus([primary, secondary, complete, stopped]));
    expect(sampleValue(f, "hast_copy_incomplete", { resource: "r3" })).toBe(1);
    expect(sampleValue(f, "hast_copy_incomplete", { resource: "r4" })).toBe(0);
    expect(f.find((x) => x.name === "hast_copy_incomplete")?.samples.map((s) => s.labels.resource)).toEqual(["r3", "r4"]);
  });

  test("a primary with a worker says how many extents of its copy are stale (0 when none); nobody else does", () => {
    const stale: ResourceStatus = { ...primary, name: "r5", stale_extents: 3 };
    const secondary: ResourceStatus = { ...primary, name: "r6", role: "secondary" };
    const f = parseExposition(formatPrometheus([primary, stale, secondary, stopped]));
    expect(sampleValue(f, "hast_stale_extents", { resource: "r0" })).toBe(0);
    expect(sampleValue(f, "hast_stale_extents", { resource: "r5" })).toBe(3);
    expect(f.find((x) => x.name === "hast_stale_extents")?.samples.map((s) => s.labels.resource)).toEqual(["r0", "r5"]);
  });

  test("a primary says whether a verification runs, its progress, and what the last one found; a secondary says nothing of it", () => {
    const running: ResourceStatus = {
      ...primary, name: "r7", verify: { done: 2048, total: 8192, rate: 1024, eta: 6, differ_bytes: 1024, differ_chunks: 1, skipped_bytes: 0, failed_bytes: 0, compare: "sha256", from_offset: 0 },
      last_verify: { finished: "2026-11-28T03:00:00.000Z", seconds: 12.5, ended: "stopped", total_bytes: 8192, same_bytes: 4096, differ_bytes: 0, differ_chunks: 0, skipped_bytes: 1024, failed_bytes: 512, compare: "sha256", from_offset: 0, resume_offset: 4096 },
    };
    const secondary: ResourceStatus = { ...primary, name: "r8", role: "secondary" };
    const f = parseExposition(formatPrometheus([primary, running, secondary]));
    expect(sampleValue(f, "hast_verify_running", { resource: "r0" })).toBe(0);
    expect(sampleValue(f, "hast_verify_running", { resource: "r7" })).toBe(1);
    expect(f.find((x) => x.name === "hast_verify_running")?.samples.map((s) => s.labels.resource)).toEqual(["r0", "r7"]);
    expect(sampleValue(f, "hast_verify_done_bytes", { resource: "r7" })).toBe(2048);
    expect(sampleValue(f, "hast_verify_total_bytes", { resource: "r7" })).toBe(8192);
    expect(sampleValue(f, "hast_verify_differ_bytes", { resource: "r7" })).toBe(1024);
    expect(sampleValue(f, "hast_verify_eta_seconds", { resource: "r7" })).toBe(6);
    expect(sampleValue(f, "hast_last_verify_complete", { resource: "r7" })).toBe(0);
    expect(sampleValue(f, "hast_last_verify_differ_bytes", { resource: "r7" })).toBe(0);
    expect(sampleValue(f, "hast_last_verify_differ_chunks", { resource: "r7" })).toBe(0);
    expect(sampleValue(f, "hast_last_verify_unchecked_bytes", { resource: "r7" })).toBe(1536);
    expect(sampleValue(f, "hast_last_verify_finished_timestamp_seconds", { resource: "r7" })).toBe(Date.UTC(2026, 10, 28, 3) / 1000);
  });

  test("a resource hastd reported an error for is down, with nothing else", () => {
    const f = parseExposition(formatPrometheus([{ name: "nosuch", error: 1, message: "no such resource" }]));
    expect(f.map((x) => x.name)).toEqual(["hast_up"]);
    expect(sampleValue(f, "hast_up", { resource: "nosuch" })).toBe(0);
  });

  test("label values with quotes, backslashes and newlines read back as they were", () => {
    const odd = 'a"b\\c\nd';
    const f = parseExposition(formatPrometheus([{ ...stopped, localpath: odd, remoteaddr: "\\\\" }]));
    const info = f.find((x) => x.name === "hast_info")!.samples[0]!;
    expect(info.labels.localpath).toBe(odd);
    expect(info.labels.remoteaddr).toBe("\\\\");
  });

  test("no resources, no output", () => {
    expect(formatPrometheus([])).toBe("");
  });
});

describe("the test's reader of the text format", () => {
  // It must be able to fail, or the tests above prove nothing.
  test.each([
    ["a sample before its TYPE", "# HELP x_total h\nx_total{a=\"1\"} 1\n"],
    ["a counter not ending in _total", "# HELP x h\n# TYPE x counter\nx{a=\"1\"} 1\n"],
    ["a bad escape", "# HELP x h\n# TYPE x gauge\nx{a=\"\\t\"} 1\n"],
    ["an unterminated label value", "# HELP x h\n# TYPE x gauge\nx{a=\"1} 1\n"],
    ["a family split by another", "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\n# HELP y h\n# TYPE y gauge\ny{a=\"1\"} 1\nx{a=\"2\"} 1\n"],
    ["a family described twice", "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1\n# HELP x h\n# TYPE x gauge\nx{a=\"2\"} 1\n"],
    ["a bad value", "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} one\n"],
    ["no final newline", "# HELP x h\n# TYPE x gauge\nx{a=\"1\"} 1"],
  ])("rejects %s", (_what, text) => {
    expect(() => parseExposition(text)).toThrow();
  });
});
