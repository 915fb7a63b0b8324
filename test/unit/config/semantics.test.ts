// Defaults (spec 1.3) and inheritance (spec 1.4), each in both syntaxes.
import { describe, expect, test } from "bun:test";
import { ALPHA, conf, MIN_CONF, MIN_TOML, toml } from "./helpers.ts";

describe("defaults", () => {
  test("a minimal resource gets every default (hast.conf and TOML agree)", () => {
    const from_conf = conf(MIN_CONF);
    const from_toml = toml(MIN_TOML);
    expect(from_conf).toEqual({
      file: "hast.conf",
      node: "alpha",
      control: { kind: "uds", path: "/var/run/hastctl" },
      pidfile: "/var/run/hastd.pid",
      listen: [
        { kind: "tcp", family: 4, host: "0.0.0.0", port: 8457 },
        { kind: "tcp", family: 6, host: "::", port: 8457 },
      ],
      logfile: null,
      resources: [{
        name: "r0", provname: "r0", localpath: "/dev/sdb",
        remote: { kind: "tcp", family: 4, host: "10.0.0.2", port: 8457 }, remote_text: "10.0.0.2",
        source: null, replication: "memsync", checksum: "none", compression: "hole", timeout_s: 20,
        exec: "", metaflush: true, nbd: { kind: "uds", path: "/var/run/hast/r0.nbd" }, device: true, verify_rate: null, sync_rate: null, resync_digest: false,
        secret: null, secret_source: null, line: 1,
      }],
    });
    expect({ ...from_toml, file: "hast.conf" }).toEqual(from_conf);
  });

  test("an empty file is a valid config with no resources", () => {
    expect(conf("").resources).toEqual([]);
    expect(toml("").resources).toEqual([]);
    expect(conf("# nothing\n").node).toBe("alpha.example.com");
  });

  test("remote none gives remote null and remote_text none", () => {
    const r = conf("resource r0 {\nlocal /d\non alpha {\nremote none\n}\n}").resources[0];
    expect([r?.remote, r?.remote_text]).toEqual([null, "none"]);
    const t = toml('[resource.r0]\nlocal = "/d"\n[resource.r0.on.alpha]\nremote = "none"\n').resources[0];
    expect([t?.remote, t?.remote_text]).toEqual([null, "none"]);
  });
});

