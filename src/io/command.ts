// Running a system tool (losetup, fusermount3, ...) with a bounded wait and a one-line error.
export const COMMAND_TIMEOUT_MS = 30_000;

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(argv: string[], timeout_ms = COMMAND_TIMEOUT_MS): Promise<CommandResult> {
  const proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeout_ms);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited,
  ]);
  clearTimeout(timer);
  return { code: proc.signalCode ? 128 : code, stdout, stderr };
}

/** Runs argv and returns stdout, or throws "<tool> failed: <its first stderr line>". */
export async function runChecked(argv: string[], timeout_ms = COMMAND_TIMEOUT_MS): Promise<string> {
  const r = await run(argv, timeout_ms);
  if (r.code !== 0) {
    const why = r.stderr.trim().split("\n")[0] || `exit status ${r.code}`;
    throw new Error(`${argv.join(" ")} failed: ${why}`);
  }
  return r.stdout;
}

export function which(tool: string): string | null {
  return Bun.which(tool, { PATH: `${process.env.PATH ?? ""}:/usr/sbin:/sbin:/usr/bin:/bin` });
}
