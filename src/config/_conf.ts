// The classic hast.conf(5) syntax (spec 1.1, 1.2): tokens are '{', '}', numbers (all digits),
// FreeBSD's reserved words, and strings over [A-Za-z0-9._-/:[]]; '#' comments; no quoting.
import { ConfigError } from "./errors.ts";
import {
  allowedIn, isStatement, STATEMENTS,
  type Ast, type Context, type ResourceScope, type Scope, type Setting, type Statement,
} from "./_statements.ts";

/** FreeBSD's reserved words (spec 1.1): they can never be names or paths. */
const RESERVED = new Set([
  "control", "pidfile", "listen", "replication", "checksum", "compression", "timeout", "exec",
  "metaflush", "resource", "name", "local", "remote", "source", "on", "off", "fullsync",
  "memsync", "async", "none", "crc32", "sha256", "hole", "lzf",
]);
/** Our statements are keywords only where a statement may start, so they never break a name. */
const EXTENSION_STATEMENTS = new Set(["nbd", "device", "secret", "secret_file", "logfile", "verify_rate", "sync_rate", "resync_digest"]);

type TokenKind = "{" | "}" | "number" | "string" | "keyword" | "eof";
interface Token { readonly kind: TokenKind; readonly text: string; readonly line: number }

const STRING_CHAR = /[A-Za-z0-9._\-/:[\]]/;

class Lexer {
  private pos = 0;
  private line = 1;
  constructor(private readonly text: string, private readonly file: string) {}

