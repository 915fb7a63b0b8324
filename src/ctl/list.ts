// hastctl list [all|name ...]: the verbose per-resource view (spec 2.3).
import { defineCommand } from "citty";
import { checkOptions, commonArgs, loadCtlConfig } from "./common.ts";
import { formatList } from "./format.ts";
import { requestAndReport } from "./request.ts";

export default defineCommand({
  meta: { name: "list", description: "show resources in detail" },
  args: commonArgs,
  async run({ args: a }) {
    checkOptions(a, commonArgs);
    const config = loadCtlConfig(a.c);
    const resources = a._.length ? a._ : ["all"];
    return await requestAndReport(config, { cmd: "status", resources }, (reply) => {
      process.stdout.write(a.json ? `${JSON.stringify(reply.resources, null, 2)}\n` : formatList(reply.resources));
    });
  },
});
