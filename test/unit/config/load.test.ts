// loadConfig: reading files, exit codes, syntax chosen by extension, the shipped samples.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, parseConfigText } from "../../../src/config/index.ts";
import { ALPHA, expectConfigError, MIN_CONF, MIN_TOML } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-config-load-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const OPS = new URL("../../../ops/", import.meta.url).pathname;

describe("loadConfig", () => {
  test("a missing or unreadable file is EX_OSFILE without a line", () => {
    const missing = join(dir, "nope.conf");
    let err: unknown;
    try {
      loadConfig(missing);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect([e.exit_code, e.line, e.file]).toEqual([72, null, missing]);
    expect(e.message).toStartWith(`${missing}: cannot read configuration: `);
    expect(() => loadConfig(dir)).toThrow(`${dir}: cannot read configuration: EISDIR`);
  });

  test("reads are bounded: /dev/zero is too large, not a hang", () => {
    expectConfigError(() => loadConfig("/dev/zero"), "/dev/zero", null, "configuration is larger than 4194304 bytes");
    expectConfigError(() => parseConfigText("secret_file /dev/zero\n", "hast.conf", ALPHA), "hast.conf", 1,
      "secret_file /dev/zero is not a regular file");
  });

  test("the syntax follows the extension and opts.node is the override", () => {
    const text = MIN_CONF.replace("on alpha", "on node-x");
    writeFileSync(join(dir, "a.conf"), text);
    writeFileSync(join(dir, "a.TOML"), MIN_TOML.replace("on.alpha", "on.node-x"));
    expect(loadConfig(join(dir, "a.conf"), { node: "node-x" }).resources[0]?.localpath).toBe("/dev/sdb");
    expect(loadConfig(join(dir, "a.TOML"), { node: "node-x" }).node).toBe("node-x");
    writeFileSync(join(dir, "b.conf"), MIN_TOML);
    expectConfigError(() => loadConfig(join(dir, "b.conf"), { node: "alpha" }), join(dir, "b.conf"), 1,
      "syntax error near '[resource.r0]': expected a statement at global level");
  });

  test("an oversized file is rejected before parsing", () => {
    expectConfigError(() => parseConfigText("#".repeat(4 * 1024 * 1024 + 1), "big.conf", ALPHA), "big.conf", null,
      "configuration is larger than 4194304 bytes");
  });
});

describe("shipped samples", () => {
  for (const node of ["hasta", "hastb"]) {
    test(`ops/hast.conf.sample and ops/hast.toml.sample give the same Config on ${node}`, () => {
      const id = { ...ALPHA, hostname: `${node}.example.com` };
      const from_conf = parseConfigText(readFileSync(join(OPS, "hast.conf.sample"), "utf8"), "hast.conf", id);
      const from_toml = parseConfigText(readFileSync(join(OPS, "hast.toml.sample"), "utf8"), "hast.toml", id);
      expect(from_conf.resources.map((r) => r.name)).toEqual(["shared", "db"]);
      const strip = (c: typeof from_conf) => ({ ...c, file: "", resources: c.resources.map((r) => ({ ...r, line: 0, secret_source: null })) });
      expect(strip(from_toml)).toEqual(strip(from_conf));
      expect(from_conf.node).toBe(node);
    });
  }
});
