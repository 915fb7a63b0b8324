// Invariant checks for the core. A failed assertion is a bug in hastd, never an operator
// mistake: it throws loudly, and the worker that hit it dies (onAssertionFailure) whatever catches
// the throw on its way up, such as an NBD request turning errors into EIO replies, so that it
// never goes on with state it can no longer trust.

export class AssertionError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = "AssertionError";
  }
}

let failed: ((err: AssertionError) => void) | null = null;

/** What a process does when an assertion fails, before the throw (a worker exits); null: throw only. */
export function onAssertionFailure(handler: ((err: AssertionError) => void) | null): void {
  failed = handler;
}

/**
 * Throws AssertionError when `condition` is falsy. Pass a function as `message` on hot
 * paths so the text is only built when the assertion fails.
 */
export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (condition) return;
  const err = new AssertionError(typeof message === "string" ? message : message());
  failed?.(err);
  throw err;
}
