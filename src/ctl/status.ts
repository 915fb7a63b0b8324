// hastctl status [all|name ...]: one line per resource (spec 2.3).
import { defineCommand } from "citty";
import { checkOptions, commonArgs, loadCtlConfig } from "./common.ts";
import { formatStatus } from "./format.ts";
import { requestAndReport } from "./request.ts";

export default defineCommand({
  meta: { name: "status", description: "show the status of resources" },
  args: commonArgs,
  async run({ args: a }) {
    checkOptions(a, commonArgs);
    const config = loadCtlConfig(a.c);
    const resources = a._.length ? a._ : ["all"];
    return await requestAndReport(config, { cmd: "status", resources }, (reply) => {
      process.stdout.write(a.json ? `${JSON.stringify(reply.resources, null, 2)}\n` : formatStatus(reply.resources));
    });
  },
});
