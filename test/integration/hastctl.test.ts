// hastctl against real files, loop devices and a running hastd: create/dump (spec 2.1, 2.4,
// docs/format.md), metrics, and the exit codes of spec 2.5.
import { afterAll, afterEach, beforeEach, describe, expect, test } from "bun:test";
import { closeSync, copyFileSync, openSync, readFileSync, readSync, truncateSync, writeSync } from "node:fs";
import { nbdFlush, nbdRead, nbdWrite, RawNbdClient } from "../../src/io/nbd-client.ts";
import { parseExposition, sampleValue } from "../unit/ctl/exposition.ts";
import {
  Harness, MiB, run, runOk, singleResource, skipReason,
  type ConfigSpec, type NodeInfo, type RunResult,
} from "./harness.ts";

// The layout rules (docs/format.md), restated here rather than imported so a change to the code
// that breaks the documented format fails this test: two 4 KiB metadata slots, then the activemap
// (one bit per extent, in whole 4 KiB blocks, the smallest map that covers the data it leaves),
// then the data, datasize rounded down to whole sectors.
const METADATA_BYTES = 8192;
const MAP_BLOCK_BYTES = 4096;

function expectedLayout(mediasize: number, extentsize: number, sectorsize: number) {
  const mapFor = (data: number) => Math.max(1, Math.ceil(Math.ceil(data / extentsize) / 8 / MAP_BLOCK_BYTES)) * MAP_BLOCK_BYTES;
  const dataFor = (mapsize: number) => Math.floor((mediasize - METADATA_BYTES - mapsize) / sectorsize) * sectorsize;
  let mapsize = MAP_BLOCK_BYTES;
  while (mapFor(dataFor(mapsize)) > mapsize) mapsize += MAP_BLOCK_BYTES;
  return { mapsize, localoff: METADATA_BYTES + mapsize, datasize: dataFor(mapsize) };
}

const DISK_BYTES = 64 * MiB;
const noStackTrace = (r: RunResult) => expect(r.stderr).not.toMatch(/\n\s+at |internal error/);

let h: Harness;
let a: NodeInfo;

beforeEach(async () => {
  h = await Harness.create("ctl");
  a = h.addNode("nodea");
});
afterEach(async () => {
  await h.cleanup();
});
afterAll(async () => {
  await Harness.cleanupAll();
});

function twoResources(): ConfigSpec {
  const spec = singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) });
  spec.resources.r1 = {
    settings: { nbd: `uds://${h.path("r1.nbd")}`, device: false },
    on: { nodea: { local: h.sparseFile("disk1", DISK_BYTES), remote: "none" } },
  };
  return spec;
}

async function dumpJson(conf: string, names: string[] = ["r0"]): Promise<Record<string, any>[]> {
  return JSON.parse(await h.hastctlOk(a, conf, ["dump", "--json", ...names]));
}

function readBytes(path: string, offset: number, length: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const buf = new Uint8Array(length);
    expect(readSync(fd, buf, 0, length, offset)).toBe(length);
    return buf;
  } finally {
    closeSync(fd);
  }
}

