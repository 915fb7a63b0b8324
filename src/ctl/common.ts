// What every hastctl subcommand shares: the common options, loading the configuration,
// resolving `all` and resource names, and turning failures into sysexits codes.
import type { ArgsDef } from "citty";
import { ConfigError, loadConfig, parseSize, type Config, type ResourceConfig } from "../config/index.ts";
import { EX_DATAERR, EX_NOINPUT, EX_TEMPFAIL, EX_USAGE, ExitError } from "../core/sysexits.ts";
import { LocalDisk } from "../io/disk.ts";
import { NativeError } from "../native.ts";
import { isResourceName } from "../wire/control.ts";
import { debug } from "./debug.ts";

export const DEFAULT_CONFIG = "/etc/hast.conf";

export const commonArgs = {
  c: { type: "string", description: "configuration file (default /etc/hast.conf; .toml selects TOML)", valueHint: "config" },
  d: { type: "boolean", description: "print debugging information (repeatable)" },
  json: { type: "boolean", description: "machine-readable output" },
} as const satisfies ArgsDef;

/** citty accepts any option; hastctl, like getopt(3), refuses the ones it does not know. */
export function checkOptions(args: Record<string, unknown>, def: ArgsDef): void {
  const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  for (const key of Object.keys(args)) {
    // citty adds a camelCase twin of every dashed option (initial-sync → initialSync).
    if (key === "_" || key in def || kebab(key) in def) continue;
    throw new ExitError(`illegal option -- ${key}`, EX_USAGE);
  }
}

/** A size option's value (k, M, G, ... suffixes), undefined when not given; a bad one ends
 * hastctl with EX_USAGE. */
export function sizeOption(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseSize(value);
  } catch (err) {
    throw new ExitError(`invalid ${what} ${JSON.stringify(value)}: ${(err as Error).message}`, EX_USAGE);
  }
}

export function loadCtlConfig(path: string | undefined): Config {
  if (path === "") throw new ExitError("option requires an argument -- c", EX_USAGE);
  try {
    const config = loadConfig(path ?? DEFAULT_CONFIG);
    debug(1, `configuration ${config.file}: this node is ${config.node}, resources ${config.resources.map((r) => r.name).join(", ") || "none"}`);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) throw new ExitError(err.message, err.exit_code);
    throw err;
  }
}

export type Selected = { name: string; resource: ResourceConfig | null };

/** Resource operands as hastd takes them (isResourceName), a name given twice once. */
export function resourceNames(names: string[]): string[] {
  for (const name of names) {
    if (!isResourceName(name)) throw new ExitError(`invalid resource name ${JSON.stringify(name.slice(0, 64))}: 1 to 255 characters`, EX_USAGE);
  }
  return [...new Set(names)];
}

/** `all` (as the first name) means every resource; unknown names come back with resource null. */
export function selectResources(config: Config, names: string[]): Selected[] {
  if (names.length === 0 || names[0] === "all") return config.resources.map((r) => ({ name: r.name, resource: r }));
  return names.map((name) => ({ name, resource: config.resources.find((r) => r.name === name) ?? null }));
}

/** Exit status rule for commands over several resources: the first non-zero code wins. */
export class ExitStatus {
  code = 0;
  set(code: number): void {
    if (this.code === 0) this.code = code;
  }
}

export function warn(message: string): void {
  process.stderr.write(`hastctl: ${message}\n`);
}

/**
 * The offline commands (create, dump) walk the named resources' components: an unknown name is
 * EX_DATAERR, a component that cannot be opened EX_NOINPUT (EX_TEMPFAIL when a worker holds its
 * lock); both are reported and skipped. Each disk is closed when the caller moves on.
 */
export function* openComponents(config: Config, names: string[], write: boolean, exit: ExitStatus):
  Generator<{ name: string; resource: ResourceConfig; disk: LocalDisk }> {
  for (const { name, resource } of selectResources(config, names)) {
    if (!resource) {
      warn(`unknown resource ${name}`);
      exit.set(EX_DATAERR);
      continue;
    }
    let disk: LocalDisk;
    try {
      disk = LocalDisk.open(resource.localpath, { write, lock: write });
    } catch (err) {
      const busy = err instanceof NativeError && (err.code === "EWOULDBLOCK" || err.code === "EAGAIN");
      warn(`${name}: ${busy ? `${resource.localpath} is in use (locked by hastd?)` : (err as Error).message}`);
      exit.set(busy ? EX_TEMPFAIL : EX_NOINPUT);
      continue;
    }
    try {
      yield { name, resource, disk };
    } finally {
      disk.close();
    }
  }
}
