// Fuzz worker for test/fuzz/config.test.ts: runs in a Bun Worker so the test can stop it and
// fail if one input hangs a parser. Every input must give a Config or a ConfigError.
import { ConfigError, parseConfigText, type NodeIdentity } from "../../src/config/index.ts";
import { prng } from "./prng.ts";

export interface FuzzRequest { seed: number; count: number; conf_sample: string; toml_sample: string }
export type FuzzReport =
  | { type: "progress"; done: number }
  | { type: "failure"; index: number; file: string; input: string; error: string }
  | { type: "done"; inputs: number; parses: number; configs: number; config_errors: number };

const PROGRESS_EVERY = 1000;
const IDENTITY: NodeIdentity = { hostname: "hasta.example.com", machine_id: "ab12", hostid: null, override: null };
const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 \t\n\n{}[]\"'=#.,:/-_\\%;@";
const VOCAB = [
  "resource", "on", "local", "remote", "source", "name", "listen", "control", "pidfile", "timeout",
  "replication", "checksum", "compression", "exec", "metaflush", "nbd", "device", "secret", "secret_file",
  "verify_rate", "sync_rate", "resync_digest", "100M", "1k", "10X",
  "logfile", "none", "off", "on", "lzf", "zstd", "hole", "fullsync", "async", "crc32", "sha256", "{", "}",
  "hasta", "hastb", "r0", "0", "20", "99999999999999999999", "[::1]", "tcp6://[::]:1", "uds://", "/dev/sdb",
  "=", '"x"', '""', "[", "]", "[[", "]]", "[resource.r0]", "[on.hasta]", "[resource.r0.on.hasta]", "true",
  "false", "[1, 2]", "{ a = 1 }", '"""', "'''", "1979-05-27", "inf", "nan", "-1", "0x10", "#", "\n", ".",
];

type Rand = () => number;
const pick = <T>(rand: Rand, items: readonly T[]): T => items[Math.floor(rand() * items.length)] as T;
const int = (rand: Rand, n: number): number => Math.floor(rand() * n);

function randomChar(rand: Rand): string {
  const r = rand();
  if (r < 0.8) return pick(rand, [...ALPHABET]);
  if (r < 0.95) return String.fromCharCode(int(rand, 256));
  return String.fromCodePoint(int(rand, 0x10ffff - 0xe000) + 0xe000);
}

function mutate(rand: Rand, text: string): string {
  const pos = int(rand, text.length + 1);
  switch (int(rand, 7)) {
    case 0: return text.slice(0, pos) + randomChar(rand) + text.slice(pos + 1); // flip
    case 1: return text.slice(0, pos) + randomChar(rand) + text.slice(pos); // insert a byte
    case 2: { // delete a token
      const tokens = text.split(/(\s+)/);
      tokens.splice(int(rand, tokens.length), 1);
      return tokens.join("");
    }
    case 3: { // insert a token
      const tokens = text.split(/(\s+)/);
      tokens.splice(int(rand, tokens.length + 1), 0, ` ${pick(rand, VOCAB)} `);
      return tokens.join("");
    }
    case 4: { // duplicate or drop a line
      const lines = text.split("\n");
      const at = int(rand, lines.length);
      if (rand() < 0.5) lines.splice(at, 1);
      else lines.splice(at, 0, lines[at] ?? "");
      return lines.join("\n");
    }
    case 5: return text.slice(0, pos); // truncate
    default: return text.slice(0, pos) + text.slice(pos + 1 + int(rand, 8)); // delete a few bytes
  }
}

function randomText(rand: Rand): string {
  let text = "";
  const length = int(rand, 200);
  while (text.length < length) text += rand() < 0.3 ? ` ${pick(rand, VOCAB)} ` : randomChar(rand);
  return text;
}

function run({ seed, count, conf_sample, toml_sample }: FuzzRequest): void {
  const rand = prng(seed);
  const totals = { inputs: 0, parses: 0, configs: 0, config_errors: 0 };
  for (let index = 0; index < count; index++) {
    const r = rand();
    const cases: [string, string][] = [];
    if (r < 0.1) {
      const text = randomText(rand);
      cases.push([text, "fuzz.conf"], [text, "fuzz.toml"]);
    } else {
      const toml = r < 0.55;
      let text = toml ? toml_sample : conf_sample;
      for (let n = 1 + int(rand, 4); n > 0; n--) text = mutate(rand, text);
      cases.push([text, toml ? "fuzz.toml" : "fuzz.conf"]);
    }
    for (const [input, file] of cases) {
      totals.parses++;
      try {
        parseConfigText(input, file, IDENTITY);
        totals.configs++;
      } catch (err) {
        if (!(err instanceof ConfigError)) {
          const error = err instanceof Error ? (err.stack ?? err.message) : String(err);
          postMessage({ type: "failure", index, file, input, error } satisfies FuzzReport);
          return;
        }
        totals.config_errors++;
      }
    }
    totals.inputs++;
    if ((index + 1) % PROGRESS_EVERY === 0) postMessage({ type: "progress", done: index + 1 } satisfies FuzzReport);
  }
  postMessage({ type: "done", ...totals } satisfies FuzzReport);
}

declare const self: Worker;
self.onmessage = (event: MessageEvent<FuzzRequest>) => run(event.data);
