// assert(): a failed invariant reaches the process's handler (a worker exits there) before the
// throw, so no catch on the way up can let the worker go on.
import { afterEach, expect, test } from "bun:test";
import { AssertionError, assert, onAssertionFailure } from "../../../src/core/assert.ts";

afterEach(() => onAssertionFailure(null));

test("a failed assertion calls the handler with the error, then throws it; a passing one calls nothing", () => {
  const seen: AssertionError[] = [];
  onAssertionFailure((err) => seen.push(err));
  assert(true, "never built");
  assert(1, () => {
    throw new Error("the message of a passing assertion is not built");
  });
  expect(seen).toEqual([]);
  let thrown: unknown = null;
  try {
    // A catch-all on the way up (an NBD request turning errors into EIO) cannot hide it.
    assert(false, () => "extent 3: too many writes in flight");
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(AssertionError);
  expect(seen).toEqual([thrown as AssertionError]);
  expect(seen[0]!.message).toBe("assertion failed: extent 3: too many writes in flight");
});

test("without a handler it only throws", () => {
  expect(() => assert(false, "bad")).toThrow(new AssertionError("bad"));
});
