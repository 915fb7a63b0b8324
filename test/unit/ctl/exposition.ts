// A strict reader of Prometheus's text exposition format (0.0.4) for the tests of `hastctl
// metrics`: every line is a HELP, a TYPE or a sample; a family's HELP and TYPE come once, before
// its samples, and its samples are not split by another family; label values are unescaped.
export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  samples: ParsedSample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseLabels(text: string, where: string): { labels: Record<string, string>; rest: string } {
  const labels: Record<string, string> = {};
  let i = 0;
  while (text[i] !== "}") {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`${where}: label without '='`);
    const name = text.slice(i, eq);
    if (!LABEL_NAME.test(name)) throw new Error(`${where}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let value = "";
    let j = eq + 2;
    for (;; j++) {
      const c = text[j];
      if (c === undefined) throw new Error(`${where}: unterminated label value`);
      if (c === '"') break;
      if (c === "\n") throw new Error(`${where}: raw newline in a label value`);
      if (c === "\\") {
        const e = text[++j];
        if (e === "\\") value += "\\";
        else if (e === '"') value += '"';
        else if (e === "n") value += "\n";
        else throw new Error(`${where}: bad escape \\${e}`);
        continue;
      }
      value += c;
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ",") i++;
    else if (text[i] !== "}") throw new Error(`${where}: expected ',' or '}' after a label`);
  }
  return { labels, rest: text.slice(i + 1) };
}

function parseValue(text: string, where: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$/.test(text)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`);
  return Number(text);
}

export function parseExposition(text: string): ParsedFamily[] {
  if (text !== "" && !text.endsWith("\n")) throw new Error("output does not end with a newline");
  const families: ParsedFamily[] = [];
  const seen = new Set<string>();
  let current: ParsedFamily | null = null;
  const lines = text === "" ? [] : text.slice(0, -1).split("\n");
  for (const [n, line] of lines.entries()) {
    const where = `line ${n + 1}`;
    const help = /^# HELP (\S+) (.+)$/.exec(line);
    if (help) {
      const name = help[1]!;
      if (!NAME.test(name) || seen.has(name)) throw new Error(`${where}: HELP for ${name} again or bad name`);
      seen.add(name);
      current = { name, help: help[2]!, type: "", samples: [] };
      families.push(current);
      continue;
    }
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      if (current === null || current.name !== type[1] || current.type !== "" || current.samples.length > 0) {
        throw new Error(`${where}: TYPE out of place`);
      }
      current.type = type[2]!;
      continue;
    }
    const brace = line.indexOf("{");
    if (brace < 0) throw new Error(`${where}: sample without labels or unknown line ${JSON.stringify(line)}`);
    const name = line.slice(0, brace);
    if (current === null || name !== current.name || current.type === "") throw new Error(`${where}: sample of ${name} outside its family`);
    const { labels, rest } = parseLabels(line.slice(brace + 1), where);
    if (!rest.startsWith(" ")) throw new Error(`${where}: no space before the value`);
    current.samples.push({ name, labels, value: parseValue(rest.slice(1), where) });
  }
  for (const f of families) {
    if (f.samples.length === 0) throw new Error(`family ${f.name} has no samples`);
    if (f.type === "counter" && !f.name.endsWith("_total")) throw new Error(`counter ${f.name} does not end in _total`);
  }
  return families;
}

/** The value of one sample, or undefined when the output has none with these labels. */
export function sampleValue(families: ParsedFamily[], name: string, labels: Record<string, string>): number | undefined {
  const f = families.find((x) => x.name === name);
  const s = f?.samples.find((x) => Object.keys(labels).length === Object.keys(x.labels).length &&
    Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  return s?.value;
}
