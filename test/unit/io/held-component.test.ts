// The main process's descriptor of a component and its cache epoch: one id while its flushes
// succeed; a new id after a failed one, or for a new descriptor.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { closeSync, constants, mkdtempSync, openSync, readdirSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HeldComponent } from "../../../src/io/held-component.ts";
import { setFaultInjection } from "../../../src/native.ts";

let dir: string;
let path: string;
let held: HeldComponent;

function component(at: string): void {
  writeFileSync(at, "");
  truncateSync(at, 1 << 20);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "hast-held-component-"));
  path = join(dir, "component.img");
  component(path);
  held = new HeldComponent(true);
});

afterEach(async () => {
  setFaultInjection(undefined);
  await held.close();
  rmSync(dir, { recursive: true, force: true });
});

async function epoch(): Promise<Uint8Array> {
  const e = await held.flush(path);
  expect(e.flush_error).toBeNull();
  expect(e.epoch).toHaveLength(16);
  return e.epoch!;
}

describe("HeldComponent", () => {
  test("is the same id while its flushes succeed", async () => {
    const first = await epoch();
    expect(await epoch()).toEqual(first);
    expect(await epoch()).toEqual(first);
  });

  test("a failed flush answers null with the error, and the next id is a new one", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:EIO:1");
    const failed = await held.flush(path);
    expect(failed.epoch).toBeNull();
    expect(failed.flush_error).toContain("EIO");
    const next = await epoch();
    expect(next).not.toEqual(first);
    expect(await epoch()).toEqual(next);
  });

  test("a failed flush stays unacted, through later good flushes, until a primary worker acted on it", async () => {
    await epoch();
    setFaultInjection("fdatasync:component.img:EIO:1");
    expect((await held.flush(path)).flush_error).toContain("EIO");
    const first = held.unacted!;
    expect(first.error).toContain("EIO");
    await epoch(); // a later flush succeeds: the error is gone from the kernel, not from here
    expect(held.unacted).toBe(first);
    setFaultInjection("fdatasync:component.img:EIO:1");
    await held.flush(path);
    const second = held.unacted!;
    held.acted(first); // a worker started on the first: the second is newer
    expect(held.unacted).toBe(second);
    held.acted(second);
    expect(held.unacted).toBeNull();
  });

  test("a flush not done in time counts as failed: a hung disk does not hold the main process", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:delay=300:1");
    const late = await held.flush(path, 50);
    expect(late.epoch).toBeNull();
    expect(late.flush_error).toBe(`fdatasync ${path}: not done after 0.05 s`);
    expect(held.unacted?.error).toBe(late.flush_error!);
    // No second fdatasync starts on the descriptor while the first is stuck (one helper thread).
    const meanwhile = await held.flush(path, 50);
    expect(meanwhile.flush_error).toBe(`fdatasync ${path}: still running from an earlier call`);
    await Bun.sleep(300); // the stuck flush ends
    expect(await epoch()).not.toEqual(first);
  });

  test("an open that hangs counts as failed after the wait; the event loop goes on meanwhile", async () => {
    // A FIFO's open waits for a writer, as a dying disk's open waits on the device.
    const fifo = join(dir, "fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    // Should the open block the event loop after all, a writer comes after 3 s: the test then
    // fails instead of hanging the suite.
    const rescue = Bun.spawn(["sh", "-c", 'sleep 3; exec 3>"$1"', "sh", fifo], { stdio: ["ignore", "ignore", "ignore"] });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 5);
    try {
      const hung = await held.flush(fifo, 100);
      expect(hung.epoch).toBeNull();
      expect(hung.flush_error).toBe(`open ${fifo}: not done after 0.1 s`);
      expect(held.unacted?.error).toBe(hung.flush_error!);
      expect(ticks).toBeGreaterThan(5);
      // Nothing else starts on the component while the open hangs.
      expect((await held.flush(fifo, 100)).flush_error).toBe(`open ${fifo}: still running from an earlier call`);
    } finally {
      clearInterval(ticker);
      rescue.kill();
      closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)); // the writer: the open returns
    }
    await Bun.sleep(50);
    // It opened a FIFO, which is refused once it returns; the component itself is served again.
    await epoch();
  });

  test("an open that returns after it was given up on is closed", async () => {
    const fds = () => readdirSync("/proc/self/fd").length;
    const before = fds();
    setFaultInjection("open:component.img:delay=200:1");
    const slow = await held.flush(path, 50);
    expect(slow.flush_error).toBe(`open ${path}: not done after 0.05 s`);
    await Bun.sleep(300);
    expect(fds()).toBe(before);
    await epoch();
    expect(fds()).toBe(before + 1); // the held descriptor, now opened in time
  });

  test("absorb (a worker ended in order) takes a pending error without changing the id", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:EIO:1");
    await held.absorb(); // the error the worker saw and acted on
    expect(await epoch()).toEqual(first);
  });

  test("flushes run one at a time: the one behind a failed flush does not hand out the old id", async () => {
    const first = await epoch();
    setFaultInjection("fdatasync:component.img:delay=50:1,fdatasync:component.img:EIO:1");
    const [slow, failed, behind] = await Promise.all([held.flush(path), held.flush(path), held.flush(path)]);
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
    await held.close();
    expect(await epoch()).not.toEqual(replaced);
  });

  test("a missing component answers null with the error", async () => {
    const e = await held.flush(join(dir, "missing.img"));
    expect(e.epoch).toBeNull();
    expect(e.flush_error).toContain("ENOENT");
  });

  test("where the system does not report write-back errors to every open file, nothing is held", async () => {
    const unsupported = new HeldComponent(false);
    expect(await unsupported.flush(path)).toEqual({ epoch: null, flush_error: null });
  });
});
