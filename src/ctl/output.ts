// hastctl's standard output. Written synchronously: Bun writes to a pipe in the background, and
// process.exit drops what has not gone out yet (a `status --json | jq` of many resources was cut
// at 64 KiB, exit 0). A write that fails ends hastctl with EX_IOERR, so that `metrics > file &&
// mv` does not put a file cut short on a full disk in place; a reader that left (`| head -1`)
// ends it quietly, as SIGPIPE ends a filter.
import { writeSync } from "node:fs";
import { EX_IOERR, EX_OK, ExitError } from "../core/sysexits.ts";

/** A pipe whose reader is slow is waited for this long between attempts. */
const BUSY_WAIT_MS = 1;

export function out(text: string): void {
  const bytes = Buffer.from(text);
  for (let done = 0; done < bytes.length;) {
    try {
      done += writeSync(1, bytes, done);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "EAGAIN") {
        Bun.sleepSync(BUSY_WAIT_MS);
        continue;
      }
      if (code === "EPIPE") throw new ExitError("", EX_OK);
      throw new ExitError(`cannot write to standard output: ${(err as Error).message}`, EX_IOERR);
    }
  }
}

/** One line (a newline added). */
export function outLine(line: string): void {
  out(`${line}\n`);
}
