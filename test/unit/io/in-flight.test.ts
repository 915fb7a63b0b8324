// src/io/in-flight.ts: an owner waits for every operation it started, and for those started meanwhile.
import { expect, test } from "bun:test";
import { InFlight } from "../../../src/io/in-flight.ts";

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

test("settled waits for every tracked operation, those tracked while it waits included", async () => {
  const inflight = new InFlight();
  const order: string[] = [];
  const first = deferred();
  const later = deferred();
  inflight.track(first.promise.then(() => {
    order.push("first");
    // A completion that starts another operation (as a flush's answer may).
    inflight.track(later.promise.then(() => order.push("later")));
  }));
  let done = false;
  const settled = inflight.settled().then(() => (done = true));
  await Bun.sleep(1);
  expect(done).toBe(false);
  first.resolve();
  await Bun.sleep(1);
  expect(done).toBe(false);
  later.resolve();
  await settled;
  expect(order).toEqual(["first", "later"]);
});

test("an empty set is settled at once", async () => {
  await new InFlight().settled();
});
