#!/usr/bin/env bun
// Deterministic simulator CLI (docs/testing.md):
//   bun test/sim/main.ts --seeds N [--seed S] [--steps K] [--plant BUG] [--linux-flush] [--changes-listed-max M] [--verify] [--resync-digest] [--sync-rate] [--verify-rate] [--failback] [--map-faults] [--primary-map-faults] [--worker-kills] [--trace]
// runs seeds S..S+N-1 (default S=1, N=1); a failing seed prints its replay command and trace tail.
import { PLANTS, type Plant } from "./context.ts";
import { DEFAULT_STEPS, runSimulation } from "./simulation.ts";

interface Args {
  seed: number;
  seeds: number;
  steps: number;
  plant: Plant | null;
  linux_flush: boolean;
  changes_listed_max: number | undefined;
  verify: boolean;
  resync_digest: boolean;
  sync_rate: boolean;
  verify_rate: boolean;
  failback: boolean;
  map_faults: boolean;
  primary_map_faults: boolean;
  worker_kills: boolean;
  trace: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { seed: 1, seeds: 1, steps: DEFAULT_STEPS, plant: null, trace: false, linux_flush: false, changes_listed_max: undefined, verify: false, resync_digest: false, sync_rate: false, verify_rate: false, failback: false, map_faults: false, primary_map_faults: false, worker_kills: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) usage(`${flag} needs a value`);
      return v!;
    };
    const integer = (min: number) => {
      const v = value();
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < min) usage(`${flag} ${v}: expected an integer >= ${min}`);
      return n;
    };
    if (flag === "--seed") args.seed = integer(0);
    else if (flag === "--seeds") args.seeds = integer(1);
    else if (flag === "--steps") args.steps = integer(1);
    else if (flag === "--trace") args.trace = true;
    else if (flag === "--linux-flush") args.linux_flush = true;
    else if (flag === "--verify") args.verify = true;
    else if (flag === "--resync-digest") args.resync_digest = true;
    else if (flag === "--sync-rate") args.sync_rate = true;
    else if (flag === "--verify-rate") args.verify_rate = true;
    else if (flag === "--failback") args.failback = true;
    else if (flag === "--map-faults") args.map_faults = true;
    else if (flag === "--primary-map-faults") args.primary_map_faults = true;
    else if (flag === "--worker-kills") args.worker_kills = true;
    else if (flag === "--changes-listed-max") args.changes_listed_max = integer(1);
    else if (flag === "--plant") {
      const v = value();
      if (!(PLANTS as readonly string[]).includes(v)) usage(`--plant ${v}: expected one of ${PLANTS.join(", ")}`);
      args.plant = v as Plant;
    } else usage(`unknown argument ${flag}`);
  }
  return args;
}

function usage(problem: string): never {
  console.error(`sim: ${problem}\nusage: bun test/sim/main.ts --seeds N [--seed S] [--steps K] [--plant ${PLANTS.join("|")}] [--linux-flush] [--changes-listed-max M] [--verify] [--resync-digest] [--sync-rate] [--verify-rate] [--failback] [--map-faults] [--primary-map-faults] [--worker-kills] [--trace]`);
  process.exit(64);
}

const args = parseArgs(process.argv.slice(2));
const started_ms = performance.now();
let failed = 0;
const last = args.seed + args.seeds - 1;
const flags = `${args.plant ? ` --plant ${args.plant}` : ""}${args.linux_flush ? " --linux-flush" : ""}${args.verify ? " --verify" : ""}${args.resync_digest ? " --resync-digest" : ""}${args.sync_rate ? " --sync-rate" : ""}${args.verify_rate ? " --verify-rate" : ""}${args.failback ? " --failback" : ""}${args.map_faults ? " --map-faults" : ""}${args.primary_map_faults ? " --primary-map-faults" : ""}${args.worker_kills ? " --worker-kills" : ""}` +
  `${args.changes_listed_max !== undefined ? ` --changes-listed-max ${args.changes_listed_max}` : ""}`;
console.log(`sim: seeds ${args.seed}..${last}, ${args.steps} steps each${flags}`);
for (let seed = args.seed; seed <= last; seed++) {
  const result = runSimulation({ seed, steps: args.steps, plant: args.plant, linux_flush: args.linux_flush, changes_listed_max: args.changes_listed_max, verify: args.verify, resync_digest: args.resync_digest, sync_rate: args.sync_rate, verify_rate: args.verify_rate, failback: args.failback, map_faults: args.map_faults, primary_map_faults: args.primary_map_faults, worker_kills: args.worker_kills });
  if (args.trace || !result.ok) {
    console.log(result.trace_tail.join("\n"));
  }
  if (result.ok) continue;
  failed++;
  console.log(`seed ${seed} FAILED at step ${result.failed_step}: ${result.error}`);
  console.log(`replay: bun test/sim/main.ts --seed ${seed} --steps ${args.steps}${flags}`);
  if (failed >= 5) break;
}
const seconds = ((performance.now() - started_ms) / 1000).toFixed(1);
console.log(failed === 0 ? `sim: ${args.seeds} seeds passed in ${seconds} s` : `sim: ${failed} failing seed(s) (stopped after 5) in ${seconds} s`);
process.exit(failed === 0 ? 0 : 1);
