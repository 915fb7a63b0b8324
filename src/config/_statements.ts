// The statement table shared by both syntaxes: where each statement may appear (spec 1.2 plus
// our nbd/device/secret/secret_file/logfile/verify_rate/sync_rate/resync_digest), what value it
// takes, and how that value is checked.
import { AddressError, parseAddress, type Address } from "./address.ts";
import { ConfigError } from "./errors.ts";
import { parseSize } from "./size.ts";

export type Context = "global" | "node" | "resource" | "resource_node";

export type Statement =
  | "control" | "pidfile" | "listen" | "logfile"
  | "replication" | "checksum" | "compression" | "timeout" | "exec" | "secret" | "secret_file"
  | "metaflush" | "device" | "nbd" | "name" | "local" | "remote" | "source" | "verify_rate" | "sync_rate" | "resync_digest";

type ValueKind = "address" | "path" | "provname" | "choice" | "seconds" | "onoff" | "secret" | "rate";

interface StatementSpec {
  readonly contexts: readonly Context[];
  readonly kind: ValueKind;
  readonly choices?: readonly string[];
}

export const STATEMENTS: Readonly<Record<Statement, StatementSpec>> = {
  control: { contexts: ["global", "node"], kind: "address" },
  pidfile: { contexts: ["global", "node"], kind: "path" },
  listen: { contexts: ["global", "node"], kind: "address" },
  logfile: { contexts: ["global", "node"], kind: "path" },
  replication: { contexts: ["global", "resource"], kind: "choice", choices: ["fullsync", "memsync", "async"] },
  checksum: { contexts: ["global", "resource"], kind: "choice", choices: ["none", "crc32", "sha256"] },
  // lzf is part of the grammar (FreeBSD files use it) but rejected when checked.
  compression: { contexts: ["global", "resource"], kind: "choice", choices: ["none", "hole", "zstd", "lzf"] },
  timeout: { contexts: ["global", "resource"], kind: "seconds" },
  exec: { contexts: ["global", "resource"], kind: "path" },
  secret: { contexts: ["global", "resource"], kind: "secret" },
  secret_file: { contexts: ["global", "resource"], kind: "path" },
  metaflush: { contexts: ["global", "resource", "resource_node"], kind: "onoff" },
  device: { contexts: ["global", "resource", "resource_node"], kind: "onoff" },
  nbd: { contexts: ["resource", "resource_node"], kind: "address" },
  name: { contexts: ["resource", "resource_node"], kind: "provname" },
  local: { contexts: ["resource", "resource_node"], kind: "path" },
  remote: { contexts: ["resource_node"], kind: "address" },
  source: { contexts: ["resource_node"], kind: "address" },
  verify_rate: { contexts: ["global", "resource"], kind: "rate" },
  sync_rate: { contexts: ["global", "resource"], kind: "rate" },
  resync_digest: { contexts: ["global", "resource"], kind: "onoff" },
};

export function isStatement(word: string): word is Statement {
  return Object.hasOwn(STATEMENTS, word);
}

export function allowedIn(statement: Statement, context: Context): boolean {
  return STATEMENTS[statement].contexts.includes(context);
}

/** One statement as written, already type-checked by the syntax front end. */
export interface Setting {
  readonly key: Statement;
  readonly value: string | number | boolean;
  /** 1-based. */
  readonly line: number;
}

export interface Scope {
  /** Node or resource name; "" for the global scope. */
  readonly name: string;
  readonly line: number;
  readonly settings: Setting[];
}

export interface ResourceScope extends Scope {
  readonly nodes: Scope[];
}

/** What both front ends produce; resolve.ts turns it into a Config. */
export interface Ast {
  readonly global: Scope;
  readonly nodes: Scope[];
  readonly resources: ResourceScope[];
}

export const HAST_PORT = 8457;
export const NBD_PORT = 10809;
export const TIMEOUT_MAX_S = 2147483; // timeout_s * 1000 must fit a JS timer (2^31-1 ms)
const PATH_MAX_BYTES = 1023; // FreeBSD buffers are 1024 bytes including the NUL
export const NAME_MAX_BYTES = 254; // NAME_MAX (255) including the NUL
export const SECRET_MAX_BYTES = 65536;
/** The characters a hast.conf string token may hold; TOML names are held to the same set. */
export const NAME_RE = /^[A-Za-z0-9._\-/:[\]]+$/;

const DEFAULT_PORT: Partial<Record<Statement, number>> = { source: 0, nbd: NBD_PORT };
/** What each address statement can be used as: the control socket is local, replication is TCP. */
const ADDRESS_KINDS: Partial<Record<Statement, { kinds: readonly Address["kind"][]; what: string }>> = {
  control: { kinds: ["uds"], what: "a unix socket (uds:///path)" },
  listen: { kinds: ["tcp"], what: "TCP (host:port)" },
  remote: { kinds: ["tcp"], what: "TCP (host:port)" },
  source: { kinds: ["tcp"], what: "TCP (host[:port])" },
};

export class Checker {
  constructor(readonly file: string) {}

  fail(line: number, detail: string): never {
    throw new ConfigError(this.file, line, detail);
  }

