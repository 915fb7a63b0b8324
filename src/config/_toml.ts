// The TOML syntax: top-level keys are global statements, [on.<node>] per-node globals,
// [resource.<name>] resources and [resource.<name>.on.<node>] resource-node statements.
import TOML from "@iarna/toml";
import { ConfigError } from "./errors.ts";
import { TomlLines } from "./_toml_lines.ts";
import {
  allowedIn, isStatement, STATEMENTS,
  type Ast, type Context, type ResourceScope, type Scope, type Setting, type Statement,
} from "./_statements.ts";

type Table = Record<string, unknown>;

const WHERE: Readonly<Record<Context, string>> = {
  global: "at top level",
  node: "in [on.<node>]",
  resource: "in [resource.<name>]",
  resource_node: "in [resource.<name>.on.<node>]",
};

export function parseToml(text: string, file: string): Ast {
  let root: Table;
  try {
    root = TOML.parse(text);
  } catch (err) {
    throw fromTomlError(err, file);
  }
  return new TomlReader(file, new TomlLines(text)).read(root);
}

// TomlError has a 0-based line and a message "<what> at row R, col C, pos P:\n<excerpt>".
function fromTomlError(err: unknown, file: string): unknown {
  if (!(err instanceof Error) || !("line" in err) || typeof err.line !== "number") return err;
  const what = (err.message.split("\n")[0] ?? "").replace(/ at row \d+, col \d+, pos \d+:$/, "");
  const col = "col" in err && typeof err.col === "number" ? `, column ${err.col + 1}` : "";
  return new ConfigError(file, err.line + 1, `TOML syntax error${col}: ${what}`);
}

class TomlReader {
  constructor(private readonly file: string, private readonly lines: TomlLines) {}

  read(root: Table): Ast {
    const ast: Ast = { global: { name: "", line: 1, settings: [] }, nodes: [], resources: [] };
    for (const [key, value] of Object.entries(root)) {
      if (key === "on") {
        for (const [name, body] of this.children(["on"], value, "[on.<node>]")) {
          ast.nodes.push(this.scope(["on", name], name, body, "node"));
        }
      } else if (key === "resource") {
        for (const [name, body] of this.children(["resource"], value, "[resource.<name>]")) {
          ast.resources.push(this.resource(name, body));
        }
      } else {
        this.statement(ast.global, [], key, value, "global");
      }
    }
    return ast;
  }

  private resource(name: string, body: Table): ResourceScope {
    const path = ["resource", name];
    const resource: ResourceScope = { name, line: this.lines.lineOf(path), settings: [], nodes: [] };
    for (const [key, value] of Object.entries(body)) {
      if (key === "on") {
        for (const [node, node_body] of this.children([...path, "on"], value, `[resource.${name}.on.<node>]`)) {
          resource.nodes.push(this.scope([...path, "on", node], node, node_body, "resource_node"));
        }
      } else {
        this.statement(resource, path, key, value, "resource");
      }
    }
    return resource;
  }

  private scope(path: string[], name: string, body: Table, context: Context): Scope {
    const scope: Scope = { name, line: this.lines.lineOf(path), settings: [] };
    for (const [key, value] of Object.entries(body)) {
      if (key === "on") this.fail([...path, key], `'on' is not allowed ${WHERE[context]} (allowed at top level and in [resource.<name>])`);
      this.statement(scope, path, key, value, context);
    }
    return scope;
  }

  /** The named sub-tables of an `on` or `resource` table. */
  private children(path: string[], value: unknown, shape: string): [string, Table][] {
    if (!isTable(value)) this.fail(path, `${path.join(".")} must be a table of tables written as ${shape}`);
    const out: [string, Table][] = [];
    for (const [name, body] of Object.entries(value)) {
      if (name === "") this.fail([...path, name], `empty name in ${path.join(".")}`);
      if (!isTable(body)) this.fail([...path, name], `${path.join(".")}.${name} must be a table written as ${shape}`);
      out.push([name, body]);
    }
    return out;
  }

  private statement(scope: Scope, path: string[], key: string, value: unknown, context: Context): void {
    const at = [...path, key];
    if (!isStatement(key)) {
      const table = path.length === 0 ? "at top level" : `in [${path.map(quoteKey).join(".")}]`;
      this.fail(at, `unknown key '${key}' ${table}`);
    }
    if (!allowedIn(key, context)) {
      const allowed = STATEMENTS[key].contexts.map((c) => WHERE[c]).join(", ");
      this.fail(at, `'${key}' is not allowed ${WHERE[context]} (allowed ${allowed})`);
    }
    const line = this.lines.lineOf(at);
    if (key === "listen") {
      if (!Array.isArray(value)) this.fail(at, "listen must be an array of address strings");
      for (const item of value) scope.settings.push({ key, value: this.scalar(at, key, item), line });
      return;
    }
    scope.settings.push({ key, value: this.scalar(at, key, value), line });
  }

  /** TOML types to the values hast.conf would produce; Checker does the rest. */
  private scalar(at: string[], key: Statement, value: unknown): Setting["value"] {
    switch (STATEMENTS[key].kind) {
      case "seconds":
        if (typeof value !== "number") this.fail(at, `${key} must be a positive number of seconds`);
        return value;
      case "rate":
        if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return String(value);
        if (typeof value !== "string") this.fail(at, `${key} must be bytes per second (an integer, or a string such as "100M") or "none"`);
        return value;
      case "onoff":
        if (typeof value === "boolean") return value;
        if (value === "on" || value === "off") return value === "on";
        return this.fail(at, `${key} must be true, false, "on" or "off"`);
      default:
        if (typeof value !== "string") this.fail(at, `${key} must be a string`);
        return value;
    }
  }

  private fail(path: string[], detail: string): never {
    throw new ConfigError(this.file, this.lines.lineOf(path), detail);
  }
}

function isTable(value: unknown): value is Table {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

function quoteKey(key: string): string {
  return /^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key);
}
