// The secondary's cache epoch, as the main process keeps it: one id while the component's flushes
// succeed and no worker reports a failed one; a new id after either, or for a new descriptor.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CacheEpoch } from "../../../src/io/cache-epoch.ts";
import { setFaultInjection } from "../../../src/native.ts";

let dir: string;
let path: string;
let cache: CacheEpoch;

function component(at: string): void {
  writeFileSync(at, "");
  truncateSync(at, 1 << 20);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "hast-cache-epoch-"));
  path = join(dir, "component.img");
  component(path);
  cache = new CacheEpoch(true);
});

afterEach(async () => {
  setFaultInjection(undefined);
  await cache.close();
  rmSync(dir, { recursive: true, force: true });
});

async function epoch(): Promise<Uint8Array> {
  const e = await cache.take(path);
  expect(e.flush_error).toBeNull();
  expect(e.epoch).toHaveLength(16);
  return e.epoch!;
}

describe("CacheEpoch", () => {
  test("is the same id while its flushes succeed", async () => {
    const first = await epoch();
    expect(await epoch()).toEqual(first);
    expect(await epoch()).toEqual(first);
  });

  test("a failed flush answers null with the error, and the next id is a new one", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:EIO:1");
    const failed = await cache.take(path);
    expect(failed.epoch).toBeNull();
    expect(failed.flush_error).toContain("EIO");
    const next = await epoch();
    expect(next).not.toEqual(first);
    expect(await epoch()).toEqual(next);
  });

  test("a worker's failed flush (spoil) makes the next id a new one", async () => {
    const first = await epoch();
    cache.spoil();
    const next = await epoch();
    expect(next).not.toEqual(first);
    expect(await epoch()).toEqual(next);
  });

  test("flushes run one at a time: the one behind a failed flush does not hand out the old id", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:delay=50:1,fdatasync:component.img:EIO:1");
    const [slow, failed, behind] = await Promise.all([cache.take(path), cache.take(path), cache.take(path)]);
    expect(slow.epoch).toEqual(first);
    expect(failed.epoch).toBeNull();
    expect(behind.epoch).not.toBeNull();
    expect(behind.epoch).not.toEqual(first);
  });

  test("a component replaced under the same path, or after close, gets a new id", async () => {
    const first = await epoch();
    const other = join(dir, "new.img");
    component(other);
    renameSync(other, path);
    const replaced = await epoch();
    expect(replaced).not.toEqual(first);
    await cache.close();
    expect(await epoch()).not.toEqual(replaced);
  });

  test("a missing component answers null with the error", async () => {
    const e = await cache.take(join(dir, "missing.img"));
    expect(e.epoch).toBeNull();
    expect(e.flush_error).toContain("ENOENT");
  });

  test("where the system does not report write-back errors to every open file, there is no epoch", async () => {
    const unsupported = new CacheEpoch(false);
    expect(await unsupported.take(path)).toEqual({ epoch: null, flush_error: null });
  });
});
