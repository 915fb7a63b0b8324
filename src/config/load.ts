// Entry points: pick the syntax by extension, read the file and any secret_file.
import { readFileSync } from "node:fs";
import { dirname, isAbsolute, resolve as resolvePath } from "node:path";
import { ConfigError, EX_OSFILE } from "./errors.ts";
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
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(path, null, `cannot read configuration: ${errorText(err)}`, EX_OSFILE);
  }
  return parseConfigText(text, path, localIdentity(opts.node));
}

// A relative secret_file is taken relative to the config file, not to the daemon's cwd.
function secretReader(file: string): SecretReader {
  return (path, line) => {
    const full = isAbsolute(path) ? path : resolvePath(dirname(file), path);
    let bytes: Buffer;
    try {
      bytes = readFileSync(full);
    } catch (err) {
      throw new ConfigError(file, line, `cannot read secret_file ${full}: ${errorText(err)}`, EX_OSFILE);
    }
    if (bytes.length > SECRET_MAX_BYTES) {
      throw new ConfigError(file, line, `secret_file ${full} is larger than ${SECRET_MAX_BYTES} bytes`);
    }
    const secret = bytes.toString("utf8").replace(/\r?\n$/, "");
    if (secret === "") throw new ConfigError(file, line, `secret_file ${full} is empty`);
    return { value: secret, path: full };
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
