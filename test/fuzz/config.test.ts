// Fuzz both config parsers with seeded mutations of the shipped samples and random text:
// each input must produce a Config or a ConfigError; any other exception or a hang fails.
// Reproduce a failure with FUZZ_SEED=<seed> (printed on failure).
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import type { FuzzReport, FuzzRequest } from "./config.worker.ts";

const INPUTS = 100_000;
const STALL_MS = 10_000; // no progress report for this long = a parser hangs
const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed_c0f1);
const ops = new URL("../../ops/", import.meta.url);

test(`config parsers survive ${INPUTS} mutated inputs (seed ${SEED})`, async () => {
  const request: FuzzRequest = {
    seed: SEED,
    count: INPUTS,
    conf_sample: readFileSync(new URL("hast.conf.sample", ops), "utf8"),
    toml_sample: readFileSync(new URL("hast.toml.sample", ops), "utf8"),
  };
  const worker = new Worker(new URL("./config.worker.ts", import.meta.url).href);
  let done = 0;
  try {
    const outcome = await new Promise<FuzzReport>((resolve, reject) => {
      const onStall = () => reject(new Error(`seed ${SEED}: no progress for ${STALL_MS} ms after input ${done}: a parser hangs`));
      let watchdog = setTimeout(onStall, STALL_MS);
      worker.onerror = (event) => {
        clearTimeout(watchdog);
        reject(new Error(`seed ${SEED}: worker error: ${event.message}`));
      };
      worker.onmessage = (event: MessageEvent<FuzzReport>) => {
        const report = event.data;
        clearTimeout(watchdog);
        if (report.type !== "progress") return resolve(report);
        done = report.done;
        watchdog = setTimeout(onStall, STALL_MS);
      };
      worker.postMessage(request);
    });
    if (outcome.type === "failure") {
      throw new Error(`seed ${SEED} input ${outcome.index} (${outcome.file}) threw a non-ConfigError:\n` +
        `${outcome.error}\ninput: ${JSON.stringify(outcome.input)}`);
    }
    expect(outcome.type).toBe("done");
    if (outcome.type !== "done") return;
    console.log(`config fuzz: ${outcome.inputs} inputs, ${outcome.parses} parses, ${outcome.configs} configs, ${outcome.config_errors} ConfigErrors`);
    expect(outcome.inputs).toBe(INPUTS);
    // Mutations must leave some inputs valid, or the resolver is never exercised.
    expect(outcome.configs).toBeGreaterThan(INPUTS / 20);
  } finally {
    worker.terminate();
  }
}, 60_000);
