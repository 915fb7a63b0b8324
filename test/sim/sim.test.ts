// CI run of the deterministic simulator (docs/testing.md): a range of seeds must hold every
// invariant, a seed must replay to the same trace, and each planted bug must be caught.
import { expect, test } from "bun:test";
import { CHANGES_LISTED_MAX } from "../../src/core/primary-engine.ts";
import { PLANTS, type Plant } from "./context.ts";
import { DEFAULT_STEPS, runSimulation, type RunResult } from "./simulation.ts";

const FIRST_SEED = Number(process.env.SIM_FIRST_SEED ?? 1);
const SEEDS = 500;
/**
 * A planted bug must be caught within this many seeds. The secondary's map matters only when the
 * secondary loses power with writes in its cache, and an early fullsync answer only in the runs
 * that use fullsync: fewer runs reach those.
 */
const PLANT_SEEDS_MAX: Record<Plant, number> = {
  "ack-before-map": 40, "skip-resync-extent": 40, "merge-split-brain": 40, "ack-fullsync-early": 100, "flush-not-sent": 100,
};

/** `flags`: the run's options as main.ts takes them (e.g. " --verify"), for the replay command. */
function explain(r: RunResult, flags = ""): string {
  return `seed ${r.seed} failed at step ${r.failed_step}: ${r.error}\n` +
    `replay: bun test/sim/main.ts --seed ${r.seed} --steps ${r.steps}${flags}\n${r.trace_tail.slice(-25).join("\n")}`;
}

test(`seeds ${FIRST_SEED}..${FIRST_SEED + SEEDS - 1} hold every invariant`, () => {
  const started_ms = performance.now();
  const totals: Record<string, number> = {};
  for (let seed = FIRST_SEED; seed < FIRST_SEED + SEEDS; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null });
    if (!r.ok) throw new Error(explain(r));
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
  }
  console.log(`sim: seeds ${FIRST_SEED}..${FIRST_SEED + SEEDS - 1} passed in ${((performance.now() - started_ms) / 1000).toFixed(1)} s: ${JSON.stringify(totals)}`);
  // The runs must actually have gone through the faults they claim to cover.
  for (const k of ["crashes", "failovers", "split_brains", "swaps", "resets", "partitions", "map_batches", "own_flushes"]) expect(totals[k]).toBeGreaterThan(10);
  // Failovers to a secondary caught mid-resync, refused (the primary is brought back instead).
  expect(totals.promotions_refused).toBeGreaterThan(2);
}, 180_000);

/** Seeds outside the CI range that once failed (docs/testing.md, "Wider sweeps"). */
const REGRESSION_SEEDS = [608, 9044, 14513, 23117, 25511, 25629, 38157, 39927, 139401, 502584, 606578];
/** `--resync-digest` seeds that once failed (docs/testing.md). */
const RESYNC_DIGEST_REGRESSION_SEEDS = [761982];

/** The seed of 1..4000 that failed when a primary did not flush at start (a mark left in the page
 * cache by a killed process taken as on the disk): session 29. Its run has changed since, and no
 * seed of 1..10000 fails without the flush now; kept as a replay. */
const START_FLUSH_SEEDS = [979];

test(`regression seeds ${REGRESSION_SEEDS.join(", ")} and ${START_FLUSH_SEEDS.join(", ")} hold every invariant`, () => {
  for (const seed of REGRESSION_SEEDS) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, changes_listed_max: CHANGES_LISTED_MAX });
    if (!r.ok) throw new Error(explain(r));
  }
  for (const seed of START_FLUSH_SEEDS) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null });
    if (!r.ok) throw new Error(explain(r));
  }
}, 60_000);

/** `--linux-flush` seeds that once failed, each for a different reason (docs/testing.md). */
const LINUX_FLUSH_SEEDS = [324, 408, 677, 1429, 1660, 3518, 3649, 5412];

/** `--linux-flush` seeds whose runs drop cached sectors (picked again in session 27: the runs changed). */
const LINUX_FLUSH_DROP_SEEDS = [1, 4, 8];

