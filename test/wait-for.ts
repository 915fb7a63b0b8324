// Bounded polling shared by the test harnesses and the benchmark suite.
export const WAIT_POLL_MS = 50;

/** Polls `probe` until it returns a truthy value; throws "timed out after N ms waiting for <what>". */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeout_ms = 10_000, poll_ms = WAIT_POLL_MS): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeout_ms;
  let last_error: unknown = null;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last_error = err;
    }
    if (Date.now() >= deadline) {
      const why = last_error ? ` (last error: ${(last_error as Error).message})` : "";
      throw new Error(`timed out after ${timeout_ms} ms waiting for ${what}${why}`);
    }
    await Bun.sleep(poll_ms);
  }
}
