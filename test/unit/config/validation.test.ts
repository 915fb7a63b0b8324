// Spec 1.8 validation plus our own checks: every message with its exact 1-based line.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfigText } from "../../../src/config/index.ts";
import { ALPHA, confError, expectConfigError, MIN_CONF, tomlError } from "./helpers.ts";

const ACCEPTABLE = "alpha, alpha.example.com, 0F1E2D3C4B5A69788796A5B4C3D2E1F0";

describe("resource validation (spec 1.8 wording)", () => {
  test("Resource X configured more than once (hast.conf); TOML refuses the duplicate table", () => {
    confError(`${MIN_CONF}\n# again\n${MIN_CONF}`, 9, "Resource r0 configured more than once.");
    tomlError('[resource.r0]\nlocal = "/d"\n\n[resource.r0]\n', 4, "TOML syntax error, column 13: Can't redefine existing key");
  });

  test("No resource X configuration for this node lists the acceptable names", () => {
    const detail = `No resource r1 configuration for this node (acceptable node names: ${ACCEPTABLE}).`;
    confError(`${MIN_CONF}\nresource r1 {\n  local /d\n  on beta {\n    remote none\n  }\n}\n`, 8, detail);
    tomlError('# r1\n\n[resource.r1]\nlocal = "/d"\n[resource.r1.on.beta]\nremote = "none"\n', 3, detail);
    confError("resource r1 {\n}\n", 1, "No resource r1 configuration for this node (acceptable node names: two).",
      { ...ALPHA, override: "two" });
  });

  test("Remote address not configured for resource X", () => {
    confError("\nresource r2 {\n  local /d\n  on alpha {\n  }\n  on beta {\n    remote 10.0.0.1\n  }\n}\n", 2,
      "Remote address not configured for resource r2.");
    tomlError('[resource.r2]\nlocal = "/d"\n[resource.r2.on.alpha]\nsource = "10.0.0.1"\n', 1,
      "Remote address not configured for resource r2.");
  });

  test("Path to local component not configured for resource X", () => {
    confError("resource r3 {\n  on alpha {\n    remote none\n  }\n  on beta {\n    local /d\n  }\n}\n", 1,
      "Path to local component not configured for resource r3.");
    tomlError('\n\n[resource.r3.on.alpha]\nremote = "none"\n', 3, "Path to local component not configured for resource r3.");
  });

  test("two resources on one provider name, local component or nbd address are refused at the second", () => {
    const r1 = (body: string) => `resource r1 {\n${body}\n on alpha {\n  remote 10.0.0.3\n }\n}\n`;
    confError(`${MIN_CONF}${r1(" local /dev/sdb")}`, 7, "Resources r0 and r1 both use the local component /dev/sdb.");
    confError(`${MIN_CONF}${r1(" local /dev/sdc\n name r0")}`, 7, "Resources r0 and r1 both use the provider name r0.");
    confError("resource a {\n local /dev/sda\n name x\n on alpha {\n  remote none\n }\n}\nresource b {\n local /dev/sdb\n on alpha {\n  name x\n  remote none\n }\n}\n", 8,
      "Resources a and b both use the provider name x.");
    confError("resource a {\n local /dev/sda\n nbd tcp://127.0.0.1:10809\n on alpha {\n  remote none\n }\n}\nresource b {\n local /dev/sdb\n nbd 127.0.0.1\n on alpha {\n  remote none\n }\n}\n", 8,
      "Resources a and b both use the nbd address tcp4://127.0.0.1:10809.");
  });

  test("a resource name too long for its default NBD socket path asks for an nbd statement", () => {
    const name = "r".repeat(95);
    confError(`resource ${name} {\n local /dev/sdb\n on alpha {\n  remote none\n }\n}\n`, 1,
      `resource name ${name} is too long for its default NBD socket /var/run/hast/${name}.nbd (the unix socket path is 113 bytes, the limit is 107): set nbd for it`);
    const set = parseConfigText(`resource ${name} {\n local /dev/sdb\n nbd uds:///run/h.nbd\n on alpha {\n  remote none\n }\n}\n`, "hast.conf", ALPHA);
    expect(set.resources[0]!.nbd).toEqual({ kind: "uds", path: "/run/h.nbd" });
  });
});

