// hastctl -d: what hastctl does, on standard error. -d shows the configuration it read and each
// control request and reply; -dd also every line of an event stream.
let level = 0;

/** Counts -d options (getopt style: -d -d, or -dd) before the first operand-only `--`. */
export function setDebugLevel(rawArgs: string[]): void {
  level = 0;
  for (const a of rawArgs) {
    if (a === "--") break;
    if (/^-d+$/.test(a)) level += a.length - 1;
  }
}

export function debug(at: 1 | 2, message: string): void {
  if (level >= at) process.stderr.write(`hastctl: debug: ${message}\n`);
}
