#!/usr/bin/env bun
// `npm run build [-- --all] [-- --outdir DIR]`: single-file binaries dist/hastd and dist/hastctl
// for this machine (bun build --compile, native/build/libggate.so embedded through
// src/native.ts's file import), and with --all also dist/<target>/{hastd,hastctl} for the cross
// targets below. --outdir replaces dist/ (tests build into their own temp dir).
//
// A cross binary must embed a native library built for its target, so each target's library
// lives in native/build/<target>/libggate.so and the target is compiled from a staging copy of
// the tree in which that library stands at native/build/libggate.so. A library that is missing
// and cannot be cross-built here is reported with the way to build it, and the target skipped.
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE } from "../core/sysexits.ts";

const REPO_ROOT = resolve(import.meta.dir, "../..");
const USAGE = "usage: bun src/cli/build.ts [--all] [--outdir DIR]";
const NATIVE_SOURCE = join(REPO_ROOT, "native/ggate.c");
const NATIVE_HOST_LIB = join(REPO_ROOT, "native/build/libggate.so");
const BUILD_TIMEOUT_MS = 300_000;
/** What a staging copy needs: the sources and what they import (package.json for --version). */
const STAGED_PATHS = ["src", "package.json", "tsconfig.json"];

/** The programs: entry point plus extra entry points loaded at run time (Worker scripts). */
const PROGRAMS: { name: string; entry: string; workers: string[] }[] = [
  { name: "hastd", entry: "src/cli/hastd.ts", workers: ["src/gate/ggate-worker.ts"] },
  { name: "hastctl", entry: "src/cli/hastctl.ts", workers: [] },
];

interface CrossTarget {
  target: string;
  /** clang --target triple for the native library. */
  triple: string;
  /** Why the library cannot be built on this machine, or null. */
  cannotBuild: () => string | null;
  /** Extra clang flags (sysroot). */
  flags: () => string[];
  /** How to get the library when it cannot be built here. */
  howto: string;
}

const CROSS_TARGETS: CrossTarget[] = [
  {
    target: "bun-freebsd-x64",
    triple: "x86_64-unknown-freebsd14",
    cannotBuild: () => missingClang() ?? (process.env.FREEBSD_SYSROOT
      ? (existsSync(join(process.env.FREEBSD_SYSROOT, "usr/include/sys/disk.h"))
        ? null : `FREEBSD_SYSROOT=${process.env.FREEBSD_SYSROOT} has no usr/include/sys/disk.h`)
      : "FREEBSD_SYSROOT is not set (a FreeBSD 14 base tree: extract base.txz and point it there)"),
    flags: () => [`--sysroot=${process.env.FREEBSD_SYSROOT}`],
    howto: "on a FreeBSD 14 amd64 host run `sh native/build.sh` and copy native/build/libggate.so to " +
      "native/build/bun-freebsd-x64/libggate.so, or set FREEBSD_SYSROOT to an extracted base.txz",
  },
  {
    target: "bun-linux-arm64",
    triple: "aarch64-linux-gnu",
    cannotBuild: () => missingClang() ?? (existsSync("/usr/aarch64-linux-gnu/include/stdio.h")
      ? null : "no arm64 C headers in /usr/aarch64-linux-gnu (Debian: apt-get install libc6-dev-arm64-cross)"),
    // Debian's cross headers are not laid out as a sysroot: name both include directories.
    flags: () => ["-nostdinc", "-isystem", join(clangResourceDir(), "include"), "-isystem", "/usr/aarch64-linux-gnu/include"],
    howto: "on a Linux arm64 host run `sh native/build.sh` and copy native/build/libggate.so to " +
      "native/build/bun-linux-arm64/libggate.so, or install libc6-dev-arm64-cross here",
  },
];

class BuildError extends Error {
  constructor(readonly exit_code: number, message: string) {
    super(message);
  }
}

function missingClang(): string | null {
  for (const tool of ["clang", "ld.lld"]) if (!Bun.which(tool)) return `${tool} is not installed`;
  return null;
}

function clangResourceDir(): string {
  const r = Bun.spawnSync(["clang", "-print-resource-dir"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new BuildError(EX_SOFTWARE, `clang -print-resource-dir failed: ${r.stderr.toString().trim()}`);
  return r.stdout.toString().trim();
}

async function exec(argv: string[], cwd: string, what: string): Promise<void> {
  const proc = Bun.spawn(argv, { cwd, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), BUILD_TIMEOUT_MS);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited,
  ]);
  clearTimeout(timer);
  if (code !== 0 || proc.signalCode) {
    const output = `${stderr}\n${stdout}`.trim();
    throw new BuildError(EX_SOFTWARE, `${what} failed (exit ${proc.signalCode ?? code}):\n${output}`);
  }
}

