// Address syntax of spec 1.6: Unix-domain (uds://, unix://, bare /path) first, TCP as the
// catch-all (tcp4://, tcp6://, tcp://, or no prefix). Pure: nothing is resolved here.
import { isIPv4, isIPv6 } from "node:net";

export type Address =
  | { kind: "uds"; path: string }
  | { kind: "tcp"; family: 4 | 6 | 0; host: string; port: number };

/** sockaddr_un.sun_path holds 108 bytes on Linux, 104 on the BSDs, including the NUL. */
export const UDS_PATH_MAX_BYTES = process.platform === "linux" ? 107 : 103;
const HOSTNAME_MAX_BYTES = 253;
const HOSTNAME_RE = /^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_.])?$/;

export class AddressError extends Error {
  readonly text: string;
  readonly reason: string;
  constructor(text: string, reason: string) {
    super(`invalid address '${text}': ${reason}`);
    this.name = "AddressError";
    this.text = text;
    this.reason = reason;
  }
}

/** Parse an address; `default_port` applies when a TCP address has none (0 = ephemeral). */
export function parseAddress(text: string, default_port: number): Address {
  if (!Number.isInteger(default_port) || default_port < 0 || default_port > 65535) {
    throw new Error(`parseAddress: default_port ${default_port} is not in 0-65535`);
  }
  const lower = text.toLowerCase();
  for (const prefix of ["uds://", "unix://"]) {
    if (lower.startsWith(prefix)) return udsAddress(text, text.slice(prefix.length));
  }
  if (text.startsWith("/") && !text.includes("://")) return udsAddress(text, text);
  return tcpAddress(text, lower, default_port);
}

export function formatAddress(a: Address): string {
  if (a.kind === "uds") return `uds://${a.path}`;
  const scheme = a.family === 4 ? "tcp4" : a.family === 6 ? "tcp6" : "tcp";
  const host = a.host.includes(":") ? `[${a.host}]` : a.host;
  return `${scheme}://${host}:${a.port}`;
}

function udsAddress(text: string, path: string): Address {
  if (path === "") throw new AddressError(text, "the unix socket path is empty");
  if (!path.startsWith("/")) throw new AddressError(text, "the unix socket path must be absolute");
  if (path.includes("\0")) throw new AddressError(text, "the unix socket path contains a NUL byte");
  const size_bytes = Buffer.byteLength(path);
  if (size_bytes > UDS_PATH_MAX_BYTES) {
    throw new AddressError(text, `the unix socket path is ${size_bytes} bytes, the limit is ${UDS_PATH_MAX_BYTES}`);
  }
  return { kind: "uds", path };
}

function tcpAddress(text: string, lower: string, default_port: number): Address {
  let family: 4 | 6 | 0 = 0;
  let rest = text;
  if (lower.startsWith("tcp4://")) [family, rest] = [4, text.slice(7)];
  else if (lower.startsWith("tcp6://")) [family, rest] = [6, text.slice(7)];
  else if (lower.startsWith("tcp://")) rest = text.slice(6);
  else if (text.includes("://")) {
    throw new AddressError(text, `unknown scheme '${text.slice(0, text.indexOf("://") + 3)}' (use tcp://, tcp4://, tcp6://, uds:// or unix://)`);
  }
  if (rest === "") throw new AddressError(text, "the host is missing");

  const { host, port } = splitHostPort(text, rest, default_port);
  const literal = isIPv4(host) ? 4 : isIPv6(host) ? 6 : 0;
  if (literal === 0) checkHostname(text, host);
  if (family === 4 && literal === 6) throw new AddressError(text, "tcp4:// needs an IPv4 address or a host name");
  if (family === 6 && literal === 4) throw new AddressError(text, "tcp6:// needs an IPv6 address or a host name");
  return { kind: "tcp", family: family !== 0 ? family : literal, host, port };
}

// Two or more ':' mean IPv6: unbracketed, the whole text is the host (default port);
// bracketed, the text after the last ':' must be the port, so "[::1]" is rejected.
function splitHostPort(text: string, rest: string, default_port: number): { host: string; port: number } {
  const colons = rest.split(":").length - 1;
  if (colons >= 2) {
    if (!rest.startsWith("[")) return { host: rest, port: default_port };
    const at = rest.lastIndexOf(":");
    const port = parsePort(text, rest.slice(at + 1));
    const bracketed = rest.slice(0, at);
    if (!bracketed.endsWith("]") || bracketed.length < 3) {
      throw new AddressError(text, "a bracketed IPv6 address must look like [addr]:port");
    }
    return { host: bracketed.slice(1, -1), port };
  }
  if (rest.startsWith("[")) throw new AddressError(text, "brackets are only for IPv6 addresses");
  if (colons === 1) {
    const at = rest.indexOf(":");
    return { host: rest.slice(0, at), port: parsePort(text, rest.slice(at + 1)) };
  }
  return { host: rest, port: default_port };
}

function parsePort(text: string, port_text: string): number {
  const port = /^[0-9]{1,5}$/.test(port_text) ? Number(port_text) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new AddressError(text, `port '${port_text}' is not a number from 1 to 65535`);
  }
  return port;
}

function checkHostname(text: string, host: string): void {
  if (host === "") throw new AddressError(text, "the host is missing");
  if (host.includes(":")) throw new AddressError(text, `'${host}' is not a valid IPv6 address`);
  if (!HOSTNAME_RE.test(host) || Buffer.byteLength(host) > HOSTNAME_MAX_BYTES) {
    throw new AddressError(text, `'${host}' is neither an IP address nor a valid host name`);
  }
}
