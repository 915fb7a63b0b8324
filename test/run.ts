#!/usr/bin/env bun
// Runs every test suite (unit, fuzz, sim, integration, e2e) with `bun test`, one process per
// suite so a crash in one cannot hide the others, and prints the totals as the last line:
// "N passed, N failed[, N skipped]" (the form CI reads). Extra arguments are passed to bun test
// (e.g. `npm test -- -t nbd`). HAST_TEST_SUITES=unit,fuzz limits the suites.
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const SUITES: { dir: string; timeout_ms: number }[] = [
  { dir: "unit", timeout_ms: 20_000 },
  { dir: "fuzz", timeout_ms: 120_000 },
  { dir: "sim", timeout_ms: 600_000 },
  { dir: "integration", timeout_ms: 180_000 },
  { dir: "e2e", timeout_ms: 600_000 },
];

const root = new URL("..", import.meta.url).pathname;
const only = process.env.HAST_TEST_SUITES?.split(",").filter(Boolean);
const extra = process.argv.slice(2);
const work = mkdtempSync(join(tmpdir(), "hast-test-run-"));
const totals = { passed: 0, failed: 0, skipped: 0 };
let broken = false;

function hasTests(dir: string): boolean {
  if (!existsSync(dir)) return false;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory() ? hasTests(path) : name.endsWith(".test.ts")) return true;
  }
  return false;
}

function count(xml: string, attr: string): number {
  const m = new RegExp(`<testsuites[^>]*\\s${attr}="(\\d+)"`).exec(xml);
  return m ? Number(m[1]) : 0;
}

for (const suite of SUITES) {
  if (only && !only.includes(suite.dir)) continue;
  const dir = join(root, "test", suite.dir);
  if (!hasTests(dir)) continue;
  const junit = join(work, `${suite.dir}.xml`);
  console.error(`\n=== suite ${suite.dir} ===`);
  const proc = Bun.spawnSync(
    [process.execPath, "test", `--timeout=${suite.timeout_ms}`, "--reporter=junit",
      `--reporter-outfile=${junit}`, ...extra, `./test/${suite.dir}/`],
    { cwd: root, stdio: ["ignore", "inherit", "inherit"], env: process.env },
  );
  let xml = "";
  try {
    xml = readFileSync(junit, "utf8");
  } catch {
    console.error(`suite ${suite.dir}: bun test exited ${proc.exitCode} without a report`);
    broken = true;
    continue;
  }
  const tests = count(xml, "tests"), failed = count(xml, "failures"), skipped = count(xml, "skipped");
  totals.passed += tests - failed - skipped;
  totals.failed += failed;
  totals.skipped += skipped;
  if (proc.exitCode !== 0 && failed === 0) {
    console.error(`suite ${suite.dir}: bun test exited ${proc.exitCode} with no failing test recorded`);
    broken = true;
    totals.failed += 1;
  }
}
rmSync(work, { recursive: true, force: true });
const skipped = totals.skipped ? `, ${totals.skipped} skipped` : "";
console.log(`${totals.passed} passed, ${totals.failed} failed${skipped}`);
process.exit(totals.failed > 0 || broken ? 1 : 0);