describe("hastctl create and dump", () => {
  test.each(["conf", "toml"] as const)("64 MiB sparse file, defaults (%s syntax)", async (syntax) => {
    const disk = h.sparseFile("disk0", DISK_BYTES);
    const conf = h.writeConfig(singleResource(a, { local: disk }), syntax);
    const created = await h.hastctl(a, conf, ["create", "r0"]);
    expect(created).toMatchObject({ code: 0, stderr: "" });

    const want = expectedLayout(DISK_BYTES, 2 * MiB, 512);
    expect(want).toEqual({ mapsize: 4096, localoff: 12288, datasize: DISK_BYTES - 12288 });
    const text = await h.hastctlOk(a, conf, ["dump", "r0"]);
    expect(text).toContain("resource: r0\n");
    expect(text).toMatch(new RegExp(`\\n\\s+datasize: ${want.datasize} \\(64MB\\)\\n`));
    expect(text).toMatch(/\n\s+extentsize: 2097152 \(2\.0MB\)\n/);
    expect(text).toMatch(/\n\s+keepdirty: 64\n/);
    expect(text).toMatch(new RegExp(`\\n\\s+localoff: ${want.localoff}\\n`));
    for (const line of ["resuid: 0", "localcnt: 0", "remotecnt: 0", "prevrole: init"]) expect(text).toContain(line);

    const [d] = await dumpJson(conf);
    expect(d).toMatchObject({
      name: "r0", localpath: disk, datasize: want.datasize, extentsize: 2097152, keepdirty: 64,
      localoff: want.localoff, mapsize: want.mapsize, sectorsize: 512, localcnt: 0, remotecnt: 0, prevrole: "init",
      dirty_extents: 0,
    });
    // On disk: our magic at offset 0, the file is still the size it was, the data area untouched.
    expect(new TextDecoder().decode(readBytes(disk, 0, 7))).toBe("HASTBUN");
    expect(Bun.file(disk).size).toBe(DISK_BYTES);
    expect(readBytes(disk, want.localoff, 1 * MiB).every((b) => b === 0)).toBe(true);
  });

  test("dump names what hastd would refuse: another resource's metadata, a component shorter than its data area (65)", async () => {
    const spec = twoResources();
    const conf = h.writeConfig(spec);
    await h.hastctlOk(a, conf, ["create", "r0", "r1"]);
    const disk0 = spec.resources.r0!.on!.nodea!.local as string;
    const disk1 = spec.resources.r1!.on!.nodea!.local as string;
    copyFileSync(disk1, disk0); // r1's component copied over r0's
    const foreign = await h.hastctl(a, conf, ["dump", "r0"]);
    expect(foreign.code).toBe(65);
    expect(foreign.stdout).toContain("resource: r0 (the metadata names r1)");
    expect(foreign.stderr).toContain(`r0: ${disk0} holds the metadata of resource r1`);
    truncateSync(disk1, DISK_BYTES / 2);
    const short = await h.hastctl(a, conf, ["dump", "--json", "r1"]);
    expect(short.code).toBe(65);
    expect(short.stderr).toContain(`r1: ${disk1} is ${DISK_BYTES / 2} bytes, smaller than its metadata's data area`);
    expect(JSON.parse(short.stdout)[0]).toMatchObject({ name: "r1", stored_name: "r1" });
  });

  test("-e/-k/-m with suffixes are reflected in dump", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    expect((await h.hastctl(a, conf, ["create", "-e", "1M", "-k", "32", "-m", "32M", "r0"])).code).toBe(0);
    const want = expectedLayout(32 * MiB, MiB, 512);
    const [d] = await dumpJson(conf);
    expect(d).toMatchObject({ extentsize: MiB, keepdirty: 32, datasize: want.datasize, localoff: want.localoff, mapsize: want.mapsize });
    expect(d!.datasize).toBeLessThanOrEqual(32 * MiB);

    // A small extent on a bigger medium needs a map of several blocks.
    expect((await h.hastctl(a, conf, ["create", "-e", "512", "r0"])).code).toBe(0);
    const small = expectedLayout(DISK_BYTES, 512, 512);
    expect(small.mapsize).toBe(16384);
    expect((await dumpJson(conf))[0]).toMatchObject({ extentsize: 512, keepdirty: 64, ...small });
  });

  test("-m larger than the component is refused (65) and leaves the old metadata", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    await h.hastctlOk(a, conf, ["create", "-k", "7", "r0"]);
    const r = await h.hastctl(a, conf, ["create", "-m", "128M", "r0"]);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain("media size 134217728 is larger than");
    noStackTrace(r);
    expect((await dumpJson(conf))[0]).toMatchObject({ keepdirty: 7, generation: 1 });
  });

  test("a non-power-of-two extent size is refused (65) with one clean line", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    const r = await h.hastctl(a, conf, ["create", "-e", "3k", "r0"]);
    expect(r.code).toBe(65);
    expect(r.stderr.trim().split("\n")).toEqual(["hastctl: r0: extent size 3072 is not a power of two"]);
    expect((await h.hastctl(a, conf, ["dump", "r0"])).code).not.toBe(0);
  });

  test("an unknown resource exits 65 and the other names are still processed", async () => {
    const conf = h.writeConfig(twoResources());
    const r = await h.hastctl(a, conf, ["create", "r0", "nosuch", "r1"]);
    expect(r.code).toBe(65);
    expect(r.stderr).toContain("unknown resource nosuch");
    const dumped = await dumpJson(conf, ["r0", "r1"]);
    expect(dumped.map((d) => d.name)).toEqual(["r0", "r1"]);

    const d = await h.hastctl(a, conf, ["dump", "nosuch", "r1"]);
    expect(d.code).toBe(65);
    expect(d.stdout).toContain("resource: r1");
  });

  test("`all` creates and dumps every resource", async () => {
    const conf = h.writeConfig(twoResources());
    await h.hastctlOk(a, conf, ["create", "-k", "16", "all"]);
    const dumped = await dumpJson(conf, ["all"]);
    expect(dumped.map((d) => [d.name, d.keepdirty])).toEqual([["r0", 16], ["r1", 16]]);
    const text = await h.hastctlOk(a, conf, ["dump"]);
    expect(text.match(/^resource: /gm)?.length).toBe(2);
  });

  test("a missing component exits 66 naming the path", async () => {
    const missing = h.path("no-such-disk");
    const conf = h.writeConfig(singleResource(a, { local: missing }));
    for (const cmd of ["create", "dump"]) {
      const r = await h.hastctl(a, conf, [cmd, "r0"]);
      expect(r.code).toBe(66);
      expect(r.stderr).toContain(missing);
      noStackTrace(r);
    }
  });

  test("one flipped byte in the metadata slot makes dump report a checksum error", async () => {
    const disk = h.sparseFile("disk0", DISK_BYTES);
    const conf = h.writeConfig(singleResource(a, { local: disk }));
    await h.hastctlOk(a, conf, ["create", "r0"]);
    const fd = openSync(disk, "r+");
    const byte = readBytes(disk, 24, 1); // a datasize byte inside slot 0
    writeSync(fd, new Uint8Array([byte[0]! ^ 0x01]), 0, 1, 24);
    closeSync(fd);
    for (const args of [["dump", "r0"], ["dump", "--json", "r0"]]) {
      const r = await h.hastctl(a, conf, args);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/checksum mismatch in slot 0/);
      expect(r.stdout).not.toContain("datasize");
      noStackTrace(r);
    }
  });

  test("create on a component locked by a running primary is refused (75) and changes nothing", async () => {
    const disk = h.sparseFile("disk0", DISK_BYTES);
    const conf = h.writeConfig(singleResource(a, { local: disk }));
    await h.hastctlOk(a, conf, ["create", "r0"]);
    await h.startDaemon(a, conf);
    await h.hastctlOk(a, conf, ["role", "primary", "r0"]);
    const before = readBytes(disk, 0, 12288);
    const r = await h.hastctl(a, conf, ["create", "-k", "9", "r0"]);
    expect(r.code).toBe(75);
    expect(r.stderr).toContain(`${disk} is in use`);
    expect(readBytes(disk, 0, 12288)).toEqual(before);
    expect((await dumpJson(conf))[0]).toMatchObject({ keepdirty: 64 }); // dump takes no lock
  });

  const loopSkip = skipReason("create on a loop device", { root: true, tools: ["losetup", "blockdev"] });
  test.skipIf(loopSkip !== null)("create and dump on a loop device use the device's sector size", async () => {
    const backing = h.sparseFile("loop-backing", DISK_BYTES);
    const loop = (await runOk(["losetup", "-f", "--show", "--sector-size", "4096", backing])).trim();
    h.onCleanup(() => run(["losetup", "-d", loop]));
    const sectorsize = Number((await runOk(["blockdev", "--getss", loop])).trim());
    expect(sectorsize).toBe(4096);
    const conf = h.writeConfig(singleResource(a, { local: loop }));
    // A media size that is not a whole number of 4 KiB sectors: datasize is rounded down to them.
    const mediasize = DISK_BYTES - 1000;
    await h.hastctlOk(a, conf, ["create", "-m", String(mediasize), "r0"]);
    const want = expectedLayout(mediasize, 2 * MiB, 4096);
    expect(want.datasize % 4096).toBe(0);
    expect(want.datasize).not.toBe(expectedLayout(mediasize, 2 * MiB, 512).datasize);
    expect((await dumpJson(conf))[0]).toMatchObject({ localpath: loop, sectorsize: 4096, ...want });
    // The metadata went through the device to its backing file.
    expect(new TextDecoder().decode(readBytes(backing, 0, 7))).toBe("HASTBUN");
  });
});

