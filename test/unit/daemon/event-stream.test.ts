// Event streams (`hastctl events`): the feed that fans events out (filtering, events held until a
// stream begins, bounds), the control server carrying a stream (reply first, then lines; a reader
// that falls behind is disconnected; a client gone before its stream began frees its subscription),
// and hastctl's check of the lines it gets.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlServer, EVENT_BACKLOG_MAX_BYTES, type ControlStream } from "../../../src/daemon/control-server.ts";
import { EVENT_PENDING_MAX, EVENT_SUBSCRIBERS_MAX, EventFeed } from "../../../src/daemon/event-feed.ts";
import { Logger } from "../../../src/daemon/log.ts";
import { ControlError, parseControlRequest, parseStreamLine, type ControlEvent } from "../../../src/wire/control.ts";
import { waitFor } from "../../wait-for.ts";

const event = (resource: string, n: number, name: ControlEvent["event"] = "connect"): ControlEvent =>
  ({ event: name, resource, time: new Date(Date.UTC(2026, 10, 28, 0, 0, n)).toISOString(), args: [String(n)] });

describe("EventFeed", () => {
  test("a subscription gets its resources' events in order: those raised before it was attached first", () => {
    const feed = new EventFeed();
    const r0 = feed.subscribe(new Set(["r0"]))!;
    const all = feed.subscribe(null)!;
    feed.publish(event("r0", 1));
    feed.publish(event("r1", 2));
    const got_r0: string[] = [];
    const got_all: string[] = [];
    r0.attach((e) => got_r0.push(`${e.resource} ${e.args[0]}`), () => {});
    feed.publish(event("r0", 3));
    all.attach((e) => got_all.push(`${e.resource} ${e.args[0]}`), () => {});
    feed.publish(event("r2", 4));
    expect(got_r0).toEqual(["r0 1", "r0 3"]);
    expect(got_all).toEqual(["r0 1", "r1 2", "r0 3", "r2 4"]);
    r0.close();
    feed.publish(event("r0", 5));
    expect(got_r0).toEqual(["r0 1", "r0 3"]);
    expect(feed.size).toBe(1);
  });

  test(`at most ${EVENT_SUBSCRIBERS_MAX} subscriptions; a closed one frees its place`, () => {
    const feed = new EventFeed();
    const subs = Array.from({ length: EVENT_SUBSCRIBERS_MAX }, () => feed.subscribe(null));
    expect(subs.every((s) => s !== null)).toBe(true);
    expect(feed.subscribe(null)).toBeNull();
    subs[7]!.close();
    expect(feed.subscribe(new Set(["r0"]))).not.toBeNull();
  });

  test(`more than ${EVENT_PENDING_MAX} events before the stream begins end it at once, with why`, () => {
    const feed = new EventFeed();
    const sub = feed.subscribe(null)!;
    for (let i = 0; i <= EVENT_PENDING_MAX; i++) feed.publish(event("r0", i % 60));
    expect(feed.size).toBe(0);
    let ended = "";
    const got: ControlEvent[] = [];
    sub.attach((e) => got.push(e), (why) => (ended = why));
    expect(got).toEqual([]);
    expect(ended).toBe(`more than ${EVENT_PENDING_MAX} events came before the stream began`);
  });

  test("endAll tells every attached stream why, and forgets them", () => {
    const feed = new EventFeed();
    const why: string[] = [];
    for (let i = 0; i < 3; i++) feed.subscribe(null)!.attach(() => {}, (w) => why.push(w));
    feed.endAll("hastd is exiting");
    expect(why).toEqual(["hastd is exiting", "hastd is exiting", "hastd is exiting"]);
    expect(feed.size).toBe(0);
  });
});

