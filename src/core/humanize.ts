// Human sizes in the style of FreeBSD humanize_number(3) as hastctl prints them:
// binary autoscale, at most 4 characters, one decimal below 10, no space, then "B".
const UNITS = ["", "K", "M", "G", "T", "P", "E"];

export function humanizeBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes}B`;
  const text = value < 10 ? (Math.round(value * 10) / 10).toFixed(1) : String(Math.round(value));
  return `${text}${UNITS[unit]}B`;
}