describe("hastctl metrics", () => {
  test("a running primary's requests and roles, in the text format; an unknown name is down and exits 1", async () => {
    const conf = h.writeConfig(twoResources());
    await h.hastctlOk(a, conf, ["create", "all"]);
    await h.startDaemon(a, conf);
    await h.hastctlOk(a, conf, ["role", "primary", "r1"]);
    const client = await RawNbdClient.connect({ unix: h.path("r1.nbd") });
    h.onCleanup(() => client.close());
    await client.handshake({ export_name: "r1" });
    for (let i = 0; i < 3; i++) await nbdWrite(client, i * 4096, new Uint8Array(4096).fill(i + 1));
    await nbdRead(client, 0, 4096);
    await nbdFlush(client);

    const f = parseExposition(await h.hastctlOk(a, conf, ["metrics"]));
    const r0 = { resource: "r0" };
    const r1 = { resource: "r1" };
    expect(sampleValue(f, "hast_up", r0)).toBe(1);
    expect(sampleValue(f, "hast_role", { ...r0, role: "init" })).toBe(1);
    expect(sampleValue(f, "hast_worker_running", r0)).toBe(0);
    expect(sampleValue(f, "hast_role", { ...r1, role: "primary" })).toBe(1);
    expect(sampleValue(f, "hast_worker_running", r1)).toBe(1);
    expect(sampleValue(f, "hast_connected", r1)).toBe(0); // remote none: degraded
    expect(sampleValue(f, "hast_writes_total", r1)).toBe(3);
    expect(sampleValue(f, "hast_reads_total", r1)).toBe(1);
    expect(sampleValue(f, "hast_flushes_total", r1)).toBe(1);
    expect(sampleValue(f, "hast_local_errors_total", { ...r1, op: "write" })).toBe(0);
    expect(sampleValue(f, "hast_extent_bytes", r1)).toBeGreaterThan(0);

    const one = await h.hastctl(a, conf, ["metrics", "nosuch", "r1"]);
    expect(one.code).toBe(1);
    expect(one.stderr).toContain("nosuch: no such resource");
    const g = parseExposition(one.stdout);
    expect(sampleValue(g, "hast_up", { resource: "nosuch" })).toBe(0);
    expect(sampleValue(g, "hast_up", r1)).toBe(1);
    expect(sampleValue(g, "hast_up", r0)).toBeUndefined();
  });
});

