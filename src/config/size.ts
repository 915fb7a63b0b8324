// Sizes with FreeBSD expand_number(3) suffixes: k, M, G, T, P, E (any case), binary multiples.

const SHIFT_BY_SUFFIX: Readonly<Record<string, bigint>> = { k: 10n, m: 20n, g: 30n, t: 40n, p: 50n, e: 60n };
const SIZE_RE = /^([0-9]+)([kmgtpe]?)$/i;

/** "64M" → 67108864. Throws an Error saying why for negatives, garbage or values above 2^53-1. */
export function parseSize(text: string): number {
  const match = SIZE_RE.exec(text);
  if (match === null) {
    throw new Error(`invalid size '${text}': expected digits with an optional k, M, G, T, P or E suffix`);
  }
  const digits = match[1] ?? "";
  const suffix = (match[2] ?? "").toLowerCase();
  if (digits.length > 20) throw new Error(`invalid size '${text}': too large`);
  const bytes = BigInt(digits) << (SHIFT_BY_SUFFIX[suffix] ?? 0n);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Error(`invalid size '${text}': larger than ${Number.MAX_SAFE_INTEGER} bytes`);
  }
  return Number(bytes);
}