function mib(path: string): string {
  return `${(statSync(path).size / 1024 / 1024).toFixed(0)} MiB`;
}

/** bun build --compile of every program from `root` into `outdir`. */
async function compilePrograms(root: string, outdir: string, target: string | null): Promise<void> {
  mkdirSync(outdir, { recursive: true });
  for (const p of PROGRAMS) {
    const outfile = join(outdir, p.name);
    // --root .: entry points keep their repo paths inside the binary, so a Worker script is at
    // ./src/gate/ggate-worker.ts there (src/gate/ggate.ts relies on it).
    const argv = [process.execPath, "build", "--compile", "--root", ".", ...(target ? [`--target=${target}`] : []),
      p.entry, ...p.workers, "--outfile", outfile];
    await exec(argv, root, `bun build --compile ${p.entry}${target ? ` for ${target}` : ""}`);
    chmodSync(outfile, 0o755);
    console.log(`built ${outfile} (${mib(outfile)})`);
  }
}

/** native/build/<target>/libggate.so: present, cross-built now, or null with the reason printed. */
async function crossLibrary(t: CrossTarget): Promise<string | null> {
  const lib = join(REPO_ROOT, "native/build", t.target, "libggate.so");
  if (existsSync(lib) && statSync(lib).mtimeMs >= statSync(NATIVE_SOURCE).mtimeMs) return lib;
  const why = t.cannotBuild();
  if (why) {
    const stale = existsSync(lib) ? " (the one there is older than native/ggate.c)" : "";
    console.log(`skipped ${t.target}: no native library ${lib}${stale}: ${why}; ${t.howto}`);
    return null;
  }
  mkdirSync(join(REPO_ROOT, "native/build", t.target), { recursive: true });
  // Shared object with libc symbols left undefined: they resolve against the libc Bun has loaded.
  await exec(["clang", `--target=${t.triple}`, ...t.flags(), "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror",
    "-fPIC", "-shared", "-nostdlib", "-fuse-ld=lld", "-Wl,--allow-shlib-undefined", "-o", lib, NATIVE_SOURCE],
  REPO_ROOT, `clang for ${t.target}`);
  console.log(`built ${lib}`);
  return lib;
}

/** A copy of the sources with `lib` as native/build/libggate.so, node_modules linked. */
function stage(lib: string): string {
  const root = mkdtempSync(join(tmpdir(), "hast-build-"));
  for (const path of STAGED_PATHS) cpSync(join(REPO_ROOT, path), join(root, path), { recursive: true });
  mkdirSync(join(root, "native/build"), { recursive: true });
  cpSync(lib, join(root, "native/build/libggate.so"));
  symlinkSync(join(REPO_ROOT, "node_modules"), join(root, "node_modules"));
  return root;
}

function parseArgs(argv: string[]): { all: boolean; outdir: string } {
  const args = { all: false, outdir: join(REPO_ROOT, "dist") };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--all") args.all = true;
    else if (argv[i] === "--outdir" && argv[i + 1] !== undefined) args.outdir = resolve(argv[++i]!);
    else throw new BuildError(EX_USAGE, `unexpected argument ${argv[i]}\n${USAGE}`);
  }
  return args;
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  await exec(["sh", "native/build.sh"], REPO_ROOT, "sh native/build.sh");
  if (!existsSync(NATIVE_HOST_LIB)) throw new BuildError(EX_SOFTWARE, `native/build.sh left no ${NATIVE_HOST_LIB}`);
  await compilePrograms(REPO_ROOT, args.outdir, null);
  if (!args.all) return EX_OK;

  let skipped = 0;
  for (const t of CROSS_TARGETS) {
    const lib = await crossLibrary(t);
    if (lib === null) {
      skipped++;
      continue;
    }
    const root = stage(lib);
    try {
      await compilePrograms(root, join(args.outdir, t.target), t.target);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }
  if (skipped) console.log(`${skipped} of ${CROSS_TARGETS.length} cross targets skipped (see above)`);
  return skipped === CROSS_TARGETS.length ? EX_UNAVAILABLE : EX_OK;
}

try {
  process.exit(await main(process.argv.slice(2)));
} catch (err) {
  if (!(err instanceof BuildError)) throw err;
  process.stderr.write(`build: ${err.message}\n`);
  process.exit(err.exit_code);
}
