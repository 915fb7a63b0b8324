#!/usr/bin/env bun
// hastctl(8): control utility for hastd. Subcommand first, then options, then operands.
import { runCommand, type ArgsDef, type CommandDef } from "citty";
import { EX_SOFTWARE, EX_USAGE, ExitError } from "../core/sysexits.ts";
import create from "../ctl/create.ts";
import { setDebugLevel } from "../ctl/debug.ts";
import dump from "../ctl/dump.ts";
import events from "../ctl/events.ts";
import list from "../ctl/list.ts";
import metrics from "../ctl/metrics.ts";
import role from "../ctl/role.ts";
import status from "../ctl/status.ts";
import { outLine } from "../ctl/output.ts";
import verify from "../ctl/verify.ts";
import pkg from "../../package.json" with { type: "json" };

const USAGE = `usage: hastctl create [-d] [-c config] [-e extentsize] [-k keepdirty] [-m mediasize]
                      [--initial-sync full|none] [--json] name ...
       hastctl role [-d] [-c config] [--json] [--force] init | primary | secondary  all | name ...
       hastctl list [-d] [-c config] [--json] [all | name ...]
       hastctl status [-d] [-c config] [--json] [all | name ...]
       hastctl dump [-d] [-c config] [--json] [all | name ...]
       hastctl metrics [-d] [-c config] [--json] [all | name ...]
       hastctl verify [-d] [-c config] [--json] [--stop | --resume | --from offset] all | name ...
       hastctl events [-d] [-c config] [--json] [all | name ...]
       hastctl --version
Sizes accept the suffixes k, M, G, T (binary). The configuration defaults to /etc/hast.conf;
a path ending in .toml is read as TOML. HASTD_NODE=<name> selects this node's blocks.`;

const subCommands = { create, role, list, status, dump, metrics, verify, events };

async function run(argv: string[]): Promise<number> {
  const first = argv[0];
  if (first === "--version" || first === "-V") {
    outLine(`hastctl ${pkg.version}`);
    return 0;
  }
  if (first === "-h" || first === "--help" || first === "help" || (first && argv.slice(1).some((a) => a === "-h" || a === "--help"))) {
    outLine(USAGE);
    return 0;
  }
  if (!first || !(first in subCommands)) {
    if (first) process.stderr.write(`hastctl: unknown command ${first}\n`);
    process.stderr.write(`${USAGE}\n`);
    return EX_USAGE;
  }
  const sub = subCommands[first as keyof typeof subCommands] as CommandDef<ArgsDef>;
  setDebugLevel(argv.slice(1));
  const { result } = await runCommand(sub, { rawArgs: argv.slice(1) });
  return typeof result === "number" ? result : 0;
}

try {
  process.exit(await run(process.argv.slice(2)));
} catch (err) {
  if (err instanceof ExitError) {
    if (err.message) process.stderr.write(`hastctl: ${err.message}\n`);
    if (err.exit_code === EX_USAGE) process.stderr.write(`${USAGE}\n`);
    process.exit(err.exit_code);
  }
  process.stderr.write(`hastctl: internal error: ${(err as Error).stack ?? err}\n`);
  process.exit(EX_SOFTWARE);
}
