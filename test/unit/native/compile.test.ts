// `bun build --compile` embeds native/build/libggate.so through src/native.ts's file import:
// a compiled script must run from another directory with no .so beside it.
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const COMPILE_TIMEOUT_MS = 240_000;
const RUN_TIMEOUT_MS = 30_000;

const dir = mkdtempSync(join(tmpdir(), "hast-compile-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("a compiled script using src/native.ts runs from another cwd", () => {
  const nativeTs = join(import.meta.dir, "../../../src/native.ts");
  const script = join(dir, "probe.ts");
  writeFileSync(script, `import { native } from ${JSON.stringify(nativeTs)};
const path = process.argv[2]!, fd = native.open(path, { write: true, create: true });
native.pwrite(fd, path, new TextEncoder().encode("hello from a binary"), 0);
const back = new Uint8Array(19); native.pread(fd, path, back, 0); native.close(fd, path);
console.log(native.libPath, new TextDecoder().decode(back));
`);
  const binary = join(dir, "probe");
  const build = Bun.spawnSync([process.execPath, "build", "--compile", script, "--outfile", binary],
    { cwd: dir, timeout: COMPILE_TIMEOUT_MS, stdout: "pipe", stderr: "pipe" });
  expect(build.stderr.toString()).not.toContain("error");
  expect(build.exitCode).toBe(0);

  const elsewhere = join(dir, "elsewhere");
  mkdirSync(elsewhere);
  const run = Bun.spawnSync([binary, join(elsewhere, "data")], {
    cwd: elsewhere,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TMPDIR: elsewhere }, // the .so is extracted under TMPDIR
    timeout: RUN_TIMEOUT_MS,
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(run.stderr.toString()).toBe("");
  expect(run.exitCode).toBe(0);
  const [libPath, ...words] = run.stdout.toString().trim().split(" ");
  expect(libPath).toStartWith("/$bunfs/"); // embedded, not the build tree's copy
  expect(words.join(" ")).toBe("hello from a binary");
}, COMPILE_TIMEOUT_MS + RUN_TIMEOUT_MS);
