// Spec 1.1 lexical rules of hast.conf, and TOML syntax errors converted to our format.
import { describe, expect, test } from "bun:test";
import { conf, confError, MIN_TOML, toml, tomlError } from "./helpers.ts";

describe("hast.conf lexical rules", () => {
  test("comments anywhere, any whitespace and line layout, no terminator", () => {
    const text = "# head\nresource # after keyword\n r0 # after name\n{ local /dev/sdb # after value\n on\talpha{remote\n\n10.0.0.2}}# tail";
    const r = conf(text).resources[0];
    expect([r?.name, r?.localpath, r?.remote_text, r?.line]).toEqual(["r0", "/dev/sdb", "10.0.0.2", 2]);
    expect(conf("resource r0 { local /d on alpha { remote none } }").resources).toHaveLength(1);
    expect(conf("resource r0 {\r\n local /d\r\n on alpha { remote none }\r\n}\r\n").resources).toHaveLength(1);
  });

  test("no quoting: a quote, '=' or ';' is an unexpected character at its line", () => {
    const why = "unexpected character (values cannot be quoted; allowed are letters, digits and . - _ / : [ ])";
    confError('resource r0 {\n local "/dev/sdb"\n}', 2, `syntax error near '"': ${why}`);
    confError("\n\ntimeout = 5\n", 3, `syntax error near '=': ${why}`);
    confError("resource r0 {\nlocal /d;\n}", 2, `syntax error near ';': ${why}`);
    confError("listen fe80::1%em0\n", 1, `syntax error near '%': ${why}`);
    confError("\n\u00a0", 2, `syntax error near 'U+00A0': ${why}`);
  });

  test("reserved words cannot be names; longer words that start with one can", () => {
    confError("resource local {\n}", 1, "syntax error near 'local': expected a resource name ('local' is a reserved word)");
    confError("resource r0 {\n on none {\n }\n}", 2, "syntax error near 'none': expected a node name ('none' is a reserved word)");
    confError("resource r0 {\n local hole\n}", 2, "syntax error near 'hole': expected a path ('hole' is a reserved word)");
    expect(conf("resource localhost {\nlocal /d\non alpha {\nremote none\n}\n}").resources[0]?.name).toBe("localhost");
  });

  test("our statement words are keywords only at statement position", () => {
    const text = "resource nbd {\nlocal /dev/device\nnbd /run/nbd.sock\non alpha {\nremote secret\n}\non logfile {\nremote none\n}\n}";
    const r = conf(text).resources[0];
    expect([r?.name, r?.localpath, r?.remote_text]).toEqual(["nbd", "/dev/device", "secret"]);
    confError("resource r0 {\n name device\n}\ndevice maybe\n", 4, "syntax error near 'maybe': expected on or off");
  });

  test("a token of digits only is a number, never a name", () => {
    confError("resource 123 {\n}", 1, "syntax error near '123': expected a resource name (a name made only of digits is a number)");
    confError("resource r0 {\nlocal /d\non 42 {\n}\n}", 3, "syntax error near '42': expected a node name (a name made only of digits is a number)");
    confError("resource r0 {\nlocal 100\n}", 2, "syntax error near '100': expected a path");
    expect(conf("resource r1 {\nlocal /d\non alpha {\nremote 10.0.0.1\n}\n}").resources[0]?.name).toBe("r1");
  });

  test("statement and block errors", () => {
    confError("foo bar\n", 1, "syntax error near 'foo': expected a statement at global level");
    confError("resource r0 {\n  5\n}", 2, "syntax error near '5': expected a statement in a 'resource' block");
    confError("resource r0\nlocal /d\n", 2, "syntax error near 'local': expected '{'");
    confError("}\n", 1, "syntax error near '}': there is no block to close");
    confError("resource r0 {\n local /d\n on alpha {\n remote none\n }\n", 5,
      "syntax error near end of file: expected '}' to close 'resource r0' opened at line 1");
    confError("control\n", 1, "syntax error near end of file: expected an address");
    confError("resource r0 {\nlocal /d\non alpha {\nremote local\n}\n}", 4,
      "syntax error near 'local': expected an address or none ('local' is a reserved word)");
  });

  test("lzf is part of the grammar, zstd is accepted although not a reserved word", () => {
    expect(conf("compression zstd\n" + "resource r0 {\nlocal /d\non alpha {\nremote none\n}\n}").resources[0]?.compression).toBe("zstd");
    confError("compression lzf\n", 1, "compression lzf is not supported, use zstd or hole");
    confError("compression gzip\n", 1, "syntax error near 'gzip': expected one of none, hole, zstd");
  });
});

describe("TOML syntax", () => {
  test("parse errors carry a 1-based line and column", () => {
    tomlError("# ok\ntimeout = \n", 2, "TOML syntax error, column 11: Unexpected character, expecting string, number, datetime, boolean, inline array or inline table");
    tomlError('[resource.r0]\nlocal = "/d"\nlocal = "/e"\n', 3, "TOML syntax error, column 13: Can't redefine existing key");
  });

  test("unknown keys and wrong types name the line of the key", () => {
    tomlError(MIN_TOML + "\nlisten_on = 1\n", 7, "unknown key 'listen_on' in [resource.r0.on.alpha]");
    tomlError("\nfoo = 1\n", 2, "unknown key 'foo' at top level");
    tomlError('\n\n[resource."r.1"]\nbar = 2\n', 4, "unknown key 'bar' in [resource.\"r.1\"]");
    tomlError('listen = "10.0.0.1"\n', 1, "listen must be an array of address strings");
    tomlError("\n\nmetaflush = 1\n", 3, 'metaflush must be true, false, "on" or "off"');
    tomlError("control = 5\n", 1, "control must be a string");
    tomlError("[[resource]]\nname = \"x\"\n", 1, "resource must be a table of tables written as [resource.<name>]");
    tomlError('on = "alpha"\n', 1, "on must be a table of tables written as [on.<node>]");
    tomlError('[resource]\nr0 = "x"\n', 2, "resource.r0 must be a table written as [resource.<name>]");
  });

  test("dotted keys, quoted node names and inline tables are the same schema", () => {
    const text = 'resource.r0.local = "/d"\n[resource.r0.on."alpha.example.com"]\nremote = "none"\n';
    expect(toml(text).resources[0]?.localpath).toBe("/d");
    const inline = 'resource = { r0 = { local = "/d", on = { alpha = { remote = "none", metaflush = "off" } } } }\n';
    expect(toml(inline).resources[0]?.metaflush).toBe(false);
    tomlError('\nresource = { r0 = { on = { alpha = { remote = "none", nope = 1 } } } }\n', 2,
      "unknown key 'nope' in [resource.r0.on.alpha]");
  });
});
