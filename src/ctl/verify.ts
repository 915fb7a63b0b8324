// hastctl verify [--stop | --resume | --from offset] all|name ...: start (stop, or go on with) an
// online verification on the primary, which compares both copies chunk by chunk and copies what differs
// to the secondary. It runs in the background; `hastctl status` and `list` show its progress and
// what the last one found.
import { defineCommand, type ArgsDef } from "citty";
import { EX_USAGE, ExitError } from "../core/sysexits.ts";
import { checkOptions, commonArgs, loadCtlConfig, resourceNames, sizeOption } from "./common.ts";
import { requestAndReport } from "./request.ts";
import { outLine } from "./output.ts";

const verifyArgs = {
  ...commonArgs,
  stop: { type: "boolean", description: "end the verification running (what it found so far stays reported)" },
  resume: { type: "boolean", description: "go on from where the last verification ended early (stopped, or the link lost)" },
  from: { type: "string", description: "begin at this offset (bytes, or with a k/M/G/T suffix): where one ended early before hastd restarted, as its log says" },
} as const satisfies ArgsDef;

export default defineCommand({
  meta: { name: "verify", description: "compare the primary's copy with the secondary's, online" },
  args: verifyArgs,
  async run({ args: a }) {
    checkOptions(a, verifyArgs);
    if (a._.length === 0) throw new ExitError("verify needs 'all' or at least one resource name", EX_USAGE);
    if (a.stop && a.resume) throw new ExitError("verify: --stop and --resume exclude each other", EX_USAGE);
    const from = sizeOption(a.from, "--from offset");
    if (from !== undefined && (a.stop || a.resume)) throw new ExitError(`verify: --from excludes --${a.stop ? "stop" : "resume"}`, EX_USAGE);
    const config = loadCtlConfig(a.c);
    const request = {
      cmd: "verify" as const, resources: resourceNames(a._), ...(a.stop ? { stop: true } : {}), ...(a.resume ? { resume: true } : {}),
      ...(from !== undefined ? { from } : {}),
    };
    return await requestAndReport(config, request, (reply) => {
      if (a.json) outLine(JSON.stringify(reply.resources, null, 2));
    });
  },
});
