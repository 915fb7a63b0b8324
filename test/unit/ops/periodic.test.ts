// ops/periodic/monthly/450.hast-verify (FreeBSD periodic(8)): runs `hastctl verify all` only when
// enabled, with the configured hastctl and config, and maps its failure to periodic's error code.
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const SCRIPT = resolve(import.meta.dir, "../../../ops/periodic/monthly/450.hast-verify");
const dir = mkdtempSync(join(tmpdir(), "hast-periodic-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stand-in hastctl that records its arguments and exits with `code`. */
function fakeHastctl(code: number): { path: string; calls: () => string[] } {
  const log = join(dir, `calls-${code}`);
  const path = join(dir, `hastctl-${code}`);
  writeFileSync(path, `#!/bin/sh\necho "$*" >> '${log}'\nexit ${code}\n`);
  chmodSync(path, 0o755);
  return { path, calls: () => readFileSync(log, "utf8").trim().split("\n") };
}

function run(env: Record<string, string>): { code: number; stdout: string } {
  // /etc/defaults/periodic.conf exists on FreeBSD only: here the settings come from the environment.
  const r = Bun.spawnSync(["sh", SCRIPT], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...env }, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, stdout: r.stdout.toString() };
}

test("disabled (the default), it runs nothing and reports nothing", () => {
  const fake = fakeHastctl(0);
  for (const enable of [{}, { monthly_hast_verify_enable: "NO" }] as Record<string, string>[]) {
    expect(run({ ...enable, monthly_hast_verify_hastctl: fake.path })).toEqual({ code: 0, stdout: "" });
  }
  expect(() => fake.calls()).toThrow(); // never called: no log written
});

test("enabled, it starts the verification of every resource with the configured config", () => {
  const fake = fakeHastctl(0);
  const r = run({ monthly_hast_verify_enable: "YES", monthly_hast_verify_hastctl: fake.path, monthly_hast_verify_config: "/usr/local/etc/hast.conf" });
  expect(r.code).toBe(0);
  expect(r.stdout).toContain("Starting online verification of HAST resources:");
  expect(fake.calls()).toEqual(["verify -c /usr/local/etc/hast.conf all"]);
  expect(run({ monthly_hast_verify_enable: "yes", monthly_hast_verify_hastctl: fake.path }).code).toBe(0);
  expect(fake.calls().at(-1)).toBe("verify -c /etc/hast.conf all");
});

test("a refused verification (hastctl's non-zero exit) is periodic's error, 3", () => {
  const fake = fakeHastctl(5);
  expect(run({ monthly_hast_verify_enable: "YES", monthly_hast_verify_hastctl: fake.path }).code).toBe(3);
});