test(`--linux-flush seeds ${[...LINUX_FLUSH_SEEDS, ...LINUX_FLUSH_DROP_SEEDS].join(", ")} hold every invariant, and drops happen`, () => {
  const runs = [...LINUX_FLUSH_SEEDS, ...LINUX_FLUSH_DROP_SEEDS].map((seed) =>
    runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, linux_flush: true, changes_listed_max: CHANGES_LISTED_MAX }));
  for (const r of runs) if (!r.ok) throw new Error(explain(r, ` --linux-flush --changes-listed-max ${CHANGES_LISTED_MAX}`));
  // The option does something: these runs drop cached sectors.
  expect(runs.filter((r) => r.stats.drops! > 0).length).toBeGreaterThanOrEqual(3);
}, 60_000);

const RESYNC_DIGEST_SEEDS = 200;

test(`--resync-digest seeds 1..${RESYNC_DIGEST_SEEDS} and ${RESYNC_DIGEST_REGRESSION_SEEDS.join(", ")} (synchronizations that send only the chunks whose digests differ) hold every invariant`, () => {
  let unchanged = 0;
  for (const seed of [...Array.from({ length: RESYNC_DIGEST_SEEDS }, (_, i) => i + 1), ...RESYNC_DIGEST_REGRESSION_SEEDS]) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, resync_digest: true });
    if (!r.ok) throw new Error(explain(r, " --resync-digest"));
    unchanged += r.stats.sync_unchanged_chunks!;
  }
  // Most chunks a synchronization covers are equal on both nodes (extents kept dirty, re-sent).
  expect(unchanged).toBeGreaterThan(RESYNC_DIGEST_SEEDS * 10);
}, 60_000);

const FAILBACK_SEEDS = 300;
/** `--failback` seeds outside that range that once failed, with `--linux-flush` or not (docs/testing.md). */
const FAILBACK_REGRESSION: [number, boolean][] = [
  [5720, false], [5832, false], [7516, false], [10774, false], [428, true], [450, true], [1441, true], [1573, true], [3073, true],
  [3753, true], [5345, true], [19352, true], [1665, false],
];

/**
 * `--failback` seeds that fail on an open problem (docs/testing.md, "Known open"), run apart below so
 * that they are seen. 151: the old primary loses power as it connects to be synchronized from its
 * secondary (before its stale list is written); the secondary's flush at its promotion then fails,
 * which marks its whole copy incomplete; at the next connection row 3 takes the old primary's copy
 * ("dropped") over the secondary's changes, flushed ones included. Neither copy is whole there.
 */
const FAILBACK_KNOWN_OPEN = new Map<number, string>([[151, "row 3 'dropped' after the old primary lost its sync-from-secondary state"]]);

test(`--failback seeds 1..${FAILBACK_SEEDS} and ${FAILBACK_REGRESSION.map(([s]) => s).join(", ")} (the old primary synchronized from its secondary while it serves) hold every invariant`, () => {
  let from_secondary = 0;
  const runs: [number, boolean][] = [...Array.from({ length: FAILBACK_SEEDS }, (_, i): [number, boolean] => [i + 1, false]), ...FAILBACK_REGRESSION]
    .filter(([seed, linux_flush]) => linux_flush || !FAILBACK_KNOWN_OPEN.has(seed));
  for (const [seed, linux_flush] of runs) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, failback: true, linux_flush });
    if (!r.ok) throw new Error(explain(r, ` --failback${linux_flush ? " --linux-flush" : ""}`));
    from_secondary += r.stats.syncs_from_secondary!;
  }
  // The scenario happens: failbacks whose first connection synchronized the primary from its peer.
  expect(from_secondary).toBeGreaterThan(FAILBACK_SEEDS / 10);
}, 60_000);

test("--failback seeds of a known open problem still fail, and only so (skipped from the sweep above)", () => {
  for (const [seed, why] of FAILBACK_KNOWN_OPEN) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, failback: true });
    console.log(`sim: --failback seed ${seed} is a known open problem (${why}): ${r.ok ? "passes now: take it off the list" : r.error}`);
    expect(r.ok).toBe(false);
    expect(r.error).toContain("acknowledged data lost");
  }
});

const SYNC_RATE_SEEDS = 200;