describe("inheritance", () => {
  const res = (inner: string, node = "") => `resource r0 {\nlocal /d\n${inner}\non alpha {\nremote none\n${node}\n}\n}\n`;
  const tres = (inner: string, node = "") => `[resource.r0]\nlocal = "/d"\n${inner}\n[resource.r0.on.alpha]\nremote = "none"\n${node}\n`;

  test("replication, checksum, compression, timeout, exec: resource > global > default", () => {
    const global = "replication fullsync\nchecksum sha256\ncompression none\ntimeout 7\nexec /g\n";
    const a = conf(global + res("replication async\nchecksum crc32\ncompression zstd\ntimeout 9\nexec /r")).resources[0];
    expect([a?.replication, a?.checksum, a?.compression, a?.timeout_s, a?.exec]).toEqual(["async", "crc32", "zstd", 9, "/r"]);
    const b = conf(global + res("")).resources[0];
    expect([b?.replication, b?.checksum, b?.compression, b?.timeout_s, b?.exec]).toEqual(["fullsync", "sha256", "none", 7, "/g"]);
    const tglobal = 'replication = "fullsync"\nchecksum = "sha256"\ncompression = "none"\ntimeout = 7\nexec = "/g"\n';
    const c = toml(tglobal + tres('replication = "async"\ntimeout = 9')).resources[0];
    expect([c?.replication, c?.checksum, c?.compression, c?.timeout_s, c?.exec]).toEqual(["async", "sha256", "none", 9, "/g"]);
  });

  test("verify_rate: bytes per second, resource > global > none (no limit)", () => {
    expect(conf(res("")).resources[0]?.verify_rate).toBeNull();
    expect(conf("verify_rate 100M\n" + res("")).resources[0]?.verify_rate).toBe(100 * 2 ** 20);
    expect(conf("verify_rate 100M\n" + res("verify_rate 1048576")).resources[0]?.verify_rate).toBe(2 ** 20);
    expect(conf("verify_rate 100M\n" + res("verify_rate none")).resources[0]?.verify_rate).toBeNull();
    expect(toml('verify_rate = "2G"\n' + tres("")).resources[0]?.verify_rate).toBe(2 * 2 ** 30);
    expect(toml('verify_rate = "2G"\n' + tres("verify_rate = 4096")).resources[0]?.verify_rate).toBe(4096);
    expect(toml('verify_rate = "2G"\n' + tres('verify_rate = "none"')).resources[0]?.verify_rate).toBeNull();
  });

  test("sync_rate: bytes per second, resource > global > none, as verify_rate", () => {
    expect(conf(res("")).resources[0]?.sync_rate).toBeNull();
    expect(conf("sync_rate 50M\n" + res("")).resources[0]?.sync_rate).toBe(50 * 2 ** 20);
    expect(conf("sync_rate 50M\n" + res("sync_rate none")).resources[0]?.sync_rate).toBeNull();
    expect(toml(tres('sync_rate = "1G"')).resources[0]?.sync_rate).toBe(2 ** 30);
  });

  test("resync_digest: resource > global > off", () => {
    expect(conf(res("")).resources[0]?.resync_digest).toBe(false);
    expect(conf("resync_digest on\n" + res("")).resources[0]?.resync_digest).toBe(true);
    expect(conf("resync_digest on\n" + res("resync_digest off")).resources[0]?.resync_digest).toBe(false);
    expect(toml("resync_digest = true\n" + tres("")).resources[0]?.resync_digest).toBe(true);
    expect(toml('resync_digest = "on"\n' + tres("resync_digest = false")).resources[0]?.resync_digest).toBe(false);
  });

  test("later statements overwrite earlier ones at the same level", () => {
    expect(conf("timeout 5\ntimeout 6\n" + res("")).resources[0]?.timeout_s).toBe(6);
    expect(conf(res("replication async\nreplication fullsync")).resources[0]?.replication).toBe("fullsync");
  });

  test("an empty exec at resource level inherits the global exec (TOML can write one)", () => {
    expect(toml('exec = "/usr/local/sbin/hook"\n' + tres('exec = ""')).resources[0]?.exec).toBe("/usr/local/sbin/hook");
    expect(toml(tres('exec = ""')).resources[0]?.exec).toBe("");
  });

  test("metaflush: resource-node > resource > global > on", () => {
    const m = (g: string, r: string, n: string) => conf(g + res(r, n)).resources[0]?.metaflush;
    expect(m("", "", "")).toBe(true);
    expect(m("metaflush off\n", "", "")).toBe(false);
    expect(m("metaflush off\n", "metaflush on", "")).toBe(true);
    expect(m("metaflush on\n", "metaflush on", "metaflush off")).toBe(false);
    expect(m("metaflush off\n", "metaflush off", "metaflush on")).toBe(true);
    const t = (g: string, r: string, n: string) => toml(g + tres(r, n)).resources[0]?.metaflush;
    expect(t("metaflush = false\n", "", "")).toBe(false);
    expect(t("metaflush = false\n", 'metaflush = "on"', "")).toBe(true);
    expect(t("metaflush = true\n", "metaflush = true", 'metaflush = "off"')).toBe(false);
  });

  test("device: resource-node > resource > global > on", () => {
    const d = (g: string, r: string, n: string) => conf(g + res(r, n)).resources[0]?.device;
    expect(d("", "", "")).toBe(true);
    expect(d("device off\n", "", "")).toBe(false);
    expect(d("device off\n", "device on", "")).toBe(true);
    expect(d("", "device on", "device off")).toBe(false);
    expect(toml("device = false\n" + tres("", "device = true")).resources[0]?.device).toBe(true);
  });

  test("nbd: resource-node > resource > uds:///var/run/hast/<resname>.nbd", () => {
    const n = (r: string, node: string) => conf(res(r, node)).resources[0]?.nbd;
    expect(n("name prov", "")).toEqual({ kind: "uds", path: "/var/run/hast/r0.nbd" });
    expect(n("nbd unix:///run/r0.sock", "")).toEqual({ kind: "uds", path: "/run/r0.sock" });
    expect(n("nbd /run/a.sock", "nbd tcp://127.0.0.1:10810")).toEqual({ kind: "tcp", family: 4, host: "127.0.0.1", port: 10810 });
    expect(n("nbd tcp://localhost", "")).toEqual({ kind: "tcp", family: 0, host: "localhost", port: 10809 });
    expect(toml(tres('nbd = "uds:///run/x.nbd"', 'nbd = "/run/y.nbd"')).resources[0]?.nbd).toEqual({ kind: "uds", path: "/run/y.nbd" });
  });

  test("name and local: this node's block > resource level; name defaults to the resource name", () => {
    const text = "resource r0 {\nname p0\nlocal /dev/a\non alpha {\nremote none\nname p1\nlocal /dev/b\n}\non beta {\nremote none\nname p2\nlocal /dev/c\n}\n}";
    const r = conf(text).resources[0];
    expect([r?.provname, r?.localpath]).toEqual(["p1", "/dev/b"]);
    const beta = conf(text, { ...ALPHA, hostname: "beta" }).resources[0];
    expect([beta?.provname, beta?.localpath]).toEqual(["p2", "/dev/c"]);
    const plain = conf(res("name p0")).resources[0];
    expect([plain?.provname, plain?.localpath]).toEqual(["p0", "/d"]);
    expect(conf(res("")).resources[0]?.provname).toBe("r0");
    const t = toml('[resource.r0]\nname = "p0"\n[resource.r0.on.alpha]\nremote = "none"\nlocal = "/dev/x"\n').resources[0];
    expect([t?.provname, t?.localpath]).toEqual(["p0", "/dev/x"]);
  });

  test("remote and source come only from this node's block", () => {
    const text = "resource r0 {\nlocal /d\non alpha {\nremote 10.0.0.2\nsource 10.0.0.1\n}\non beta {\nremote 10.0.0.1\nsource 10.0.0.2:4000\n}\n}";
    const a = conf(text).resources[0];
    expect([a?.remote, a?.source]).toEqual([
      { kind: "tcp", family: 4, host: "10.0.0.2", port: 8457 },
      { kind: "tcp", family: 4, host: "10.0.0.1", port: 0 }, // source defaults to an ephemeral port
    ]);
    const b = conf(text, { ...ALPHA, hostname: "beta" }).resources[0];
    expect(b?.source).toEqual({ kind: "tcp", family: 4, host: "10.0.0.2", port: 4000 });
    expect(conf(res("")).resources[0]?.source).toBeNull();
  });

  test("control, pidfile, logfile: the last matching top-level on block wins over global", () => {
    const text = [
      "on alpha {\ncontrol /run/a.ctl\npidfile /run/a.pid\nlogfile /log/a\n}",
      "on alpha.example.com {\ncontrol /run/b.ctl\n}",
      "on beta {\ncontrol /run/c.ctl\npidfile /run/c.pid\n}",
      "control /run/g.ctl\npidfile /run/g.pid\nlogfile /log/g\n",
    ].join("\n");
    const c = conf(text);
    expect([c.control, c.pidfile, c.logfile]).toEqual([{ kind: "uds", path: "/run/b.ctl" }, "/run/a.pid", "/log/a"]);
    const other = conf(text, { ...ALPHA, hostname: "gamma" });
    expect([other.control, other.pidfile, other.logfile]).toEqual([{ kind: "uds", path: "/run/g.ctl" }, "/run/g.pid", "/log/g"]);
    const t = toml('control = "/run/g.ctl"\nlogfile = "/log/g"\n[on.alpha]\ncontrol = "uds:///run/a.ctl"\n[on.beta]\ncontrol = "/run/c.ctl"\n');
    expect([t.control, t.logfile]).toEqual([{ kind: "uds", path: "/run/a.ctl" }, "/log/g"]);
  });

  test("listen is cumulative in file order; non-matching node blocks are ignored", () => {
    const text = "listen 10.0.0.1\non beta {\nlisten 10.0.0.9\n}\non alpha {\nlisten 10.0.0.2:9000\n}\nlisten tcp6://[::1]:8458\n";
    expect(conf(text).listen).toEqual([
      { kind: "tcp", family: 4, host: "10.0.0.1", port: 8457 },
      { kind: "tcp", family: 4, host: "10.0.0.2", port: 9000 },
      { kind: "tcp", family: 6, host: "::1", port: 8458 },
    ]);
    const t = toml('listen = ["10.0.0.1", "tcp://h1"]\n[on.beta]\nlisten = ["10.0.0.9"]\n[on.alpha]\nlisten = ["10.0.0.2:9000"]\n');
    expect(t.listen.map((a) => (a.kind === "tcp" ? `${a.host}:${a.port}` : a.path))).toEqual(["10.0.0.1:8457", "h1:8457", "10.0.0.2:9000"]);
    expect(conf("on beta {\nlisten 10.0.0.9\n}").listen).toHaveLength(2); // only the defaults
  });

  test("secret: resource level > global; secret_source says where it came from", () => {
    const c = conf("secret globalsecret\nresource r0 {\nlocal /d\nsecret res-secret\non alpha {\nremote none\n}\n}\n" + MIN_CONF.replace("r0", "r1"));
    expect(c.resources.map((r) => [r.secret, r.secret_source])).toEqual([
      ["res-secret", "hast.conf:4"],
      ["globalsecret", "hast.conf:1"],
    ]);
  });

  test("resources keep file order and the node that matched is reported", () => {
    const c = conf(MIN_CONF.replace("r0", "zeta") + MIN_CONF.replace("r0", "alpha0").replace("sdb", "sdc"));
    expect(c.resources.map((r) => [r.name, r.line])).toEqual([["zeta", 1], ["alpha0", 7]]);
    expect(c.node).toBe("alpha");
  });
});