  next(): Token {
    this.skipBlanksAndComments();
    const start = this.pos;
    if (start >= this.text.length) return { kind: "eof", text: "", line: this.lastLine() };
    const ch = this.text[start] ?? "";
    if (ch === "{" || ch === "}") {
      this.pos++;
      return { kind: ch, text: ch, line: this.line };
    }
    while (this.pos < this.text.length && STRING_CHAR.test(this.text[this.pos] ?? "")) this.pos++;
    if (this.pos === start) {
      const code = this.text.codePointAt(start) ?? 0;
      const shown = code > 0x20 && code < 0x7f ? String.fromCodePoint(code) : `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
      throw new ConfigError(this.file, this.line, `syntax error near '${shown}': unexpected character (values cannot be quoted; allowed are letters, digits and . - _ / : [ ])`);
    }
    const word = this.text.slice(start, this.pos);
    const kind = /^[0-9]+$/.test(word) ? "number" : RESERVED.has(word) ? "keyword" : "string";
    return { kind, text: word, line: this.line };
  }

  /** The newline ending the last line does not start another one. */
  private lastLine(): number {
    return this.text.endsWith("\n") && this.line > 1 ? this.line - 1 : this.line;
  }

  private skipBlanksAndComments(): void {
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos];
      if (ch === "\n") this.line++;
      if (ch === " " || ch === "\t" || ch === "\r" || ch === "\n") {
        this.pos++;
      } else if (ch === "#") {
        const eol = this.text.indexOf("\n", this.pos);
        this.pos = eol === -1 ? this.text.length : eol;
      } else {
        return;
      }
    }
  }
}

const WHERE: Readonly<Record<Context, string>> = {
  global: "at global level",
  node: "in a top-level 'on <node>' block",
  resource: "in a 'resource' block",
  resource_node: "in an 'on <node>' block inside a resource",
};

const EXPECTED_VALUE: Readonly<Record<string, string>> = {
  address: "an address",
  path: "a path",
  provname: "a provider name",
  secret: "the secret (letters, digits and . - _ / : [ ]; use secret_file for others)",
};

export function parseConf(text: string, file: string): Ast {
  return new ConfParser(text, file).parse();
}

class ConfParser {
  private readonly lexer: Lexer;
  constructor(text: string, private readonly file: string) {
    this.lexer = new Lexer(text, file);
  }

  parse(): Ast {
    const ast: Ast = { global: { name: "", line: 1, settings: [] }, nodes: [], resources: [] };
    for (let tok = this.lexer.next(); tok.kind !== "eof"; tok = this.lexer.next()) {
      this.statement(tok, "global", ast.global, ast);
    }
    return ast;
  }

  /** Parse the entries of a block up to its '}'. */
  private block(context: Context, scope: Scope, ast: Ast, opener: Token, owner: string): void {
    for (;;) {
      const tok = this.lexer.next();
      if (tok.kind === "}") return;
      if (tok.kind === "eof") {
        this.syntax(tok, `expected '}' to close '${owner}' opened at line ${opener.line}`);
      }
      this.statement(tok, context, scope, ast);
    }
  }

  private statement(tok: Token, context: Context, scope: Scope, ast: Ast): void {
    const word = tok.kind === "keyword" || (tok.kind === "string" && EXTENSION_STATEMENTS.has(tok.text)) ? tok.text : "";
    if (word === "on") return this.onBlock(tok, context, scope, ast);
    if (word === "resource") return this.resourceBlock(tok, context, ast);
    if (!isStatement(word)) {
      const reason = tok.kind === "}" ? "there is no block to close" : `expected a statement ${WHERE[context]}`;
      this.syntax(tok, reason);
    }
    if (!allowedIn(word, context)) this.syntax(tok, misplaced(word, context));
    scope.settings.push({ key: word, value: this.value(word), line: tok.line });
  }

  private onBlock(tok: Token, context: Context, scope: Scope, ast: Ast): void {
    if (context !== "global" && context !== "resource") {
      this.syntax(tok, `'on' is not allowed ${WHERE[context]} (allowed at global level and in a 'resource' block)`);
    }
    const name = this.name("a node name");
    const node: Scope = { name: name.text, line: tok.line, settings: [] };
    this.expectOpen();
    if (context === "global") {
      ast.nodes.push(node);
      this.block("node", node, ast, tok, `on ${name.text}`);
    } else {
      (scope as ResourceScope).nodes.push(node); // context "resource": scope is the resource
      this.block("resource_node", node, ast, tok, `on ${name.text}`);
    }
  }

  private resourceBlock(tok: Token, context: Context, ast: Ast): void {
    if (context !== "global") this.syntax(tok, `'resource' is not allowed ${WHERE[context]} (allowed at global level)`);
    const name = this.name("a resource name");
    const resource: ResourceScope = { name: name.text, line: tok.line, settings: [], nodes: [] };
    this.expectOpen();
    ast.resources.push(resource);
    this.block("resource", resource, ast, tok, `resource ${name.text}`);
  }

  private name(what: string): Token {
    const tok = this.lexer.next();
    if (tok.kind === "string") return tok;
    if (tok.kind === "keyword") this.syntax(tok, `expected ${what} ('${tok.text}' is a reserved word)`);
    if (tok.kind === "number") this.syntax(tok, `expected ${what} (a name made only of digits is a number)`);
    return this.syntax(tok, `expected ${what}`);
  }

  private expectOpen(): void {
    const tok = this.lexer.next();
    if (tok.kind !== "{") this.syntax(tok, "expected '{'");
  }

  private value(key: Statement): Setting["value"] {
    const spec = STATEMENTS[key];
    const tok = this.lexer.next();
    switch (spec.kind) {
      case "seconds":
        if (tok.kind !== "number") this.syntax(tok, "expected a number of seconds");
        return Number(tok.text);
      case "onoff":
        if (tok.kind !== "keyword" || (tok.text !== "on" && tok.text !== "off")) this.syntax(tok, "expected on or off");
        return tok.text === "on";
      case "rate":
        if (tok.kind === "number" || tok.kind === "string" || (tok.kind === "keyword" && tok.text === "none")) return tok.text;
        return this.syntax(tok, "expected bytes per second (a size such as 100M) or none");
      case "choice": {
        const choices = spec.choices ?? [];
        // zstd is not a FreeBSD reserved word, so it arrives as a string.
        if ((tok.kind !== "keyword" && tok.kind !== "string") || !choices.includes(tok.text)) {
          this.syntax(tok, `expected one of ${choices.filter((c) => c !== "lzf").join(", ")}`);
        }
        return tok.text;
      }
      case "secret":
        // Ours, not FreeBSD's grammar: any word is a secret, digits and reserved words too (as in TOML).
        if (tok.kind === "string" || tok.kind === "number" || tok.kind === "keyword") return tok.text;
        return this.syntax(tok, `expected ${EXPECTED_VALUE.secret}`);
      default: {
        if (key === "remote" && tok.kind === "keyword" && tok.text === "none") return "none";
        if (tok.kind !== "string") {
          const expected = EXPECTED_VALUE[spec.kind] ?? "a value";
          const why = tok.kind === "keyword" ? ` ('${tok.text}' is a reserved word)` : "";
          this.syntax(tok, `expected ${key === "remote" ? "an address or none" : expected}${why}`);
        }
        return tok.text;
      }
    }
  }

  private syntax(tok: Token, reason: string): never {
    const near = tok.kind === "eof" ? "end of file" : `'${tok.text}'`;
    throw new ConfigError(this.file, tok.line, `syntax error near ${near}: ${reason}`);
  }
}

function misplaced(key: Statement, context: Context): string {
  const allowed = STATEMENTS[key].contexts.map((c) => WHERE[c]).join(", ");
  return `'${key}' is not allowed ${WHERE[context]} (allowed ${allowed})`;
}
