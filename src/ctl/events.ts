// hastctl events [--json] [all|name ...]: each resource as it is now ("exists"), then every event
// hastd raises for it (the hooks' events, with their arguments) as it happens, one line each, until
// hastd ends the stream (exit 69) or hastctl is interrupted. For monitoring and failover tools
// that would rather follow a stream than install an `exec` hook (DRBD's `events2`).
import { defineCommand } from "citty";
import { EX_SOFTWARE, EX_UNAVAILABLE, ExitError } from "../core/sysexits.ts";
import { ControlError, parseStreamLine, type ResourceStatus } from "../wire/control.ts";
import { controlStream } from "./client.ts";
import { checkOptions, commonArgs, ExitStatus, loadCtlConfig, resourceNames, warn } from "./common.ts";
import { outLine } from "./output.ts";

function existsLine(r: ResourceStatus, time: string, json: boolean): string {
  if (json) return JSON.stringify({ event: "exists", resource: r.name, time, status: r });
  const status = r.split_brain ? "split-brain" : (r.status ?? "-");
  return `${time} ${r.name} exists ${r.role ?? "unknown"} ${status}${r.copy_incomplete ? " copy-incomplete" : ""}`;
}

export default defineCommand({
  meta: { name: "events", description: "follow what happens to resources, one line per event" },
  args: commonArgs,
  async run({ args: a }) {
    checkOptions(a, commonArgs);
    const config = loadCtlConfig(a.c);
    const resources = a._.length ? resourceNames(a._) : ["all"];
    const exit = new ExitStatus();
    // A reader that leaves (`hastctl events | head -1`) ends the follow quietly (output.ts).
    const print = outLine;
    await controlStream(config.control, { cmd: "events", resources }, (reply) => {
      if (reply.error) throw new ExitError(`hastd refused the request: ${reply.message ?? `error ${reply.error}`}`, EX_SOFTWARE);
      const time = new Date().toISOString();
      for (const r of reply.resources) {
        if (r.error) {
          warn(`${r.name}: ${r.message ?? `error ${r.error}`}`);
          exit.set(r.error);
        }
        if (r.error !== ControlError.NOENTRY) print(existsLine(r, time, a.json === true));
      }
      // An unknown name: hastd answered without a stream.
      return !reply.resources.some((r) => r.error === ControlError.NOENTRY);
    }, (line, where) => {
      const parsed = parseStreamLine(line);
      if (!parsed.ok) throw new ExitError(`malformed event from hastd at ${where}: ${parsed.error}`, EX_UNAVAILABLE);
      const e = parsed.value;
      if ("end" in e) throw new ExitError(`hastd at ${where} ended the event stream: ${e.end}`, EX_UNAVAILABLE);
      print(a.json ? JSON.stringify(e) : [e.time, e.resource, e.event, ...e.args].join(" "));
      return true;
    });
    return exit.code;
  },
});