describe("value validation", () => {
  test("timeout must be a positive number of seconds", () => {
    confError("\n\n\n\n\n\n\n\n\n\n\ntimeout 0\n", 12, "timeout must be a positive number of seconds");
    confError("resource r0 {\n timeout 0\n}", 2, "timeout must be a positive number of seconds");
    for (const bad of ["0", "-5", "1.5", '"20"', "true"]) {
      tomlError(`\ntimeout = ${bad}\n`, 2, "timeout must be a positive number of seconds");
    }
    confError("timeout 9999999\n", 1, "timeout must be at most 2147483 seconds");
    confError("timeout -1\n", 1, "syntax error near '-1': expected a number of seconds");
  });

  test("an address is of the kind its statement uses: control a unix socket, listen/remote/source TCP, nbd either", () => {
    confError("control tcp://127.0.0.1:17001\n", 1, "control address 'tcp://127.0.0.1:17001' must be a unix socket (uds:///path)");
    confError("# x\nlisten /tmp/peer.sock\n", 2, "listen address '/tmp/peer.sock' must be TCP (host:port)");
    confError("listen uds:///tmp/peer.sock\n", 1, "listen address 'uds:///tmp/peer.sock' must be TCP (host:port)");
    confError("resource r0 {\n local /d\n on alpha {\n  remote uds:///tmp/x\n }\n}\n", 4, "remote address 'uds:///tmp/x' must be TCP (host:port)");
    confError("resource r0 {\n local /d\n on alpha {\n  remote 10.0.0.2\n  source /tmp/x\n }\n}\n", 5, "source address '/tmp/x' must be TCP (host[:port])");
    tomlError('control = "tcp://127.0.0.1:17001"\n', 1, "control address 'tcp://127.0.0.1:17001' must be a unix socket (uds:///path)");
    const ok = parseConfigText("resource r0 {\n local /d\n nbd tcp://127.0.0.1:10809\n on alpha {\n  remote none\n }\n}\n", "hast.conf", ALPHA);
    expect(ok.resources[0]!.nbd).toMatchObject({ kind: "tcp", port: 10809 });
  });

  test("local, exec, pidfile and logfile are absolute paths (hastctl and hastd run in different directories)", () => {
    confError("resource r0 {\n local disk0\n on alpha {\n  remote none\n }\n}\n", 2, "local must be an absolute path, not 'disk0'");
    confError("exec hooks/hast.sh\n", 1, "exec must be an absolute path, not 'hooks/hast.sh'");
    confError("pidfile run/hastd.pid\n", 1, "pidfile must be an absolute path, not 'run/hastd.pid'");
    tomlError('logfile = "hastd.log"\n', 1, "logfile must be an absolute path, not 'hastd.log'");
  });

  test("verify_rate must be a size per second above 0, or none", () => {
    confError("# x\nverify_rate 0\n", 2, "verify_rate must be more than 0 bytes per second (none: no limit)");
    confError("resource r0 {\n verify_rate 10X\n}", 2,
      "verify_rate must be bytes per second (a size such as 100M) or none: invalid size '10X': expected digits with an optional k, M, G, T, P or E suffix");
    confError("verify_rate on\n", 1, "syntax error near 'on': expected bytes per second (a size such as 100M) or none");
    confError("verify_rate {\n", 1, "syntax error near '{': expected bytes per second (a size such as 100M) or none");
    tomlError('\nverify_rate = 0\n', 2, "verify_rate must be more than 0 bytes per second (none: no limit)");
    for (const bad of ["-1", "1.5", "true", "[1]"]) {
      tomlError(`verify_rate = ${bad}\n`, 1, 'verify_rate must be bytes per second (an integer, or a string such as "100M") or "none"');
    }
    tomlError('verify_rate = "fast"\n', 1,
      "verify_rate must be bytes per second (a size such as 100M) or none: invalid size 'fast': expected digits with an optional k, M, G, T, P or E suffix");
    confError("resource r0 {\n local /d\n on alpha {\n  remote none\n  verify_rate 1M\n }\n}\n", 5,
      "syntax error near 'verify_rate': 'verify_rate' is not allowed in an 'on <node>' block inside a resource (allowed at global level, in a 'resource' block)");
  });

  test("compression lzf is parsed but not supported", () => {
    confError("# x\ncompression lzf\n", 2, "compression lzf is not supported, use zstd or hole");
    tomlError('[resource.r0]\ncompression = "lzf"\n', 2, "compression lzf is not supported, use zstd or hole");
    tomlError('replication = "sync"\n', 1, "replication must be one of fullsync, memsync, async, not 'sync'");
    confError("checksum md5\n", 1, "syntax error near 'md5': expected one of none, crc32, sha256");
  });

  test("values too long for FreeBSD's buffers", () => {
    confError(`local /${"a".repeat(1023)}\n`, 1, "syntax error near 'local': 'local' is not allowed at global level (allowed in a 'resource' block, in an 'on <node>' block inside a resource)");
    confError(`resource r0 {\nlocal /${"a".repeat(1023)}\n}`, 2, "local argument is too long.");
    confError(`exec /${"a".repeat(1023)}\n`, 1, "Exec path is too long.");
    confError(`pidfile /${"a".repeat(1023)}\n`, 1, "pidfile argument is too long.");
    confError(`resource ${"r".repeat(255)} {\n}`, 1, "Resource name is too long.");
    confError(`resource r0 {\n\nname ${"p".repeat(255)}\n}`, 3, "name argument is too long.");
    tomlError(`[resource.r0.on.alpha]\nremote = "${"h".repeat(1024)}"\n`, 2, "remote argument is too long.");
  });

  test("names that cannot be a /dev/hast entry", () => {
    confError("resource a/b {\n}", 1, "resource name 'a/b' must not contain '/'");
    confError("resource .. {\n}", 1, "resource name must not be '.' or '..'");
    tomlError('\n[resource."a b"]\nlocal = "/d"\n', 2, "resource name 'a b' may contain only letters, digits and . - _ : [ ]");
    tomlError('[resource.r0]\nname = "x/y"\n', 2, "provider name 'x/y' must not contain '/'");
  });

  test("addresses are checked at config time, also in other nodes' blocks", () => {
    const r = (node: string, stmt: string) => `resource r0 {\nlocal /d\non ${node} {\nremote none\n${stmt}\n}\n}\n`;
    confError(r("beta", "remote [::1]"), 5, "invalid remote address '[::1]': port '1]' is not a number from 1 to 65535");
    confError(r("alpha", "source 10.0.0.1:99999"), 5, "invalid source address '10.0.0.1:99999': port '99999' is not a number from 1 to 65535");
    confError("listen tcp4://[::1]:8457\n", 1, "invalid listen address 'tcp4://[::1]:8457': tcp4:// needs an IPv4 address or a host name");
    confError("\ncontrol http://x\n", 2, "invalid control address 'http://x': unknown scheme 'http://' (use tcp://, tcp4://, tcp6://, uds:// or unix://)");
    tomlError('[resource.r0]\nnbd = "uds://relative"\n', 2, "invalid nbd address 'uds://relative': the unix socket path must be absolute");
    tomlError('[resource.r0.on.alpha]\nsource = "none"\n', 2, "source cannot be none (only remote can)");
    tomlError('listen = ["10.0.0.1", "2001:db8::1/64"]\n', 1, "invalid listen address '2001:db8::1/64': '2001:db8::1/64' is not a valid IPv6 address");
  });
});

