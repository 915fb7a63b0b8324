// Defaults, inheritance (spec 1.3, 1.4) and validation (spec 1.8) over the syntax-neutral Ast.
import { AddressError, formatAddress, parseAddress, type Address } from "./address.ts";
import { acceptableNames, nodeMatches, type NodeIdentity } from "./node.ts";
import { Checker, HAST_PORT, NAME_MAX_BYTES, NBD_PORT, type Ast, type ResourceScope, type Scope, type Setting, type Statement } from "./_statements.ts";
import type { ChecksumKind, CompressionKind, Config, ReplicationMode, ResourceConfig } from "./types.ts";

export const DEFAULTS = {
  control: "uds:///var/run/hastctl",
  pidfile: "/var/run/hastd.pid",
  listen: [`tcp4://0.0.0.0:${HAST_PORT}`, `tcp6://[::]:${HAST_PORT}`],
  replication: "memsync",
  checksum: "none",
  compression: "hole",
  timeout_s: 20,
  metaflush: true,
  device: true,
  resync_digest: false,
  nbd_dir: "/var/run/hast",
} as const;

/** Reads a secret_file (path as written): its contents and the full path; throws ConfigError itself. */
export type SecretReader = (path: string, line: number) => { value: string; path: string };

export function resolve(ast: Ast, file: string, identity: NodeIdentity, readSecret: SecretReader): Config {
  const check = new Checker(file);
  for (const s of allSettings(ast)) check.check(s);
  for (const r of ast.resources) {
    if (Buffer.byteLength(r.name) > NAME_MAX_BYTES) check.fail(r.line, "Resource name is too long.");
    check.checkName(r.line, "resource name", r.name);
  }

  const nodes = ast.nodes.filter((n) => nodeMatches(n.name, identity));
  const resources = resolveResources(ast, check, identity, readSecret);
  const logfile = last([ast.global], "logfile", nodes);
  return {
    file,
    node: resources[0]?.node ?? nodes[0]?.name ?? identity.override ?? identity.hostname,
    control: check.address(last([ast.global], "control", nodes) ?? fake("control", DEFAULTS.control)),
    pidfile: check.path(last([ast.global], "pidfile", nodes) ?? fake("pidfile", DEFAULTS.pidfile)),
    listen: resolveListen(ast.global, nodes, check),
    logfile: logfile === undefined ? null : check.path(logfile),
    resources: resources.map((r) => r.config),
  };
}

function resolveListen(global: Scope, nodes: Scope[], check: Checker): Address[] {
  // Cumulative in file order: global and matching-node listens are merged, not overridden.
  const listens = [global, ...nodes].flatMap((s) => s.settings.filter((x) => x.key === "listen"));
  listens.sort((a, b) => a.line - b.line);
  if (listens.length === 0) return DEFAULTS.listen.map((text) => parseAddress(text, HAST_PORT));
  return listens.map((s) => check.address(s));
}

function resolveResources(ast: Ast, check: Checker, identity: NodeIdentity, readSecret: SecretReader) {
  const seen = new Set<string>();
  const global_secret = secretOf(ast.global, check, readSecret);
  const resolved = ast.resources.map((r) => {
    if (seen.has(r.name)) check.fail(r.line, `Resource ${r.name} configured more than once.`);
    seen.add(r.name);
    return resolveResource(ast.global, r, check, identity, secretOf(r, check, readSecret) ?? global_secret);
  });
  checkNothingShared(resolved.map((r) => r.config), check);
  return resolved;
}

/** Two resources on one component, device or NBD endpoint would serve or overwrite each other's
 * data (FreeBSD finds out at run time, if at all). Every resource in the file is this node's. */
function checkNothingShared(resources: ResourceConfig[], check: Checker): void {
  const uses: [string, (r: ResourceConfig) => string][] = [
    ["the provider name", (r) => r.provname], ["the local component", (r) => r.localpath], ["the nbd address", (r) => formatAddress(r.nbd)],
  ];
  for (const [what, of] of uses) {
    const first = new Map<string, ResourceConfig>();
    for (const r of resources) {
      const other = first.get(of(r));
      if (other) check.fail(r.line, `Resources ${other.name} and ${r.name} both use ${what} ${of(r)}.`);
      first.set(of(r), r);
    }
  }
}

