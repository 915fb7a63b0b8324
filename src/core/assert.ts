// Invariant checks for the core. A failed assertion is a bug in hastd, never an operator
// mistake: it throws loudly and the worker that hit it dies (the main process restarts it).

export class AssertionError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = "AssertionError";
  }
}

/**
 * Throws AssertionError when `condition` is falsy. Pass a function as `message` on hot
 * paths so the text is only built when the assertion fails.
 */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new AssertionError(typeof message === "string" ? message : message());
}