  /** Check any setting (also in blocks for other nodes, so both nodes see the same errors). */
  check(s: Setting): void {
    const spec = STATEMENTS[s.key];
    switch (spec.kind) {
      case "address": if (!(s.key === "remote" && s.value === "none")) this.address(s); return;
      case "path": this.path(s); return;
      case "provname": this.provname(s); return;
      case "choice": this.choice(s); return;
      case "seconds": this.seconds(s); return;
      case "onoff": this.onoff(s); return;
      case "secret": this.secret(s); return;
      case "rate": this.rate(s); return;
    }
  }

  address(s: Setting): Address {
    const text = this.text(s);
    if (Buffer.byteLength(text) > PATH_MAX_BYTES) this.fail(s.line, `${s.key} argument is too long.`);
    // hast.conf cannot even write these (none is reserved); keep TOML from taking it as a host name.
    if (text === "none") this.fail(s.line, `${s.key} cannot be none (only remote can)`);
    let address: Address;
    try {
      address = parseAddress(text, DEFAULT_PORT[s.key] ?? HAST_PORT);
    } catch (err) {
      if (err instanceof AddressError) this.fail(s.line, `invalid ${s.key} address '${text}': ${err.reason}`);
      throw err;
    }
    const usable = ADDRESS_KINDS[s.key];
    if (usable && !usable.kinds.includes(address.kind)) this.fail(s.line, `${s.key} address '${text}' must be ${usable.what}`);
    return address;
  }

  path(s: Setting): string {
    const text = this.text(s);
    if (s.key === "exec" && text === "") return text; // empty exec = not set (spec 1.4)
    if (text === "") this.fail(s.line, `${s.key} must not be empty`);
    if (text.includes("\0")) this.fail(s.line, `${s.key} contains a NUL byte`);
    if (Buffer.byteLength(text) > PATH_MAX_BYTES) {
      this.fail(s.line, s.key === "exec" ? "Exec path is too long." : `${s.key} argument is too long.`);
    }
    // hastctl runs in the operator's directory, hastd wherever it was started (FreeBSD's in /):
    // a relative path would name different files. secret_file is taken from the config's directory.
    if (s.key !== "secret_file" && !text.startsWith("/")) this.fail(s.line, `${s.key} must be an absolute path, not '${text}'`);
    return text;
  }

  provname(s: Setting): string {
    const text = this.text(s);
    if (Buffer.byteLength(text) > NAME_MAX_BYTES) this.fail(s.line, "name argument is too long.");
    this.checkName(s.line, "provider name", text);
    return text;
  }

  /** Resource and provider names become /dev/hast/<name> and socket paths: one path component. */
  checkName(line: number, what: string, text: string): void {
    if (!NAME_RE.test(text)) this.fail(line, `${what} '${text}' may contain only letters, digits and . - _ : [ ]`);
    if (text.includes("/")) this.fail(line, `${what} '${text}' must not contain '/'`);
    if (text === "." || text === "..") this.fail(line, `${what} must not be '.' or '..'`);
  }

  choice(s: Setting): string {
    const text = this.text(s);
    const choices = STATEMENTS[s.key].choices ?? [];
    if (!choices.includes(text)) {
      const offered = choices.filter((c) => c !== "lzf");
      this.fail(s.line, `${s.key} must be one of ${offered.join(", ")}, not '${text}'`);
    }
    if (s.key === "compression" && text === "lzf") {
      this.fail(s.line, "compression lzf is not supported, use zstd or hole");
    }
    return text;
  }

  seconds(s: Setting): number {
    if (typeof s.value !== "number" || !Number.isInteger(s.value) || s.value <= 0) {
      this.fail(s.line, `${s.key} must be a positive number of seconds`);
    }
    if (s.value > TIMEOUT_MAX_S) this.fail(s.line, `${s.key} must be at most ${TIMEOUT_MAX_S} seconds`);
    return s.value;
  }

  onoff(s: Setting): boolean {
    if (typeof s.value !== "boolean") this.fail(s.line, `${s.key} must be on or off`);
    return s.value;
  }

  /** Bytes per second (a size: 100M), or null for `none` (no limit). */
  rate(s: Setting): number | null {
    const text = this.text(s);
    if (text === "none") return null;
    let bytes: number;
    try {
      bytes = parseSize(text);
    } catch (err) {
      return this.fail(s.line, `${s.key} must be bytes per second (a size such as 100M) or none: ${(err as Error).message}`);
    }
    if (bytes === 0) this.fail(s.line, `${s.key} must be more than 0 bytes per second (none: no limit)`);
    return bytes;
  }

  secret(s: Setting): string {
    const text = this.text(s);
    if (text === "") this.fail(s.line, "secret must not be empty");
    if (Buffer.byteLength(text) > SECRET_MAX_BYTES) this.fail(s.line, `secret is longer than ${SECRET_MAX_BYTES} bytes`);
    return text;
  }

  private text(s: Setting): string {
    if (typeof s.value !== "string") this.fail(s.line, `${s.key} must be a string`);
    return s.value;
  }
}