describe("hastctl exit codes (spec 2.5)", () => {
  test("usage errors exit 64 with the usage text", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    const cases: string[][] = [
      ["bogus"], [], ["create"], ["create", "-e", "lots", "r0"], ["role"], ["role", "boss", "r0"], ["role", "primary"],
      ["role", "--force", "secondary", "r0"], ["list", "-x"], ["status", "--force"],
    ];
    for (const args of cases) {
      const r = await h.hastctl(a, conf, args);
      expect({ args, code: r.code }).toEqual({ args, code: 64 });
      expect(r.stderr).toContain("usage: hastctl");
      noStackTrace(r);
    }
  });

  test("a missing config file exits 72 naming it", async () => {
    const r = await h.hastctl(a, h.path("nope.conf"), ["status"]);
    expect(r.code).toBe(72);
    expect(r.stderr).toContain(h.path("nope.conf"));
    noStackTrace(r);
  });

  test.each(["conf", "toml"] as const)("a bad config exits 78 with file:line (%s)", async (syntax) => {
    const good = singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) });
    const text = (syntax === "toml" ? "timeout = -5\n" : "timeout -5\n");
    const path = h.writeText(`bad.${syntax}`, text);
    for (const cmd of ["status", "create", "dump"]) {
      const r = await h.hastctl(a, path, [cmd, "r0"]);
      expect(r.code).toBe(78);
      expect(r.stderr).toContain(`${path}:1:`);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    // The same error further down a real file points at its line.
    const conf = h.writeConfig(good, syntax);
    const lines = readFileSync(conf, "utf8").split("\n");
    const at = lines.findIndex((l) => l.includes("remote"));
    lines[at] = syntax === "toml" ? "remote = \"tcp://[::1\"" : "\t\tremote tcp://[::1";
    h.writeText(`hast.${syntax}`, lines.join("\n"));
    const r = await h.hastctl(a, conf, ["dump", "r0"]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain(`${conf}:${at + 1}:`);
  });

  test("status with no hastd running exits 71: hastd is not running", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    for (const cmd of [["status"], ["list"], ["metrics"], ["role", "primary", "r0"]]) {
      const r = await h.hastctl(a, conf, cmd);
      expect(r.code).toBe(71);
      expect(r.stderr).toContain("hastd is not running");
      noStackTrace(r);
    }
  });

  test("role, list and status on an unknown resource exit 1; known ones still act", async () => {
    const conf = h.writeConfig(twoResources());
    await h.hastctlOk(a, conf, ["create", "all"]);
    await h.startDaemon(a, conf);
    const r = await h.hastctl(a, conf, ["role", "primary", "nosuch", "r1"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("nosuch: no such resource");
    expect((await h.listJson(a, conf, ["r1"]))[0]).toMatchObject({ name: "r1", role: "primary" });
    for (const cmd of ["list", "status"]) {
      const s = await h.hastctl(a, conf, [cmd, "nosuch"]);
      expect(s.code).toBe(1);
    }
  });
});

