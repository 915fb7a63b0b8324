// `npm run build` (src/cli/build.ts) makes single-file binaries that run alone: from a temp dir
// outside the repo, with no bun on PATH and no node_modules in reach, hastctl --help, a create,
// a foreground hastd whose worker is the same binary re-invoked, role primary, status, role
// init, and a clean stop on SIGTERM.
import { afterAll, expect, test } from "bun:test";
import { existsSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import {
  BUN, descendants, Harness, MiB, pidsWithArgs, REPO_ROOT, run, singleResource, waitFor,
} from "./harness.ts";

const BUILD_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 90_000;
/** No bun, no node_modules/.bin: only the system directories. */
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

afterAll(async () => {
  await Harness.cleanupAll();
});

test("compiled hastd and hastctl run a create / hastd -F / role / status cycle outside the repo without bun", async () => {
  const h = await Harness.create("build");
  try {
    const dist = h.path("dist");
    const build = await run([BUN, join(REPO_ROOT, "src/cli/build.ts"), "--outdir", dist], { timeout_ms: BUILD_TIMEOUT_MS });
    expect(build.stderr).toBe("");
    expect(build.code).toBe(0);
    const hastd = join(dist, "hastd");
    const hastctl = join(dist, "hastctl");
    expect(existsSync(hastd) && existsSync(hastctl)).toBe(true);

    const a = h.addNode("nodea");
    const work = h.path("elsewhere");
    await run(["mkdir", "-p", work]);
    // TMPDIR: the embedded native library is unpacked there, inside the test's directory.
    const env = { PATH: SYSTEM_PATH, HASTD_NODE: a.name, HASTD_DEVDIR: a.devdir, TMPDIR: work, HOME: work };
    expect(Bun.which("bun", { PATH: SYSTEM_PATH })).toBeNull();
    // run() adds env to the test's environment: blank out everything else.
    const only = Object.fromEntries(Object.keys(process.env).map((k) => [k, undefined]));
    const exec = (argv: string[]) => run(argv, { cwd: work, env: { ...only, ...env } });

    for (const [binary, name] of [[hastd, "hastd"], [hastctl, "hastctl"]] as const) {
      const version = await exec([binary, "--version"]);
      expect(version.stdout).toBe(`${name} ${pkg.version}\n`);
    }
    const help = await exec([hastctl, "--help"]);
    expect(help.code).toBe(0);
    expect(`${help.stdout}${help.stderr}`).toContain("hastctl create");

    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", 32 * MiB) }));
    const create = await exec([hastctl, "create", "-c", conf, "r0"]);
    expect(create.stderr).toBe("");
    expect(create.code).toBe(0);

    const daemon = Bun.spawn([hastd, "-F", "-c", conf, "-P", a.pidfile], {
      cwd: work, env, stdin: "ignore", stdout: "pipe", stderr: "pipe",
    });
    h.onCleanup(() => daemon.kill("SIGKILL"));
    await waitFor("the compiled hastd to answer", async () =>
      (await exec([hastctl, "status", "-c", conf])).code === 0, 15_000);

    const primary = await exec([hastctl, "role", "-c", conf, "primary", "r0"]);
    expect(primary.code).toBe(0);
    const [status] = JSON.parse((await exec([hastctl, "status", "-c", conf, "--json", "r0"])).stdout);
    expect(status).toMatchObject({ name: "r0", role: "primary", status: "degraded", dirty: 0 });

    // The worker is the compiled binary itself, re-invoked (not bun with a script).
    const [worker] = await waitFor("the primary worker", () => {
      const pids = pidsWithArgs("hastd: r0 (primary)", descendants([daemon.pid]));
      return pids.length ? pids : null;
    });
    expect(readlinkSync(`/proc/${worker}/exe`)).toBe(hastd);

    expect((await exec([hastctl, "role", "-c", conf, "init", "r0"])).code).toBe(0);
    const [after] = JSON.parse((await exec([hastctl, "status", "-c", conf, "--json", "r0"])).stdout);
    expect(after.role).toBe("init");
    await waitFor("the worker to exit", () => pidsWithArgs("hastd: r0", descendants([daemon.pid])).length === 0);

    daemon.kill("SIGTERM");
    const code = await Promise.race([daemon.exited, Bun.sleep(10_000).then(() => "timeout")]);
    expect(code).toBe(0);
  } finally {
    await h.cleanup();
  }
}, TEST_TIMEOUT_MS);
