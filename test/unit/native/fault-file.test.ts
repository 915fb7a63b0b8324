// HAST_FAULT_INJECT_FILE: fault rules read from a file that a test replaces mid-run.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native, NativeError, setFaultInjection, setFaultInjectionFile } from "../../../src/native.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-fault-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => {
  setFaultInjectionFile(null);
  setFaultInjection(undefined);
});

const rules = join(dir, "rules");
let serial = 0;
/** Replaces the rules file the way the integration tests do: write aside, rename over. */
function setRules(text: string): void {
  const tmp = join(dir, `rules.${serial++}`);
  writeFileSync(tmp, text);
  renameSync(tmp, rules);
}

function component(): { path: string; fd: number } {
  const path = join(dir, `disk-${serial++}`);
  writeFileSync(path, "");
  truncateSync(path, 65536);
  return { path, fd: native.open(path, { write: true }) };
}

function pwriteError(fd: number, path: string): string | null {
  try {
    native.pwrite(fd, path, new Uint8Array(512), 0);
    return null;
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    return err.code;
  }
}

describe("HAST_FAULT_INJECT_FILE", () => {
  test("a missing file injects nothing; rules start, change and stop when the file is replaced", () => {
    const { path, fd } = component();
    try {
      setFaultInjectionFile(rules);
      expect(pwriteError(fd, path)).toBeNull();
      setRules("pwrite:disk-:EIO:2\n");
      expect(pwriteError(fd, path)).toBe("EIO");
      expect(pwriteError(fd, path)).toBe("EIO");
      expect(pwriteError(fd, path)).toBeNull(); // count used up, the file unchanged: no re-read
      setRules("fdatasync:disk-:ENOSPC\npwrite:disk-:EROFS:1");
      expect(pwriteError(fd, path)).toBe("EROFS");
      expect(pwriteError(fd, path)).toBeNull();
      expect(() => native.fdatasync(fd, path)).toThrow("injected by HAST_FAULT_INJECT");
      rmSync(rules);
      expect(() => native.fdatasync(fd, path)).not.toThrow();
    } finally {
      native.close(fd, path);
    }
  });

  test("the environment variable is read by a fresh process, and a bad file is a one-line error naming it", async () => {
    setRules("pread::EIO:1");
    const script = `
      const { native } = await import(${JSON.stringify(join(import.meta.dir, "../../../src/native.ts"))});
      const path = ${JSON.stringify(join(dir, "env-disk"))};
      require("node:fs").writeFileSync(path, "x".repeat(512));
      const fd = native.open(path, { write: false });
      const buf = new Uint8Array(512);
      for (const _ of [1, 2]) { try { native.pread(fd, path, buf, 0); console.log("ok"); } catch (e) { console.log(e.code); } }
      require("node:fs").writeFileSync(${JSON.stringify(rules)}, "pread::EBOGUS");
      try { native.pread(fd, path, buf, 0); } catch (e) { console.log(e.message); }`;
    const proc = Bun.spawn([process.execPath, "-e", script], {
      env: { ...process.env, HAST_FAULT_INJECT_FILE: rules, HAST_FAULT_INJECT: "pread::EROFS" }, stdout: "pipe", stderr: "pipe",
    });
    const [out, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    expect(err).toBe("");
    const lines = out.trim().split("\n");
    expect(lines.slice(0, 2)).toEqual(["EIO", "ok"]);
    expect(lines[2]).toBe(`HAST_FAULT_INJECT_FILE ${rules}: "pread::EBOGUS": unknown errno name "EBOGUS" (format <op>:<path-substring>:<errno-name>|delay=<ms>|assert[:<count>])`);
  });
});
