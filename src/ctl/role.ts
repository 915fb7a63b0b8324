// hastctl role init|primary|secondary all|name ... (spec 2.2): ask hastd to change roles.
import { defineCommand } from "citty";
import type { Role } from "../config/index.ts";
import { EX_USAGE, ExitError } from "../core/sysexits.ts";
import { checkOptions, commonArgs, loadCtlConfig } from "./common.ts";
import { requestAndReport } from "./request.ts";

const ROLES = ["init", "primary", "secondary"];

export default defineCommand({
  meta: { name: "role", description: "change the role of resources" },
  args: commonArgs,
  async run({ args: a }) {
    checkOptions(a, commonArgs);
    const [role, ...names] = a._;
    if (!role || !ROLES.includes(role)) throw new ExitError("role must be init, primary or secondary", EX_USAGE);
    if (names.length === 0) throw new ExitError("role needs 'all' or at least one resource name", EX_USAGE);
    const config = loadCtlConfig(a.c);
    return await requestAndReport(config, { cmd: "role", role: role as Role, resources: names }, (reply) => {
      if (a.json) console.log(JSON.stringify(reply.resources, null, 2));
    });
  },
});
