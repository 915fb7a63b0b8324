// hastctl role init|primary|secondary all|name ... (spec 2.2): ask hastd to change roles.
import { defineCommand, type ArgsDef } from "citty";
import type { Role } from "../config/index.ts";
import { EX_USAGE, ExitError } from "../core/sysexits.ts";
import { checkOptions, commonArgs, loadCtlConfig, resourceNames } from "./common.ts";
import { requestAndReport } from "./request.ts";
import { outLine } from "./output.ts";

const ROLES = ["init", "primary", "secondary"];

const roleArgs = {
  ...commonArgs,
  force: { type: "boolean", description: "primary: promote even a node whose copy is incomplete, keeping its data as it is" },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "role", description: "change the role of resources" },
  args: roleArgs,
  async run({ args: a }) {
    checkOptions(a, roleArgs);
    const [role, ...names] = a._;
    if (!role || !ROLES.includes(role)) throw new ExitError("role must be init, primary or secondary", EX_USAGE);
    if (names.length === 0) throw new ExitError("role needs 'all' or at least one resource name", EX_USAGE);
    if (a.force && role !== "primary") throw new ExitError("--force applies to role primary only", EX_USAGE);
    const config = loadCtlConfig(a.c);
    const request = { cmd: "role" as const, role: role as Role, resources: resourceNames(names), ...(a.force ? { force: true } : {}) };
    return await requestAndReport(config, request, (reply) => {
      if (a.json) outLine(JSON.stringify(reply.resources, null, 2));
    });
  },
});
