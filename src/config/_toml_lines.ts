// @iarna/toml returns plain objects without positions; this scanner maps every table header
// and key to the 1-based line where it first appears, so TOML errors can name a line.
// It runs only on text the TOML parser accepted, and every loop step advances.

export class TomlLines {
  private readonly first_line = new Map<string, number>();

  constructor(text: string) {
    new Scanner(text, (path, line) => {
      for (let n = 1; n <= path.length; n++) {
        const key = JSON.stringify(path.slice(0, n));
        if (!this.first_line.has(key)) this.first_line.set(key, line);
      }
    }).run();
  }

  /** Line of the path, else of its nearest recorded ancestor (keys inside inline tables), else 1. */
  lineOf(path: readonly string[]): number {
    for (let n = path.length; n > 0; n--) {
      const line = this.first_line.get(JSON.stringify(path.slice(0, n)));
      if (line !== undefined) return line;
    }
    return 1;
  }
}

const BARE_KEY_CHAR = /[A-Za-z0-9_-]/;

class Scanner {
  private pos = 0;
  private line = 1;
  private table: string[] = [];

  constructor(private readonly text: string, private readonly record: (path: string[], line: number) => void) {}

  run(): void {
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos] ?? "";
      if (ch === "\n") {
        this.line++;
        this.pos++;
      } else if (ch === " " || ch === "\t" || ch === "\r") {
        this.pos++;
      } else if (ch === "#") {
        this.skipComment();
      } else if (ch === "[") {
        this.pos += this.text[this.pos + 1] === "[" ? 2 : 1;
        this.table = this.keys();
        this.record(this.table, this.line);
        this.skipToLineEnd();
      } else if (ch === '"' || ch === "'" || BARE_KEY_CHAR.test(ch)) {
        const line = this.line;
        this.record([...this.table, ...this.keys()], line);
        this.skipValue();
      } else {
        this.pos++;
      }
    }
  }

  /** A dotted key: bare, "basic" or 'literal' parts separated by '.'. */
  private keys(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.skipSpaces();
      parts.push(this.keyPart());
      this.skipSpaces();
      if (this.text[this.pos] !== ".") return parts;
      this.pos++;
    }
  }

  private keyPart(): string {
    const ch = this.text[this.pos];
    if (ch === '"' || ch === "'") {
      const start = this.pos;
      this.skipString();
      const raw = this.text.slice(start, this.pos);
      if (ch === "'") return raw.slice(1, -1);
      try {
        return JSON.parse(raw) as string;
      } catch {
        return raw.slice(1, -1);
      }
    }
    const start = this.pos;
    while (this.pos < this.text.length && BARE_KEY_CHAR.test(this.text[this.pos] ?? "")) this.pos++;
    return this.text.slice(start, this.pos);
  }

  /** Skip '= value' up to the end of its last line, across multi-line arrays and strings. */
  private skipValue(): void {
    let depth = 0;
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos];
      if (ch === "\n") {
        if (depth <= 0) return;
        this.line++;
        this.pos++;
      } else if (ch === '"' || ch === "'") {
        this.skipString();
      } else if (ch === "#") {
        this.skipComment();
      } else {
        if (ch === "[" || ch === "{") depth++;
        if (ch === "]" || ch === "}") depth--;
        this.pos++;
      }
    }
  }

  private skipString(): void {
    const quote = this.text[this.pos] ?? '"';
    const triple = this.text.startsWith(quote.repeat(3), this.pos);
    const closer = triple ? quote.repeat(3) : quote;
    this.pos += closer.length;
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos];
      if (quote === '"' && ch === "\\") {
        if (this.text[this.pos + 1] === "\n") this.line++;
        this.pos += 2;
      } else if (this.text.startsWith(closer, this.pos)) {
        this.pos += closer.length;
        // A multi-line string may end with up to two extra quotes ("""a"""" is a + ").
        while (triple && this.text[this.pos] === quote) this.pos++;
        return;
      } else {
        if (ch === "\n") {
          if (!triple) return; // unterminated; the caller counts the newline
          this.line++;
        }
        this.pos++;
      }
    }
  }

  private skipComment(): void {
    while (this.pos < this.text.length && this.text[this.pos] !== "\n") this.pos++;
  }

  private skipToLineEnd(): void {
    while (this.pos < this.text.length && this.text[this.pos] !== "\n") {
      if (this.text[this.pos] === "#") return this.skipComment();
      this.pos++;
    }
  }

  private skipSpaces(): void {
    while (this.text[this.pos] === " " || this.text[this.pos] === "\t") this.pos++;
  }
}
