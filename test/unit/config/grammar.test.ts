// Spec 1.2 grammar table (plus our statements): every statement in every context, both syntaxes.
// The table below is written out independently of src/config/_statements.ts on purpose.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { conf, confError, toml, tomlError } from "./helpers.ts";

const dir = mkdtempSync(join(tmpdir(), "hast-config-grammar-"));
const secret_path = join(dir, "secret");
writeFileSync(secret_path, "s3cret\n");
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Ctx = "global" | "node" | "resource" | "resource_node";
// statement: [hast.conf value, TOML value, contexts where it is allowed]
const TABLE: Record<string, [string, string, Ctx[]]> = {
  control: ["/tmp/ctl", '"/tmp/ctl"', ["global", "node"]],
  pidfile: ["/tmp/hastd.pid", '"/tmp/hastd.pid"', ["global", "node"]],
  listen: ["10.0.0.1", '["10.0.0.1"]', ["global", "node"]],
  logfile: ["/var/log/hastd.log", '"/var/log/hastd.log"', ["global", "node"]],
  replication: ["fullsync", '"fullsync"', ["global", "resource"]],
  checksum: ["crc32", '"crc32"', ["global", "resource"]],
  compression: ["zstd", '"zstd"', ["global", "resource"]],
  timeout: ["5", "5", ["global", "resource"]],
  exec: ["/usr/local/sbin/hook", '"/usr/local/sbin/hook"', ["global", "resource"]],
  secret: ["s3cret", '"s3cret"', ["global", "resource"]],
  secret_file: [secret_path, JSON.stringify(secret_path), ["global", "resource"]],
  metaflush: ["off", "false", ["global", "resource", "resource_node"]],
  device: ["off", '"off"', ["global", "resource", "resource_node"]],
  nbd: ["/tmp/r0.nbd", '"/tmp/r0.nbd"', ["resource", "resource_node"]],
  name: ["prov0", '"prov0"', ["resource", "resource_node"]],
  local: ["/dev/sdc", '"/dev/sdc"', ["resource", "resource_node"]],
  remote: ["none", '"none"', ["resource_node"]],
  source: ["10.0.0.1", '"10.0.0.1"', ["resource_node"]],
};

const CONF_WHERE: Record<Ctx, string> = {
  global: "at global level",
  node: "in a top-level 'on <node>' block",
  resource: "in a 'resource' block",
  resource_node: "in an 'on <node>' block inside a resource",
};
const TOML_WHERE: Record<Ctx, string> = {
  global: "at top level",
  node: "in [on.<node>]",
  resource: "in [resource.<name>]",
  resource_node: "in [resource.<name>.on.<node>]",
};

/** hast.conf text with the statement at line CONF_LINE[ctx] in the given context. */
const CONF_LINE: Record<Ctx, number> = { global: 2, node: 2, resource: 2, resource_node: 3 };
function confText(stmt: string, value: string, ctx: Ctx): string {
  const line = `${stmt} ${value}`;
  const res = (inner: string, node: string) => `resource r0 {\n${inner}local /dev/sdb\non alpha {\n${node}remote none\n}\n}\n`;
  switch (ctx) {
    case "global": return `# line 1\n${line}\n${res("", "")}`;
    case "node": return `on alpha {\n${line}\n}\n${res("", "")}`;
    case "resource": return `resource r0 {\n${line}\nlocal /dev/sdb\non alpha {\nremote none\n}\n}\n`;
    case "resource_node": return `resource r0 {\non alpha {\n${line}\nremote none\n}\nlocal /dev/sdb\n}\n`;
  }
}

/** TOML text with the key at line 2 in the given context. */
function tomlText(key: string, value: string, ctx: Ctx): string {
  const line = `${key} = ${value}`;
  const local = key === "local" ? "" : 'local = "/dev/sdb"\n';
  const remote = key === "remote" ? "" : 'remote = "none"\n';
  switch (ctx) {
    case "global": return `# line 1\n${line}\n[resource.r0]\n${local}[resource.r0.on.alpha]\n${remote}`;
    case "node": return `[on.alpha]\n${line}\n[resource.r0]\n${local}[resource.r0.on.alpha]\n${remote}`;
    case "resource": return `[resource.r0]\n${line}\n${local}[resource.r0.on.alpha]\n${remote}`;
    case "resource_node": return `[resource.r0.on.alpha]\n${line}\n${remote}[resource.r0]\n${local}`;
  }
}

describe("grammar table", () => {
  for (const [stmt, [conf_value, toml_value, allowed]] of Object.entries(TABLE)) {
    for (const ctx of ["global", "node", "resource", "resource_node"] as Ctx[]) {
      const ok = allowed.includes(ctx);
      const where = allowed.map((c) => CONF_WHERE[c]).join(", ");
      const toml_where = allowed.map((c) => TOML_WHERE[c]).join(", ");
      test(`${stmt} ${ok ? "allowed" : "rejected"} ${CONF_WHERE[ctx]} (hast.conf and TOML)`, () => {
        if (ok) {
          expect(conf(confText(stmt, conf_value, ctx)).resources).toHaveLength(1);
          expect(toml(tomlText(stmt, toml_value, ctx)).resources).toHaveLength(1);
        } else {
          confError(confText(stmt, conf_value, ctx), CONF_LINE[ctx],
            `syntax error near '${stmt}': '${stmt}' is not allowed ${CONF_WHERE[ctx]} (allowed ${where})`);
          tomlError(tomlText(stmt, toml_value, ctx), 2,
            `'${stmt}' is not allowed ${TOML_WHERE[ctx]} (allowed ${toml_where})`);
        }
      });
    }
  }

  test("on and resource blocks: allowed and forbidden nesting (hast.conf)", () => {
    expect(conf(`on alpha {\n}\n${"resource r0 {\nlocal /d\non beta {\n}\non alpha {\nremote none\n}\n}"}`).resources).toHaveLength(1);
    confError("on alpha {\non beta {\n}\n}", 2,
      "syntax error near 'on': 'on' is not allowed in a top-level 'on <node>' block (allowed at global level and in a 'resource' block)");
    confError("resource r0 {\non alpha {\non beta {\n}\n}\n}", 3,
      "syntax error near 'on': 'on' is not allowed in an 'on <node>' block inside a resource (allowed at global level and in a 'resource' block)");
    confError("resource r0 {\nresource r1 {\n}\n}", 2,
      "syntax error near 'resource': 'resource' is not allowed in a 'resource' block (allowed at global level)");
    confError("on alpha {\nresource r1 {\n}\n}", 2,
      "syntax error near 'resource': 'resource' is not allowed in a top-level 'on <node>' block (allowed at global level)");
  });

  test("on and resource tables: forbidden nesting (TOML)", () => {
    tomlError('[on.alpha]\ncontrol = "/c"\n[on.alpha.on.beta]\n', 3,
      "'on' is not allowed in [on.<node>] (allowed at top level and in [resource.<name>])");
    tomlError('[resource.r0.on.alpha]\nremote = "none"\n[resource.r0.on.alpha.on.x]\n', 3,
      "'on' is not allowed in [resource.<name>.on.<node>] (allowed at top level and in [resource.<name>])");
    tomlError('[resource.r0.resource.r1]\nlocal = "/d"\n', 1, "unknown key 'resource' in [resource.r0]");
    tomlError('[on.alpha.resource.r1]\nlocal = "/d"\n', 1, "unknown key 'resource' in [on.alpha]");
  });
});
