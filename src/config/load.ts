// Entry points: pick the syntax by extension, read the file and any secret_file.
import { closeSync, constants, fstatSync, openSync, readSync } from "node:fs";
import { dirname, isAbsolute, resolve as resolvePath } from "node:path";
import { ConfigError, EX_CONFIG, EX_OSFILE } from "./errors.ts";
import { localIdentity, type NodeIdentity } from "./node.ts";
import { parseConf } from "./_conf.ts";
import { resolve, type SecretReader } from "./_resolve.ts";
import { SECRET_MAX_BYTES } from "./_statements.ts";
import { parseToml } from "./_toml.ts";
import type { Config } from "./types.ts";

export const DEFAULT_CONFIG_PATH = "/etc/hast.conf";
export const CONFIG_MAX_BYTES = 4 * 1024 * 1024;

/** Parse config text; `.toml` files (any case) use the TOML syntax, all others hast.conf(5). */
export function parseConfigText(text: string, file: string, identity: NodeIdentity): Config {
  if (text.length > CONFIG_MAX_BYTES) {
    throw new ConfigError(file, null, `configuration is larger than ${CONFIG_MAX_BYTES} bytes`);
  }
  const ast = file.toLowerCase().endsWith(".toml") ? parseToml(text, file) : parseConf(text, file);
  return resolve(ast, file, identity, secretReader(file));
}

/** Read and parse a config file; opts.node overrides HASTD_NODE and the host's own names. */
export function loadConfig(path: string, opts: { node?: string } = {}): Config {
  const text = readBounded(path, CONFIG_MAX_BYTES, { regular_only: false });
  if (typeof text !== "string") {
    const detail = text.exit_code === EX_OSFILE ? `cannot read configuration: ${text.why}` : `configuration ${text.why}`;
    throw new ConfigError(path, null, detail, text.exit_code);
  }
  return parseConfigText(text, path, localIdentity(opts.node));
}

// A relative secret_file is taken relative to the config file, not to the daemon's cwd.
function secretReader(file: string): SecretReader {
  return (path, line) => {
    const full = isAbsolute(path) ? path : resolvePath(dirname(file), path);
    const text = readBounded(full, SECRET_MAX_BYTES, { regular_only: true });
    if (typeof text !== "string") {
      const detail = text.exit_code === EX_OSFILE ? `cannot read secret_file ${full}: ${text.why}`
        : `secret_file ${full} ${text.why}${text.why === NOT_TEXT ? " (a binary key: write it as text, e.g. openssl rand -hex 32)" : ""}`;
      throw new ConfigError(file, line, detail, text.exit_code);
    }
    const value = text.replace(/\r?\n$/, "");
    if (value === "") throw new ConfigError(file, line, `secret_file ${full} is empty`);
    return { value, path: full };
  };
}

interface ReadFailure { why: string; exit_code: 72 | 78 }

const NOT_TEXT = "is not UTF-8 text";

/** Read at most max_bytes (so /dev/zero cannot hang us); a secret must be a regular file. */
function readBounded(path: string, max_bytes: number, opts: { regular_only: boolean }): string | ReadFailure {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (opts.regular_only ? constants.O_NONBLOCK : 0));
  } catch (err) {
    return { why: errorText(err), exit_code: EX_OSFILE };
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) return { why: "EISDIR: is a directory", exit_code: EX_OSFILE };
    if (opts.regular_only && !stat.isFile()) return { why: "is not a regular file", exit_code: EX_CONFIG };
    const buffer = Buffer.alloc(max_bytes + 1);
    let size_bytes = 0;
    while (size_bytes < buffer.length) {
      const n = readSync(fd, buffer, size_bytes, buffer.length - size_bytes, null);
      if (n === 0) break;
      size_bytes += n;
    }
    if (size_bytes > max_bytes) return { why: `is larger than ${max_bytes} bytes`, exit_code: EX_CONFIG };
    // Decoded strictly: lossy decoding would turn every invalid byte into U+FFFD, and two quite
    // different binary key files into one secret.
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(buffer.subarray(0, size_bytes));
    } catch {
      return { why: NOT_TEXT, exit_code: EX_CONFIG };
    }
  } catch (err) {
    return { why: errorText(err), exit_code: EX_OSFILE };
  } finally {
    closeSync(fd);
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
