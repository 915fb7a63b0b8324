// The runtime settings a worker process starts with: ours where the operator set nothing, the
// operator's where they did.
import { expect, test } from "bun:test";
import { WORKER_DISK_THREADS, WORKER_HEAP_RAM_BYTES, WORKER_PURGE_DELAY_MS, workerEnv } from "../../../src/daemon/worker-handle.ts";

test("a worker gets its heap size, allocator purge delay and disk threads by default", () => {
  const env = workerEnv({ PATH: "/usr/bin" });
  expect(env).toEqual({
    PATH: "/usr/bin",
    BUN_JSC_forceRAMSize: String(WORKER_HEAP_RAM_BYTES),
    MIMALLOC_PURGE_DELAY: String(WORKER_PURGE_DELAY_MS),
    UV_THREADPOOL_SIZE: String(WORKER_DISK_THREADS),
  });
});

test("what the operator's environment sets is kept, and the daemon's own environment is not changed", () => {
  const daemon = { UV_THREADPOOL_SIZE: "4", MIMALLOC_PURGE_DELAY: "10" };
  const env = workerEnv(daemon);
  expect(env.UV_THREADPOOL_SIZE).toBe("4");
  expect(env.MIMALLOC_PURGE_DELAY).toBe("10");
  expect(env.BUN_JSC_forceRAMSize).toBe(String(WORKER_HEAP_RAM_BYTES));
  expect(daemon).toEqual({ UV_THREADPOOL_SIZE: "4", MIMALLOC_PURGE_DELAY: "10" });
});
