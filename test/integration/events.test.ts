// `hastctl events` (docs/control.md, "Event streams"; docs/operations.md, "Following events"): a
// pair brought up, cut and stopped while each node's hastctl follows it. Unlike hooks, which run
// asynchronously and may finish in any order, a stream's lines come in the order hastd raised them,
// so the sequences are compared as they are.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { FLAG_COPY_INCOMPLETE } from "../../src/core/metadata.ts";
import { LocalDisk } from "../../src/io/disk.ts";
import { MetadataStore } from "../../src/io/metadata-store.ts";
import { BUN, HASTCTL, Harness, MiB, Pair, REPO_ROOT, waitFor, type NodeInfo } from "./harness.ts";
import { TcpProxy } from "./tcp-proxy.ts";

let h: Harness;
beforeEach(async () => {
  h = await Harness.create("events");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const EX_UNAVAILABLE = 69;

/** A `hastctl events` left running: its stdout lines as they come, its exit when it ends. */
class Follower {
  readonly lines: string[] = [];
  stderr = "";
  private proc: ReturnType<typeof Bun.spawn>;
  private done: Promise<void>;

  constructor(node: NodeInfo, conf: string, args: string[]) {
    this.proc = Bun.spawn([BUN, HASTCTL, "events", "-c", conf, ...args], {
      cwd: REPO_ROOT, env: { ...process.env, ...h.envFor(node) }, stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    h.onCleanup(() => this.proc.kill("SIGKILL"));
    const collect = async (stream: ReadableStream<Uint8Array>, sink: (text: string) => void) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) sink(decoder.decode(chunk, { stream: true }));
    };
    let partial = "";
    this.done = Promise.all([
      collect(this.proc.stdout as ReadableStream<Uint8Array>, (text) => {
        partial += text;
        const parts = partial.split("\n");
        partial = parts.pop()!;
        this.lines.push(...parts);
      }),
      collect(this.proc.stderr as ReadableStream<Uint8Array>, (text) => (this.stderr += text)),
    ]).then(() => {});
  }

  /** The lines without their time, which each must have. */
  events(): string[] {
    return this.lines.map((line) => {
      const [time, ...rest] = line.split(" ");
      expect(time).toMatch(ISO_TIME);
      return rest.join(" ");
    });
  }

  async waitLines(what: string, want: string[], timeout_ms = 20_000): Promise<void> {
    await waitFor(what, () => this.lines.length >= want.length, timeout_ms);
    expect(this.events()).toEqual(want);
  }

  async exit(timeout_ms = 15_000): Promise<number> {
    const code = await Promise.race([this.proc.exited, Bun.sleep(timeout_ms).then(() => null)]);
    if (code === null) throw new Error(`hastctl events still running after ${timeout_ms} ms`);
    await this.done;
    return code;
  }
}

describe("hastctl events", () => {
  test("each node's stream: its state, then role, connect, sync and a cut link in order; hastd's exit ends it with 69", async () => {
    const pair = Pair.create(h, { data_bytes: 16 * MiB, settings: { timeout: 4 } });
    const { a, b } = pair;
    const proxy = await TcpProxy.start({ host: "127.0.0.1", port: b.port });
    h.onCleanup(() => proxy.stop());
    pair.reconfigure({ remote: { [a.name]: proxy.address } });
    for (const node of pair.nodes) await pair.createOn(node);
    for (const node of pair.nodes) await pair.start(node);
    const on_a = new Follower(a, pair.confOf(a), []);
    const on_b = new Follower(b, pair.confOf(b), ["r0"]);
    await on_a.waitLines("A's state", ["r0 exists init -"]);
    await on_b.waitLines("B's state", ["r0 exists init -"]);

    await pair.role(b, "secondary");
    await pair.role(a, "primary");
    await pair.waitSynced(a);
    const up_a = ["r0 exists init -", "r0 role init primary", "r0 connect", "r0 syncstart", "r0 syncdone"];
    // B's copy: incomplete from its handshake until the primary's pass ended (IN_SYNC).
    const up_b = ["r0 exists init -", "r0 role init secondary", "r0 copy incomplete", "r0 connect", "r0 copy complete"];
    await on_a.waitLines("A's events of the bring-up", up_a);
    await on_b.waitLines("B's events of the bring-up", up_b);

    proxy.cut();
    await on_a.waitLines("A's events of the cut", [...up_a, "r0 disconnect", "r0 connect"]);
    const cut_b = [...up_b, "r0 disconnect", "r0 copy incomplete", "r0 connect", "r0 copy complete"];
    await on_b.waitLines("B's events of the cut", cut_b);

    // A stream that joins later starts from the resource's state then; --json has one object a line.
    const json = new Follower(a, pair.confOf(a), ["--json", "all"]);
    await waitFor("the JSON state line", () => json.lines.length >= 1, 20_000);
    const state = JSON.parse(json.lines[0]!);
    expect(state).toMatchObject({ event: "exists", resource: "r0", status: { name: "r0", role: "primary", status: "complete" } });
    expect(state.time).toMatch(ISO_TIME);

    await pair.stop(a);
    for (const f of [on_a, json]) {
      expect(await f.exit()).toBe(EX_UNAVAILABLE);
      expect(f.stderr.trim()).toMatch(/^hastctl: hastd at .* ended the event stream: hastd is exiting$/);
    }
    // The primary's own disconnect came before its end; its exit ended nothing on B, whose worker
    // saw the link go.
    expect(on_a.events().at(-1)).toBe("r0 disconnect");
    expect(JSON.parse(json.lines.at(-1)!)).toMatchObject({ event: "disconnect", resource: "r0", args: [] });
    await on_b.waitLines("B's disconnect", [...cut_b, "r0 disconnect"]);
  }, 90_000);

  test("a reader that goes away (| head -n 1) ends hastctl at its next event, quietly and with 0", async () => {
    const pair = Pair.create(h, { data_bytes: 16 * MiB, settings: { timeout: 4 } });
    const { a } = pair;
    await pair.createOn(a);
    await pair.start(a);
    const script = `"$0" "$1" events -c "$2" r0 | { head -n 1; echo "head is gone"; }; echo "hastctl exited \${PIPESTATUS[0]}"`;
    const proc = Bun.spawn(["bash", "-c", script, BUN, HASTCTL, pair.confOf(a)], {
      cwd: REPO_ROOT, env: { ...process.env, ...h.envFor(a) }, stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    h.onCleanup(() => proc.kill("SIGKILL"));
    let out = "";
    const stdout = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of proc.stdout) out += decoder.decode(chunk, { stream: true });
    })();
    const stderr = new Response(proc.stderr).text();
    // head has its line and is gone; hastctl learns so when it writes the next event.
    await waitFor("head to take its line and go", () => out.includes("head is gone"), 20_000);
    await pair.role(a, "secondary");
    const code = await Promise.race([proc.exited, Bun.sleep(15_000).then(() => null)]);
    expect(code).toBe(0);
    await stdout;
    const lines = out.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/ r0 exists init -$/);
    expect(lines.slice(1)).toEqual(["head is gone", "hastctl exited 0"]);
    expect(await stderr).toBe("");
  }, 60_000);

  test("a role hastd changes itself (a failed primary worker) is in the stream, though it runs no hook; so is the disconnect a killed worker could not say", async () => {
    // As promotion.test.ts: the copy marked incomplete behind the running worker, which is killed;
    // the worker hastd restarts refuses the copy, and the role goes back to init.
    const pair = Pair.create(h, { data_bytes: 16 * MiB, settings: { timeout: 4 } });
    const { a } = pair;
    await pair.up();
    await pair.waitSynced(a);
    const on_a = new Follower(a, pair.confOf(a), ["r0"]);
    await on_a.waitLines("A's state", ["r0 exists primary complete"]);
    const disk = LocalDisk.open(pair.disk(a), { write: true });
    try {
      const store = new MetadataStore(disk);
      store.write({ ...store.read().meta, flags: store.read().meta.flags | FLAG_COPY_INCOMPLETE });
    } finally {
      disk.close();
    }
    process.kill((await pair.status(a)).workerpid, "SIGKILL");
    await on_a.waitLines("the role back to init", ["r0 exists primary complete", "r0 disconnect", "r0 role primary init"]);
    expect(await pair.status(a)).toMatchObject({ role: "init", workerpid: 0 });
  }, 60_000);

  test("an unknown resource: no stream, exit 1; no hastd: exit 71 with one line", async () => {
    const pair = Pair.create(h, { data_bytes: 4 * MiB });
    const { a } = pair;
    const absent = await h.hastctl(a, pair.confOf(a), ["events", "r0"], { timeout_ms: 10_000 });
    expect(absent.code).toBe(71);
    expect(absent.stderr.trim()).toMatch(/^hastctl: cannot connect to hastd at .*: hastd is not running$/);

    await pair.createOn(a);
    await pair.start(a);
    const unknown = await h.hastctl(a, pair.confOf(a), ["events", "r0", "nosuch"], { timeout_ms: 10_000 });
    expect(unknown.code).toBe(1);
    expect(unknown.stderr.trim()).toBe("hastctl: nosuch: no such resource");
    expect(unknown.stdout).toBe("");
  }, 30_000);
});
