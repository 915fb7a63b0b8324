// POSIX getopt(3) for hastd's man-page flags: clustered short options (-dF, -dd), option
// arguments attached or separate (-c/etc/hast.conf, -c /etc/hast.conf), "--" ends options.
export interface GetoptResult {
  options: { flag: string; value?: string }[];
  operands: string[];
}

export class GetoptError extends Error {}

/** spec: option letters, a letter followed by ':' takes an argument (as in getopt(3)). */
export function getopt(argv: string[], spec: string): GetoptResult {
  const takesArg = new Map<string, boolean>();
  for (let i = 0; i < spec.length; i++) {
    const ch = spec[i]!;
    if (ch === ":") continue;
    takesArg.set(ch, spec[i + 1] === ":");
  }
  const options: GetoptResult["options"] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      i++;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") break;
    for (let j = 1; j < arg.length; j++) {
      const flag = arg[j]!;
      const needs = takesArg.get(flag);
      if (needs === undefined) throw new GetoptError(`illegal option -- ${flag}`);
      if (!needs) {
        options.push({ flag });
        continue;
      }
      const attached = arg.slice(j + 1);
      if (attached) options.push({ flag, value: attached });
      else if (i + 1 < argv.length) options.push({ flag, value: argv[++i]! });
      else throw new GetoptError(`option requires an argument -- ${flag}`);
      break;
    }
  }
  return { options, operands: argv.slice(i) };
}
