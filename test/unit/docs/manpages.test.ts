// The manual pages (man/): each passes mandoc's lint, and each names what the code has: every
// hastd flag and hook event. A page that falls behind the code fails here.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { EVENT_NAMES } from "../../../src/wire/control.ts";

const ROOT = resolve(import.meta.dir, "../../..");
const PAGES = ["hastd.8"];
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

test("hastd.8 has every flag and every hook event", () => {
  const man = page("hastd.8");
  expect(missing(man, ["c", "d", "F", "h", "P"].map((f) => `Fl ${f}`))).toEqual([]);
  expect(missing(man, [...EVENT_NAMES])).toEqual([]);
});
