// The manual pages (man/): each passes mandoc's lint, and each names what the code has: every
// hastctl subcommand and option of its usage text, every hast.conf statement and value, every
// hastd flag and hook event. A page that falls behind the code fails here.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { STATEMENTS } from "../../../src/config/_statements.ts";
import { EVENT_NAMES } from "../../../src/wire/control.ts";

const ROOT = resolve(import.meta.dir, "../../..");
const PAGES = ["hastd.8", "hastctl.8", "hast.conf.5"];
const page = (name: string) => readFileSync(join(ROOT, "man", name), "utf8");
const mandoc = Bun.which("mandoc");
if (!mandoc) console.log("skip: mandoc is not installed (apt-get install mandoc), so the manual pages are not linted");

/** The words of `source` a page must hold that it does not. */
function missing(source: string, wanted: string[]): string[] {
  return wanted.filter((w) => !source.includes(w));
}

test.skipIf(!mandoc)("mandoc -T lint finds nothing to warn about in any page", () => {
  for (const name of PAGES) {
    const r = Bun.spawnSync([mandoc!, "-T", "lint", "-W", "warning", join(ROOT, "man", name)], { stdout: "pipe", stderr: "pipe" });
    expect(`${r.stdout.toString()}${r.stderr.toString()}`).toBe("");
    expect(r.exitCode).toBe(0);
  }
});

test("hastctl.8 has every subcommand and option of hastctl's usage text", () => {
  const source = readFileSync(join(ROOT, "src/cli/hastctl.ts"), "utf8");
  const usage = /const USAGE = `([^`]*)`/.exec(source)![1]!;
  const subcommands = [...new Set([...usage.matchAll(/hastctl (\w+)/g)].map((m) => m[1]!))];
  const long = [...new Set([...usage.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!))];
  const short = [...new Set([...usage.matchAll(/\[-([a-z])\b/g)].map((m) => m[1]!))];
  expect(subcommands).toContain("events");
  expect(long).toContain("initial-sync");
  expect(short).toContain("m");
  const man = page("hastctl.8");
  expect(missing(man, subcommands.map((s) => `Cm ${s}`))).toEqual([]);
  expect(missing(man, long.map((o) => `Fl -${o}`))).toEqual([]);
  expect(missing(man, short.map((o) => `Fl ${o}`))).toEqual([]);
});

test("hast.conf.5 has every statement and every value a statement chooses from", () => {
  const man = page("hast.conf.5");
  const names = Object.keys(STATEMENTS);
  const choices = Object.values(STATEMENTS).flatMap((s) => s.choices ?? []);
  expect(names.length).toBeGreaterThan(20);
  expect(missing(man, names.map((n) => `Ic ${n}`))).toEqual([]);
  expect(missing(man, choices)).toEqual([]);
});

test("hastd.8 has every flag and every hook event", () => {
  const man = page("hastd.8");
  expect(missing(man, ["c", "d", "F", "h", "P"].map((f) => `Fl ${f}`))).toEqual([]);
  expect(missing(man, [...EVENT_NAMES])).toEqual([]);
});
