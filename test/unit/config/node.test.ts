// Spec 1.5 node matching plus the HASTD_NODE / --node override.
import { afterEach, describe, expect, test } from "bun:test";
import { hostname } from "node:os";
import { acceptableNames, localIdentity, nodeMatches, type NodeIdentity } from "../../../src/config/index.ts";
import { ALPHA, conf, confError, MACHINE_ID, toml } from "./helpers.ts";

describe("nodeMatches", () => {
  test("full hostname and short hostname, case-sensitive", () => {
    expect(nodeMatches("alpha.example.com", ALPHA)).toBe(true);
    expect(nodeMatches("alpha", ALPHA)).toBe(true);
    expect(nodeMatches("Alpha", ALPHA)).toBe(false);
    expect(nodeMatches("alpha.example", ALPHA)).toBe(false);
    const dotless: NodeIdentity = { ...ALPHA, hostname: "alpha" };
    expect(nodeMatches("alpha", dotless)).toBe(true);
    expect(acceptableNames(dotless)).toEqual(["alpha", MACHINE_ID]);
  });

  test("machine id matches case-insensitively; hostid form matches exactly", () => {
    expect(nodeMatches("0f1e2d3c4b5a69788796a5b4c3d2e1f0", ALPHA)).toBe(true);
    expect(nodeMatches("0F1E2D3C4B5A69788796A5B4C3D2E1F0", ALPHA)).toBe(true);
    expect(nodeMatches("0f1e2d3c4b5a69788796a5b4c3d2e1f", ALPHA)).toBe(false);
    const bsd: NodeIdentity = { ...ALPHA, hostid: "hostid1234567" };
    expect(nodeMatches("hostid1234567", bsd)).toBe(true);
    expect(nodeMatches("HOSTID1234567", bsd)).toBe(false);
    expect(acceptableNames(bsd)).toEqual(["alpha", "alpha.example.com", MACHINE_ID, "hostid1234567"]);
  });

  test("an override is the only name that matches", () => {
    const two: NodeIdentity = { ...ALPHA, override: "node-b" };
    expect(nodeMatches("node-b", two)).toBe(true);
    expect(nodeMatches("alpha", two)).toBe(false);
    expect(nodeMatches("alpha.example.com", two)).toBe(false);
    expect(nodeMatches(MACHINE_ID, two)).toBe(false);
    expect(acceptableNames(two)).toEqual(["node-b"]);
  });
});

describe("node blocks in a config", () => {
  const text = "resource r0 {\nlocal /d\non node-a {\nremote 127.0.0.1:7001\n}\non node-b {\nremote 127.0.0.1:7000\n}\n}\n";

  test("two daemons on one host pick their own blocks by override", () => {
    expect(conf(text, { ...ALPHA, override: "node-a" }).resources[0]?.remote_text).toBe("127.0.0.1:7001");
    const b = conf(text, { ...ALPHA, override: "node-b" });
    expect([b.node, b.resources[0]?.remote_text]).toEqual(["node-b", "127.0.0.1:7000"]);
    confError(text, 1, "No resource r0 configuration for this node (acceptable node names: alpha, alpha.example.com, 0F1E2D3C4B5A69788796A5B4C3D2E1F0).");
  });

  test("a block named by machine id in lower case matches (TOML)", () => {
    const t = toml('[resource.r0]\nlocal = "/d"\n[resource.r0.on.0f1e2d3c4b5a69788796a5b4c3d2e1f0]\nremote = "none"\n');
    expect(t.node).toBe("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
  });
});

describe("localIdentity", () => {
  const saved = process.env.HASTD_NODE;
  afterEach(() => {
    if (saved === undefined) delete process.env.HASTD_NODE;
    else process.env.HASTD_NODE = saved;
  });

  test("reads the hostname and HASTD_NODE; an explicit override beats the environment", () => {
    delete process.env.HASTD_NODE;
    const plain = localIdentity();
    expect([plain.hostname, plain.override]).toEqual([hostname(), null]);
    process.env.HASTD_NODE = "from-env";
    expect(localIdentity().override).toBe("from-env");
    expect(localIdentity("explicit").override).toBe("explicit");
    process.env.HASTD_NODE = "";
    expect(localIdentity().override).toBeNull();
  });

  test("machine id comes from /etc/machine-id when the host has one", async () => {
    const file = Bun.file("/etc/machine-id");
    if (process.platform !== "linux" || !(await file.exists()) || (await file.text()).trim() === "") {
      console.log("skip: no /etc/machine-id on this host");
      return;
    }
    expect(localIdentity().machine_id).toBe((await file.text()).trim());
  });
});
