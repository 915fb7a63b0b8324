// The pidfile (spec 3.2 step 4): opened mode 0600 and locked for the daemon's lifetime, so a
// second hastd on the same pidfile is refused with EX_TEMPFAIL and the pid of the running one.
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { native, NativeError } from "../native.ts";
import { EX_OSERR, EX_TEMPFAIL, ExitError } from "../core/sysexits.ts";

export class Pidfile {
  private constructor(
    readonly path: string,
    private fd: number,
  ) {}

  static acquire(path: string): Pidfile {
    let fd: number;
    try {
      mkdirSync(dirname(path), { recursive: true });
      fd = openSync(path, "a+", 0o600);
    } catch (err) {
      throw new ExitError(`Unable to open pidfile ${path}: ${(err as Error).message}`, EX_OSERR);
    }
    try {
      native.lockExclusive(fd, path);
    } catch (err) {
      closeSync(fd);
      if (err instanceof NativeError && (err.code === "EWOULDBLOCK" || err.code === "EAGAIN")) {
        let pid = "unknown";
        try {
          pid = readFileSync(path, "utf8").trim() || pid;
        } catch {
          // unreadable: report without the pid
        }
        throw new ExitError(`Another hastd is already running, pidfile: ${path}, pid: ${pid}.`, EX_TEMPFAIL);
      }
      throw new ExitError(`Unable to lock pidfile ${path}: ${(err as Error).message}`, EX_OSERR);
    }
    return new Pidfile(path, fd);
  }

  writePid(pid: number): void {
    ftruncateSync(this.fd, 0);
    writeSync(this.fd, `${pid}\n`, 0);
  }

  release(): void {
    if (this.fd < 0) return;
    try {
      unlinkSync(this.path);
    } catch {
      // already removed
    }
    closeSync(this.fd);
    this.fd = -1;
  }
}
