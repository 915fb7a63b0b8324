// Every shell script under ops/ is POSIX sh: shellcheck -s sh finds nothing, and sh -n parses it.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const OPS = resolve(import.meta.dir, "../../../ops");
/** The scripts that must exist (the test fails if the search below misses one). */
const EXPECTED = [
  "carp/carp-hast-switch", "keepalived/notify.sh", "periodic/monthly/450.hast-verify", "rc.d/hastd", "switch/hast-switch", "ucarp/vip-down.sh", "ucarp/vip-up.sh", "ucarp/vip.sh",
];

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Shell scripts: a #!/bin/sh line, or a .sh name; plus the sh fragment that hast-switch sources. */
function shellScripts(): string[] {
  return walk(OPS).filter((path) => {
    if (path.endsWith(".sh") || path.endsWith("hast-switch.conf.sample")) return true;
    return /^#!\s*\/bin\/sh\b/.test(readFileSync(path, "utf8").split("\n", 1)[0] ?? "");
  }).sort();
}

const shellcheck = Bun.which("shellcheck");
if (!shellcheck) console.log("skip: shellcheck on ops/: shellcheck is not installed (apt-get install shellcheck)");

describe("ops/ shell scripts", () => {
  const scripts = shellScripts();

  test("the search finds every script", () => {
    const found = scripts.map((p) => relative(OPS, p));
    for (const name of EXPECTED) expect(found).toContain(name);
  });

  test("every script with a #! line is executable", () => {
    const notExecutable = scripts.filter((p) => readFileSync(p, "utf8").startsWith("#!") && (statSync(p).mode & 0o111) === 0);
    expect(notExecutable.map((p) => relative(OPS, p))).toEqual([]);
  });

  test("sh -n parses every script", () => {
    const failures = scripts.flatMap((p) => {
      const r = Bun.spawnSync(["sh", "-n", p], { stdout: "pipe", stderr: "pipe" });
      return r.exitCode === 0 ? [] : [`${relative(OPS, p)}: ${r.stderr.toString().trim()}`];
    });
    expect(failures).toEqual([]);
  });

  test.skipIf(!shellcheck)("shellcheck -s sh reports nothing", () => {
    const r = Bun.spawnSync([shellcheck!, "-s", "sh", "-f", "gcc", ...scripts], { stdout: "pipe", stderr: "pipe" });
    const findings = `${r.stdout.toString()}${r.stderr.toString()}`.trim();
    expect(findings).toBe("");
    expect(r.exitCode).toBe(0);
  });
});