test(`--sync-rate seeds 1..${SYNC_RATE_SEEDS} (synchronizations paced to two chunks a tick) hold every invariant`, () => {
  for (let seed = 1; seed <= SYNC_RATE_SEEDS; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, sync_rate: true });
    if (!r.ok) throw new Error(explain(r, " --sync-rate"));
  }
}, 60_000);

test(`--verify --verify-rate seeds 1..${SYNC_RATE_SEEDS / 2} (verifications paced to a chunk a tick) hold every invariant`, () => {
  let verifications = 0;
  for (let seed = 1; seed <= SYNC_RATE_SEEDS / 2; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, verify: true, verify_rate: true });
    if (!r.ok) throw new Error(explain(r, " --verify --verify-rate"));
    verifications += r.stats.verifications!;
    expect({ seed, verify_differ_chunks: r.stats.verify_differ_chunks }).toEqual({ seed, verify_differ_chunks: 0 });
  }
  expect(verifications).toBeGreaterThan(SYNC_RATE_SEEDS / 4);
}, 60_000);

/** `--sync-rate` seeds that once left application flushes waiting on a paced pass: 3210 (what the
 * pass copied unpaced while extents were stale was charged to the allowance), 711 with
 * `--linux-flush` (flushes held until the pass's end, the pass paced after the copy back). */
const SYNC_RATE_REGRESSION: [number, boolean][] = [[3210, false], [711, true]];

test(`--sync-rate seeds ${SYNC_RATE_REGRESSION.map(([s]) => s).join(", ")} answer every flush in time`, () => {
  for (const [seed, linux_flush] of SYNC_RATE_REGRESSION) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, sync_rate: true, linux_flush });
    if (!r.ok) throw new Error(explain(r, ` --sync-rate${linux_flush ? " --linux-flush" : ""}`));
  }
}, 60_000);

const MAP_FAULT_SEEDS = 300;
/** `--map-faults` seeds of 1..8000 that fail without the whole map written after a failed one (a
 * mark whose map write failed counted as on disk, a synchronization write in its extent wrote no
 * map of its own, and the secondary's stable storage lacked both). Picked again when the coverage
 * check began to look at stable storage (397 of 1..8000 fail then, 12 of them in 1..300). */
const MAP_FAULT_REGRESSION = [310, 314, 348, 354];

test(`--map-faults seeds 1..${MAP_FAULT_SEEDS} and ${MAP_FAULT_REGRESSION.join(", ")} (the secondary's map writes fail) hold every invariant`, () => {
  let failures = 0;
  for (const seed of [...Array.from({ length: MAP_FAULT_SEEDS }, (_, i) => i + 1), ...MAP_FAULT_REGRESSION]) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, map_faults: true });
    if (!r.ok) throw new Error(explain(r, " --map-faults"));
    failures += r.stats.map_failures!;
  }
  expect(failures).toBeGreaterThan(MAP_FAULT_SEEDS / 10); // the option does something
}, 60_000);

/** `--map-faults --linux-flush` seeds that fail when a map write's failed fdatasync on the secondary
 * does not fail its next FLUSH (the write-back error dropped synchronization writes, whose marks
 * that FLUSH would release): 28 of 20000..20059 do (picked again in session 29). Not a sweep: that combination
 * also fails now and then for the double faults docs/testing.md lists. */
const MAP_FLUSH_FAULT_SEEDS = [20003, 20004, 20007, 20009, 20012, 20014];

test(`--map-faults --linux-flush seeds ${MAP_FLUSH_FAULT_SEEDS.join(", ")} (map writes fail in their flush too) hold every invariant`, () => {
  for (const seed of MAP_FLUSH_FAULT_SEEDS) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, map_faults: true, linux_flush: true });
    if (!r.ok) throw new Error(explain(r, " --map-faults --linux-flush"));
  }
}, 60_000);

const PRIMARY_MAP_FAULT_SEEDS = 300;

test(`--primary-map-faults seeds 1..${PRIMARY_MAP_FAULT_SEEDS} (the primary's map and metadata writes fail) hold every invariant`, () => {
  let failures = 0;
  for (let seed = 1; seed <= PRIMARY_MAP_FAULT_SEEDS; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, primary_map_faults: true });
    if (!r.ok) throw new Error(explain(r, " --primary-map-faults"));
    failures += r.stats.primary_control_failures!;
  }
  expect(failures).toBeGreaterThan(PRIMARY_MAP_FAULT_SEEDS * 5); // the option does something
}, 60_000);

