// One control request for role/list/status, and the exit-status rules of spec 2.5:
// a global error exits EX_SOFTWARE, otherwise the first per-resource error number.
import type { Config } from "../config/index.ts";
import { EX_SOFTWARE, ExitError } from "../core/sysexits.ts";
import { defineCommand } from "citty";
import type { ControlReply, ControlRequest, ResourceStatus } from "../wire/control.ts";
import { controlRequest } from "./client.ts";
import { checkOptions, commonArgs, ExitStatus, loadCtlConfig, warn } from "./common.ts";

export async function requestAndReport(config: Config, request: ControlRequest, print: (reply: ControlReply) => void): Promise<number> {
  const reply = await controlRequest(config.control, request);
  if (reply.error) throw new ExitError(`hastd refused the request: ${reply.message ?? `error ${reply.error}`}`, EX_SOFTWARE);
  print(reply);
  const exit = new ExitStatus();
  for (const r of reply.resources) {
    if (!r.error) continue;
    warn(`${r.name}: ${r.message ?? `error ${r.error}`}`);
    exit.set(r.error);
  }
  return exit.code;
}

/** list and status differ only in how they print the same STATUS reply. */
export function statusCommand(name: string, description: string, format: (resources: ResourceStatus[]) => string) {
  return defineCommand({
    meta: { name, description },
    args: commonArgs,
    async run({ args: a }) {
      checkOptions(a, commonArgs);
      const config = loadCtlConfig(a.c);
      const resources = a._.length ? a._ : ["all"];
      return await requestAndReport(config, { cmd: "status", resources }, (reply) => {
        process.stdout.write(a.json ? `${JSON.stringify(reply.resources, null, 2)}\n` : format(reply.resources));
      });
    },
  });
}