describe("the control server carrying a stream", () => {
  let dir = "";
  let server: ControlServer | null = null;
  afterEach(() => {
    server?.stop();
    server = null;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** `snapshot_ms`: how long the handler takes before its stream can begin. */
  async function serve(feed: EventFeed, warnings: string[], snapshot_ms = 20): Promise<string> {
    dir = mkdtempSync(join(tmpdir(), "hast-events-"));
    const log = new Logger({ write: (_level, line) => void warnings.push(line) }, 0);
    server = await ControlServer.start(join(dir, "control.sock"), async (request): Promise<ControlStream> => {
      const sub = feed.subscribe(null)!;
      await Bun.sleep(snapshot_ms); // events raised meanwhile are held
      return {
        reply: { error: ControlError.OK, resources: request.resources.map((name) => ({ name, role: "primary" as const })) },
        attach: (send, end) => {
          sub.attach(send, end);
          return () => sub.close();
        },
      };
    }, log);
    return server.path;
  }

  /** A client that sends one request and keeps every line; `paused` reads nothing until resumed. */
  async function client(path: string, paused = false) {
    const lines: string[] = [];
    let buffer = "";
    let closed = false;
    const socket = await Bun.connect({
      unix: path,
      socket: {
        data(_s, chunk) {
          buffer += new TextDecoder().decode(chunk);
          const parts = buffer.split("\n");
          buffer = parts.pop()!;
          lines.push(...parts);
        },
        close() {
          closed = true;
        },
      },
    });
    socket.write(`{"cmd":"events","resources":["all"]}\n`);
    if (paused) socket.pause();
    return { lines, socket, get closed() { return closed; } };
  }

  test("the reply comes first, then each event, and the end line; events raised before the reply are not lost", async () => {
    const feed = new EventFeed();
    const path = await serve(feed, []);
    const c = await client(path);
    await waitFor("the subscription", () => feed.size === 1, 2_000);
    feed.publish(event("r0", 1, "role"));
    await waitFor("the reply and the held event", () => c.lines.length >= 2, 2_000);
    feed.publish(event("r0", 2, "disconnect"));
    await waitFor("the next event", () => c.lines.length >= 3, 2_000);
    feed.endAll("hastd is exiting");
    await waitFor("the end and the close", () => c.closed, 2_000);
    expect(JSON.parse(c.lines[0]!)).toEqual({ error: 0, resources: [{ name: "all", role: "primary" }] });
    expect(c.lines.slice(1).map((l) => JSON.parse(l))).toEqual([event("r0", 1, "role"), event("r0", 2, "disconnect"), { end: "hastd is exiting" }]);
    // A line written after the stream began is not read as a request.
    expect(c.lines).toHaveLength(4);
  });

  test(`a reader more than ${EVENT_BACKLOG_MAX_BYTES} bytes behind is disconnected and its subscription freed`, async () => {
    const feed = new EventFeed();
    const warnings: string[] = [];
    const path = await serve(feed, warnings);
    const c = await client(path, true);
    await waitFor("the stream to begin", () => feed.size === 1 && warnings.length === 0, 2_000);
    await Bun.sleep(50);
    const big: ControlEvent = { ...event("r0", 1), args: ["x".repeat(4000)] };
    // Far more than the backlog and the kernel's socket buffers together; bounded.
    for (let i = 0; i < 4 * EVENT_BACKLOG_MAX_BYTES / 4000 && feed.size > 0; i++) {
      feed.publish(big);
      if (i % 64 === 0) await Bun.sleep(1);
    }
    expect(feed.size).toBe(0);
    expect(warnings.join("")).toContain(`an event stream fell ${EVENT_BACKLOG_MAX_BYTES} bytes behind; disconnecting it.`);
    c.socket.resume();
    await waitFor("the close", () => c.closed, 5_000);
  });

  test("a client gone before its stream began leaves no subscription", async () => {
    const feed = new EventFeed();
    const path = await serve(feed, [], 500);
    const c = await client(path);
    await waitFor("the subscription", () => feed.size === 1, 2_000, 5);
    c.socket.end();
    await Bun.sleep(100);
    expect(feed.size).toBe(1);
    await waitFor("the subscription to go", () => feed.size === 0, 2_000);
  });
});

describe("the wire", () => {
  test("an events request takes resource names like status", () => {
    expect(parseControlRequest(`{"cmd":"events","resources":["all"]}`)).toEqual({ ok: true, value: { cmd: "events", resources: ["all"] } });
    expect(parseControlRequest(`{"cmd":"events","resources":[]}`)).toEqual({ ok: false, error: "request needs a non-empty 'resources' array" });
  });

  test("hastctl takes an event it knows or the end, and names what is wrong with anything else", () => {
    const e = event("r0", 3, "split-brain");
    expect(parseStreamLine(JSON.stringify(e))).toEqual({ ok: true, value: e });
    expect(parseStreamLine(`{"end":"hastd is exiting"}`)).toEqual({ ok: true, value: { end: "hastd is exiting" } });
    const bad: [string, string][] = [
      ["{", "event line is not valid JSON"],
      ["[]", "event line must be a JSON object"],
      [`{"end":3}`, "'end' must be a string"],
      [JSON.stringify({ ...e, event: "reboot" }), `unknown event "reboot"`],
      [JSON.stringify({ ...e, resource: "" }), "event has no 'resource'"],
      [JSON.stringify({ ...e, time: "yesterday" }), "event has no valid 'time'"],
      [JSON.stringify({ ...e, args: [1] }), "event 'args' must be an array of strings"],
    ];
    for (const [line, error] of bad) expect(parseStreamLine(line)).toEqual({ ok: false, error });
  });
});