const WORKER_KILL_SEEDS = 200;

test(`--worker-kills seeds 1..${WORKER_KILL_SEEDS} (workers killed while hastd's main process lives on) hold every invariant`, () => {
  let kills = 0;
  for (let seed = 1; seed <= WORKER_KILL_SEEDS; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, worker_kills: true });
    if (!r.ok) throw new Error(explain(r, " --worker-kills"));
    kills += r.stats.worker_kills!;
  }
  expect(kills).toBeGreaterThan(WORKER_KILL_SEEDS / 10); // the option does something
}, 60_000);

const VERIFY_SEEDS = 200;

test(`--verify seeds 1..${VERIFY_SEEDS} (online verifications during the faults) hold every invariant`, () => {
  let verifications = 0;
  for (let seed = 1; seed <= VERIFY_SEEDS; seed++) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null, verify: true });
    if (!r.ok) throw new Error(explain(r, " --verify"));
    verifications += r.stats.verifications!;
    // No change of this simulator's disks escapes the engine: a difference found is a bug.
    expect({ seed, verify_differ_chunks: r.stats.verify_differ_chunks }).toEqual({ seed, verify_differ_chunks: 0 });
  }
  expect(verifications).toBeGreaterThan(VERIFY_SEEDS / 2);
}, 60_000);

/** A primary restarted with stale extents (Metadata.stale): listed, and copied back (601, 617); more
 * than its metadata listed (a run with a small stale_listed_max), refused and replaced by its peer
 * (669, 2294), which is forced when its own copy is incomplete too (4058). Picked again when the
 * cache epoch moved to the main process and the primary began to flush at start, and when the
 * primary's map clears began to wait for a flush (the runs changed each time). */
const RESTART_SEEDS: [number, "stale_restarts" | "restarts_refused" | "forced"][] =
  [[1, "stale_restarts"], [214, "stale_restarts"], [20, "restarts_refused"], [393, "restarts_refused"], [1725, "forced"]];

test(`primaries restarted with stale extents (seeds ${RESTART_SEEDS.map(([s]) => s).join(", ")}) hold every invariant`, () => {
  for (const [seed, stat] of RESTART_SEEDS) {
    const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null });
    if (!r.ok) throw new Error(explain(r));
    expect({ seed, [stat]: r.stats[stat] }).toEqual({ seed, [stat]: 1 });
  }
}, 60_000);

test("a seed replays to the same trace", () => {
  for (const seed of [7, 123]) {
    const a = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null });
    const b = runSimulation({ seed, steps: DEFAULT_STEPS, plant: null });
    expect(b.trace_hash).toBe(a.trace_hash);
    expect(b.trace_tail).toEqual(a.trace_tail);
  }
  const c = runSimulation({ seed: 8, steps: DEFAULT_STEPS, plant: null });
  expect(c.trace_hash).not.toBe(runSimulation({ seed: 7, steps: DEFAULT_STEPS, plant: null }).trace_hash);
}, 60_000);

for (const plant of PLANTS) {
  test(`planted bug ${plant} is caught within ${PLANT_SEEDS_MAX[plant]} seeds, reproducibly`, () => {
    for (let seed = 1; seed <= PLANT_SEEDS_MAX[plant]; seed++) {
      const r = runSimulation({ seed, steps: DEFAULT_STEPS, plant });
      if (r.ok) continue;
      console.log(`sim: planted bug ${plant} caught by seed ${seed}: ${r.error}`);
      const again = runSimulation({ seed, steps: DEFAULT_STEPS, plant });
      // The message, not the stack under it: the test's own frames differ between the two calls.
      expect(headline(again.error)).toBe(headline(r.error));
      expect(again.trace_hash).toBe(r.trace_hash);
      return;
    }
    throw new Error(`planted bug ${plant} survived seeds 1..${PLANT_SEEDS_MAX[plant]}`);
  }, 60_000);
}

function headline(error: string | null): string | null {
  return error === null ? null : error.split("\n    at ")[0]!;
}
