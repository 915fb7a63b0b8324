#!/usr/bin/env bun
// hastd(8): hastd [-dFh] [-c config] [-P pidfile]
import { closeSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { spawn } from "node:child_process";
import { loadConfig, type Config } from "../config/index.ts";
import { ConfigError } from "../config/index.ts";
import { EX_OK, EX_OSERR, EX_SOFTWARE, EX_USAGE, ExitError } from "../core/sysexits.ts";
import { Hastd } from "../daemon/main.ts";
import { fileSink, Logger, stderrSink, syslogSink } from "../daemon/log.ts";
import type { LogSetup } from "../daemon/ipc.ts";
import { Pidfile } from "../daemon/pidfile.ts";
import { describeVersions, protocolVersions, type ProtocolVersions } from "../daemon/protocol-versions.ts";
import { selfArgv } from "../io/self.ts";
import { runWorker } from "../daemon/worker.ts";
import { getopt, GetoptError } from "./getopt.ts";
import pkg from "../../package.json" with { type: "json" };

const USAGE = "usage: hastd [-dFh] [-c config] [-P pidfile]";
const DEFAULT_CONFIG = "/etc/hast.conf";
/** Internal: the detached child of a daemonizing hastd reports its startup result on this fd. */
const READY_FD = 3;
const DAEMON_CHILD_FLAG = "--daemon-child";

interface Flags {
  config_path: string;
  verbosity: number;
  foreground: boolean;
  pidfile: string | null;
  daemon_child: boolean;
}

function parseFlags(argv: string[]): Flags {
  const daemon_child = argv[0] === DAEMON_CHILD_FLAG;
  const { options, operands } = getopt(daemon_child ? argv.slice(1) : argv, "c:dFhP:");
  const flags: Flags = { config_path: DEFAULT_CONFIG, verbosity: 0, foreground: false, pidfile: null, daemon_child };
  for (const o of options) {
    if (o.flag === "c") flags.config_path = o.value!;
    else if (o.flag === "d") flags.verbosity++;
    else if (o.flag === "F") flags.foreground = true;
    else if (o.flag === "P") flags.pidfile = o.value!;
    else if (o.flag === "h") throw new GetoptError("");
  }
  if (operands.length) throw new GetoptError(`unexpected argument ${operands[0]}`);
  flags.config_path = resolve(flags.config_path);
  return flags;
}

/** Daemonize (spec 3.2 step 7): a detached child in its own session does the real start-up and
 * tells the parent through a pipe whether it succeeded, so start-up errors still reach the terminal
 * with the right exit code. */
async function daemonize(argv: string[]): Promise<number> {
  const child = spawn(selfArgv()[0]!, [...selfArgv().slice(1), DAEMON_CHILD_FLAG, ...argv], {
    detached: true, stdio: ["ignore", "ignore", "ignore", "pipe"],
  });
  const pipe = child.stdio[READY_FD] as NodeJS.ReadableStream;
  let text = "";
  for await (const chunk of pipe) text += chunk.toString();
  child.unref();
  const line = text.trim();
  if (line === "ok") return EX_OK;
  const m = /^(\d+) (.*)$/s.exec(line);
  if (m) {
    process.stderr.write(`hastd: ${m[2]}\n`);
    return Number(m[1]);
  }
  process.stderr.write("hastd: daemon exited during start-up without a report (see syslog)\n");
  return EX_OSERR;
}

function reportStartup(flags: Flags, code: number, message: string): void {
  if (!flags.daemon_child) return;
  try {
    writeSync(READY_FD, code === EX_OK ? "ok\n" : `${code} ${message}\n`);
    closeSync(READY_FD);
  } catch {
    // parent gone; nothing to tell
  }
}

function logSetupFor(flags: Flags, config: Config): LogSetup {
  if (flags.foreground) return { verbosity: flags.verbosity, sink: { kind: "stderr" } };
  if (config.logfile) return { verbosity: flags.verbosity, sink: { kind: "file", path: config.logfile } };
  return { verbosity: flags.verbosity, sink: { kind: "syslog" } };
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === "--worker") return await runWorker();
  if (argv[0] === "--version" || argv[0] === "-V") {
    console.log(`hastd ${pkg.version}`);
    return EX_OK;
  }
  let flags: Flags;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    if (err instanceof GetoptError && err.message) process.stderr.write(`hastd: ${err.message}\n`);
    process.stderr.write(`${USAGE}\n`);
    return EX_USAGE;
  }
  const log = new Logger(stderrSink, flags.verbosity);
  let config: Config;
  try {
    config = loadConfig(flags.config_path);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`hastd: ${err.message}\n`);
    reportStartup(flags, err.exit_code, err.message);
    return err.exit_code;
  }
  if (!flags.foreground && !flags.daemon_child) return await daemonize(argv);

  const log_setup = logSetupFor(flags, config);
  if (log_setup.sink.kind === "file") log.setSink(fileSink(log_setup.sink.path));
  else if (log_setup.sink.kind === "syslog") log.setSink(syslogSink("hastd"));

  let pidfile: Pidfile | null = null;
  let hastd: Hastd;
  let versions: ProtocolVersions;
  try {
    const pidPath = flags.pidfile ?? (flags.foreground ? null : config.pidfile);
    versions = protocolVersions();
    if (pidPath) pidfile = Pidfile.acquire(pidPath);
    hastd = await Hastd.start(config, {
      config_path: flags.config_path, log, log_setup, foreground: flags.foreground,
      ...(pidfile ? { pidfile: { file: pidfile, follows_config: flags.pidfile === null } } : {}),
    });
  } catch (err) {
    const code = err instanceof ExitError ? err.exit_code : EX_OSERR;
    log.error((err as Error).message);
    pidfile?.release();
    reportStartup(flags, code, (err as Error).message);
    return code;
  }
  pidfile?.writePid(process.pid);
  log.info(`Started successfully, running peer protocol versions ${describeVersions(versions)} (hast on Bun ${pkg.version}).`);
  reportStartup(flags, EX_OK, "");

  return await new Promise<number>((done) => {
    let reloading = Promise.resolve();
    const terminate = () => {
      void hastd.shutdown().then(() => {
        hastd.pidfile?.release();
        done(EX_OK);
      });
    };
    process.on("SIGTERM", terminate);
    process.on("SIGINT", terminate);
    process.on("SIGHUP", () => {
      // A reload that fails must not keep the next ones from running.
      reloading = reloading.then(() => hastd.reload()).catch((err: Error) => {
        log.error(`Reload failed: ${err.message}`);
      });
    });
  });
}

try {
  process.exit(await main(process.argv.slice(2)));
} catch (err) {
  process.stderr.write(`hastd: internal error: ${(err as Error).stack ?? err}\n`);
  process.exit(EX_SOFTWARE);
}
