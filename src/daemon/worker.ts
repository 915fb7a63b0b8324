// Entry point of a worker process (`hastd --worker`, started by the main process with the title
// "hastd: <name> (<role>)"). It waits for its init message, runs one resource in one role, and
// exits when told (SIGTERM), when the main process goes away, or on a fatal error.
import { onAssertionFailure } from "../core/assert.ts";
import { EX_OK, EX_SOFTWARE, ExitError } from "../core/sysexits.ts";
import type { ResourceConfig } from "../config/index.ts";
import type { FromWorker, HookEvent, LogSetup, ToWorker } from "./ipc.ts";
import { fileSink, Logger, stderrSink, syslogSink } from "./log.ts";
import { PrimaryWorker } from "./primary.ts";
import { SecondaryWorker } from "./secondary.ts";

const INIT_TIMEOUT_MS = 10_000;

/** How long an ending worker waits for its last messages to leave (the main process may be gone). */
const IPC_DRAIN_MS = 2_000;
/** Settles once the last message sent has left: one sent just before exit is otherwise lost (the
 * copy state a secondary reports as its link ends). */
let last_sent: Promise<void> = Promise.resolve();

function send(message: FromWorker): void {
  if (!process.send) return;
  last_sent = new Promise<void>((resolve) => process.send!(message, undefined, undefined, () => resolve()));
}

function loggerFor(setup: LogSetup, context: string): Logger {
  const sink = setup.sink.kind === "stderr" ? stderrSink
    : setup.sink.kind === "file" ? fileSink(setup.sink.path) : syslogSink("hastd");
  return new Logger(sink, setup.verbosity, context);
}

export async function runWorker(): Promise<number> {
  const code = await serve();
  await Promise.race([last_sent, Bun.sleep(IPC_DRAIN_MS)]);
  return code;
}

/** Why the worker must stop (SIGTERM, SIGINT, the main process gone), from the process's start:
 * Bun reports a lost IPC channel once, and a worker that missed it while starting would serve on
 * with no main process (a primary nobody can demote). `onStop` is called once the worker serves. */
const stop_request = {
  why: null as string | null,
  onStop: null as ((why: string) => void) | null,
  ask(why: string): void {
    if (this.why !== null) return;
    this.why = why;
    this.onStop?.(why);
  },
};

async function serve(): Promise<number> {
  process.on("SIGTERM", () => stop_request.ask("Termination signal received."));
  process.on("SIGINT", () => stop_request.ask("Interrupt received."));
  process.on("disconnect", () => stop_request.ask("Main process went away."));
  if (!process.connected) stop_request.ask("Main process went away.");
  let worker: PrimaryWorker | SecondaryWorker | null = null;
  let reload_pending: ResourceConfig | null = null;
  // One listener from the start: the main process may send a status query right behind init
  // (in the same read), and a message that arrives while no listener is attached is lost.
  // Live fields appear once the worker serves.
  const init = await new Promise<Extract<ToWorker, { type: "init" }> | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), INIT_TIMEOUT_MS);
    stop_request.onStop = () => resolve(null);
    process.on("message", (m: ToWorker) => {
      if (m.type === "init") {
        clearTimeout(timer);
        resolve(m);
      } else if (m.type === "status") send({ type: "status", id: m.id, status: worker?.status() ?? {} });
      else if (m.type === "verify") {
        const refused = worker instanceof PrimaryWorker ? worker.verify(m.action) : "verification runs on the primary";
        send({ type: "verify", id: m.id, refused });
      }
      else if (m.type === "reload") {
        // Before the worker serves, the latest one is kept and applied once it does.
        if (worker instanceof PrimaryWorker) worker.reload(m.resource);
        else reload_pending = m.resource;
      }
    });
  });
  stop_request.onStop = null;
  if (!init) {
    process.stderr.write(`hastd worker: no init message from the main process${stop_request.why ? ` (${stop_request.why})` : ""}\n`);
    return EX_SOFTWARE;
  }
  const log = loggerFor(init.log, `[${init.resource.name}] (${init.role})`);
  // A bug found (an assertion) or met (an exception nothing caught): the worker stops at once,
  // without waiting for the last IPC messages to leave (runWorker): that wait would let the event
  // loop run I/O completions on a state known to be broken. A message lost here errs on the safe
  // side in the main process (no absorb, no completed copy, a missed hook event), which restarts a
  // primary worker that served, as after a kill.
  const internalError = (err: unknown, what = "") => {
    const message = err instanceof Error ? err.message : String(err);
    log.error(`${what}${message}: this is a bug in hastd; the worker stops rather than go on.\n${err instanceof Error ? err.stack ?? "" : ""}`);
    process.exit(EX_SOFTWARE);
  };
  onAssertionFailure((err) => internalError(err));
  process.on("uncaughtException", (err) => internalError(err, "uncaught exception: "));
  process.on("unhandledRejection", (err) => internalError(err, "unhandled rejection: "));
  const emit = (event: HookEvent) => send({ type: "event", event });
  try {
    if (init.role === "primary") worker = await PrimaryWorker.start(init.resource, init.node, {
      force: init.force === true, main_flush_error: init.start_flush_error ?? null, restart: init.restart === true,
    }, log, emit);
    else if (init.peer) {
      worker = await SecondaryWorker.start(init.resource, init.peer, log, { emit, report: (complete) => send({ type: "copy", complete }) });
    }
    else throw new ExitError("secondary worker started without a handshake", EX_SOFTWARE);
  } catch (err) {
    log.error((err as Error).message);
    return err instanceof ExitError ? err.exit_code : EX_SOFTWARE;
  }
  const running: PrimaryWorker | SecondaryWorker = worker;
  if (running instanceof PrimaryWorker && reload_pending) running.reload(reload_pending);
  send({ type: "ready" });
  return await new Promise<number>((done) => {
    if (running instanceof SecondaryWorker) void running.done.then(done);
    const stop = (why: string) => {
      log.debug(why);
      running.stop().then(() => done(EX_OK), (err: Error) => {
        log.error(`Shutdown failed: ${err.message}`);
        done(EX_SOFTWARE);
      });
    };
    // Asked while it started: it stops as soon as it serves.
    if (stop_request.why !== null) stop(stop_request.why);
    else stop_request.onStop = stop;
  });
}