describe("secret and secret_file", () => {
  const dir = mkdtempSync(join(tmpdir(), "hast-config-secret-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, content: string) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };

  test("secret_file is read at parse time, relative to the config file, trailing newline stripped", () => {
    file("key", "top secret\n");
    const cfg = parseConfigText("secret_file key\n" + MIN_CONF, join(dir, "hast.conf"), ALPHA);
    expect(cfg.resources[0]?.secret).toBe("top secret");
    expect(cfg.resources[0]?.secret_source).toBe(`${join(dir, "key")} (${join(dir, "hast.conf")}:1)`);
  });

  test("a secret of digits or a reserved word is taken as written, in both syntaxes", () => {
    for (const secret of ["12345678", "007", "none", "on"]) {
      expect(parseConfigText(`secret ${secret}\n${MIN_CONF}`, "hast.conf", ALPHA).resources[0]?.secret).toBe(secret);
      expect(parseConfigText(`secret = "${secret}"\n[resource.r0]\nlocal = "/d"\n[resource.r0.on.alpha]\nremote = "none"\n`, "hast.toml", ALPHA).resources[0]?.secret).toBe(secret);
    }
    confError("secret {\n", 1, "syntax error near '{': expected the secret (letters, digits and . - _ / : [ ]; use secret_file for others)");
  });

  // Decoded lossily, every invalid byte became U+FFFD: two different binary keys gave one secret.
  test("a secret_file that is not UTF-8 text (a binary key) is refused, saying how to write one", () => {
    const path = join(dir, "binary-key");
    writeFileSync(path, new Uint8Array([0xff, 0xfe, 0x80, 0x41, 0xc3]));
    confError(`secret_file ${path}\n${MIN_CONF}`, 1, `secret_file ${path} is not UTF-8 text (a binary key: write it as text, e.g. openssl rand -hex 32)`);
  });

  test("secret and secret_file are mutually exclusive at one level, not across levels", () => {
    const key = file("key2", "k2\n");
    confError(`secret abc\n\nsecret_file ${key}\n`, 3, "secret and secret_file are mutually exclusive");
    tomlError(`[resource.r0]\nsecret_file = "${key}"\nsecret = "abc"\n`, 3, "secret and secret_file are mutually exclusive");
    const cfg = parseConfigText(`secret_file ${key}\nresource r0 {\nsecret abc\nlocal /d\non alpha {\nremote none\n}\n}`, "hast.conf", ALPHA);
    expect(cfg.resources[0]?.secret).toBe("abc");
  });

  test("an unreadable secret_file names the file (EX_OSFILE); an empty one is rejected", () => {
    const missing = join(dir, "missing");
    let message = "";
    try {
      parseConfigText(`\nsecret_file ${missing}\n`, "hast.conf", ALPHA);
    } catch (err) {
      message = (err as Error).message;
      expect((err as { exit_code: number }).exit_code).toBe(72);
    }
    expect(message).toStartWith(`hast.conf:2: cannot read secret_file ${missing}: `);
    const empty = file("empty", "\n");
    expectConfigError(() => parseConfigText(`secret_file ${empty}\n`, "hast.conf", ALPHA), "hast.conf", 1, `secret_file ${empty} is empty`);
  });
});

