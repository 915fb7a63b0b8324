// One control request for role/list/status, and the exit-status rules of spec 2.5:
// a global error exits EX_SOFTWARE, otherwise the first per-resource error number.
import type { Config } from "../config/index.ts";
import { EX_SOFTWARE, ExitError } from "../core/sysexits.ts";
import { defineCommand } from "citty";
import type { ControlReply, ControlRequest, ResourceStatus } from "../wire/control.ts";
import { controlRequest } from "./client.ts";
import { checkOptions, commonArgs, ExitStatus, loadCtlConfig, resourceNames, warn } from "./common.ts";
import { out } from "./output.ts";

/** `counts`: which per-resource errors set the exit status (all but for metrics). */
export async function requestAndReport(config: Config, request: ControlRequest, print: (reply: ControlReply) => void,
  counts: (error: number) => boolean = () => true): Promise<number> {
  const reply = await controlRequest(config.control, request);
  if (reply.error) throw new ExitError(`hastd refused the request: ${reply.message ?? `error ${reply.error}`}`, EX_SOFTWARE);
  print(reply);
  const exit = new ExitStatus();
  for (const r of reply.resources) {
    if (!r.error) continue;
    warn(`${r.name}: ${r.message ?? `error ${r.error}`}`);
    if (counts(r.error)) exit.set(r.error);
  }
  return exit.code;
}

/** list, status and metrics differ only in how they print the same STATUS reply, and metrics in
 * which errors count (`counts`, as for requestAndReport). A name given twice is asked once. */
export function statusCommand(name: string, description: string, format: (resources: ResourceStatus[]) => string,
  counts?: (error: number) => boolean) {
  return defineCommand({
    meta: { name, description },
    args: commonArgs,
    async run({ args: a }) {
      checkOptions(a, commonArgs);
      const config = loadCtlConfig(a.c);
      const resources = a._.length ? resourceNames(a._) : ["all"];
      return await requestAndReport(config, { cmd: "status", resources }, (reply) => {
        out(a.json ? `${JSON.stringify(reply.resources, null, 2)}\n` : format(reply.resources));
      }, counts);
    },
  });
}