function resolveResource(
  global: Scope, r: ResourceScope, check: Checker, identity: NodeIdentity, secret: Secret | null,
): { node: string; config: ResourceConfig } {
  const mine = r.nodes.filter((n) => nodeMatches(n.name, identity));
  if (mine.length === 0) {
    const names = acceptableNames(identity).join(", ");
    check.fail(r.line, `No resource ${r.name} configuration for this node (acceptable node names: ${names}).`);
  }
  const remote = last(mine, "remote");
  if (remote === undefined) check.fail(r.line, `Remote address not configured for resource ${r.name}.`);
  const local = last([r], "local", mine);
  if (local === undefined) check.fail(r.line, `Path to local component not configured for resource ${r.name}.`);
  const source = last(mine, "source");
  const name = last([r], "name", mine);
  const nbd = last([r], "nbd", mine);
  const exec = last([r], "exec");
  const metaflush = last([global, r], "metaflush", mine);
  const device = last([global, r], "device", mine);
  const timeout = last([global, r], "timeout");
  const verify_rate = last([global, r], "verify_rate");
  const sync_rate = last([global, r], "sync_rate");
  const resync_digest = last([global, r], "resync_digest");
  const config: ResourceConfig = {
    name: r.name,
    provname: name === undefined ? r.name : check.provname(name),
    localpath: check.path(local),
    remote: remote.value === "none" ? null : check.address(remote),
    remote_text: String(remote.value),
    source: source === undefined ? null : check.address(source),
    replication: check.choice(last([global, r], "replication") ?? fake("replication", DEFAULTS.replication)) as ReplicationMode,
    checksum: check.choice(last([global, r], "checksum") ?? fake("checksum", DEFAULTS.checksum)) as ChecksumKind,
    compression: check.choice(last([global, r], "compression") ?? fake("compression", DEFAULTS.compression)) as CompressionKind,
    timeout_s: timeout === undefined ? DEFAULTS.timeout_s : check.seconds(timeout),
    // An empty exec at resource level is the same as none: the global one applies (spec 1.4).
    exec: exec !== undefined && exec.value !== "" ? check.path(exec) : check.path(last([global], "exec") ?? fake("exec", "")),
    metaflush: metaflush === undefined ? DEFAULTS.metaflush : check.onoff(metaflush),
    nbd: nbd === undefined ? defaultNbd(r, check) : check.address(nbd),
    device: device === undefined ? DEFAULTS.device : check.onoff(device),
    verify_rate: verify_rate === undefined ? null : check.rate(verify_rate),
    sync_rate: sync_rate === undefined ? null : check.rate(sync_rate),
    resync_digest: resync_digest === undefined ? DEFAULTS.resync_digest : check.onoff(resync_digest),
    secret: secret?.value ?? null,
    secret_source: secret?.source ?? null,
    line: r.line,
  };
  return { node: mine[0]?.name ?? "", config };
}

/** <nbd_dir>/<name>.nbd: a name FreeBSD takes (up to 254 bytes) may be too long for a socket path. */
function defaultNbd(r: ResourceScope, check: Checker): Address {
  const path = `${DEFAULTS.nbd_dir}/${r.name}.nbd`;
  try {
    return parseAddress(`uds://${path}`, NBD_PORT);
  } catch (err) {
    if (err instanceof AddressError) check.fail(r.line, `resource name ${r.name} is too long for its default NBD socket ${path} (${err.reason}): set nbd for it`);
    throw err;
  }
}

interface Secret { value: string; source: string }

function secretOf(scope: Scope, check: Checker, readSecret: SecretReader): Secret | null {
  const inline = last([scope], "secret");
  const from_file = last([scope], "secret_file");
  if (inline !== undefined && from_file !== undefined) {
    check.fail(Math.max(inline.line, from_file.line), "secret and secret_file are mutually exclusive");
  }
  const where = `${check.file}:${(inline ?? from_file)?.line}`;
  if (inline !== undefined) return { value: check.secret(inline), source: where };
  if (from_file === undefined) return null;
  const { value, path } = readSecret(check.path(from_file), from_file.line);
  return { value, source: `${path} (${where})` };
}

/**
 * The effective setting: the last one in `scopes` (lowest precedence first), overridden by the
 * last one in `overrides` (matching node blocks, file order) if any sets it.
 */
function last(scopes: readonly Scope[], key: Statement, overrides: readonly Scope[] = []): Setting | undefined {
  let found: Setting | undefined;
  for (const scope of [...scopes, ...overrides]) {
    for (const s of scope.settings) if (s.key === key) found = s;
  }
  return found;
}

/** A default presented as a setting so it goes through the same checks. */
function fake(key: Statement, value: string): Setting {
  return { key, value, line: 0 };
}

function* allSettings(ast: Ast): Generator<Setting> {
  const scopes = [ast.global, ...ast.nodes, ...ast.resources, ...ast.resources.flatMap((r) => r.nodes)];
  const settings = scopes.flatMap((s) => s.settings);
  settings.sort((a, b) => a.line - b.line);
  yield* settings;
}