describe("hastctl -d", () => {
  test("-d prints the configuration read and each control request and reply on standard error; without it nothing", async () => {
    const conf = h.writeConfig(singleResource(a, { local: h.sparseFile("disk0", DISK_BYTES) }));
    await h.hastctlOk(a, conf, ["create", "r0"]);
    await h.startDaemon(a, conf);
    const quiet = await h.hastctl(a, conf, ["status", "r0"]);
    expect(quiet.stderr).toBe("");
    const r = await h.hastctl(a, conf, ["status", "-d", "r0"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(quiet.stdout);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toBe(`hastctl: debug: configuration ${conf}: this node is ${a.name}, resources r0`);
    expect(lines[1]).toMatch(/^hastctl: debug: to uds:\/\/\S+: \{"cmd":"status","resources":\["r0"\]\}$/);
    const reply = lines[2]!.match(/^hastctl: debug: from uds:\/\/\S+: (\{.*\})$/);
    expect(JSON.parse(reply![1]!)).toMatchObject({ error: 0, resources: [{ name: "r0", role: "init" }] });
    // The same with the option spelt -dd, before or after other options.
    const dd = await h.hastctl(a, conf, ["list", "-dd", "--json", "r0"]);
    expect(dd.code).toBe(0);
    expect(dd.stderr).toMatch(/debug: to uds:\/\/\S+: \{"cmd":"status"/); // list asks for the status
  });
});
