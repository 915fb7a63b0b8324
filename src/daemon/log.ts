// One-line logs for hastd and its workers. Foreground: stderr. Daemonized: a configured log file,
// else syslog through util-linux logger(1) (Bun has no unix datagram sockets for /dev/log).
// Every line carries the process's context, e.g. "[r0] (primary)", as FreeBSD hastd's pjdlog does.
import { appendFileSync } from "node:fs";

export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";

const SYSLOG_PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
const SYSLOG_FACILITY_DAEMON = 3 << 3;

export interface LogSink {
  write(level: LogLevel, line: string): void;
}

export const stderrSink: LogSink = {
  write(_level, line) {
    process.stderr.write(`${line}\n`);
  },
};

export function fileSink(path: string): LogSink {
  return {
    write(_level, line) {
      try {
        appendFileSync(path, `${new Date().toISOString()} ${line}\n`, { mode: 0o600 });
      } catch {
        process.stderr.write(`${line}\n`);
      }
    },
  };
}

export function syslogSink(tag: string): LogSink {
  const proc = Bun.spawn(["logger", "--prio-prefix", "-t", tag, "--id=" + process.pid], {
    stdin: "pipe", stdout: "ignore", stderr: "ignore",
  });
  proc.unref();
  return {
    write(level, line) {
      proc.stdin.write(`<${SYSLOG_FACILITY_DAEMON | SYSLOG_PRIORITY[level]}>${line}\n`);
      proc.stdin.flush();
    },
  };
}

/** Verbosity: 0 = info and above, 1 (-d) adds debug, 2 (-dd) adds per-request traces. */
export class Logger {
  constructor(
    private sink: LogSink,
    private verbosity: number,
    readonly context = "",
  ) {}

  child(context: string): Logger {
    return new Logger(this.sink, this.verbosity, this.context ? `${this.context} ${context}` : context);
  }

  setSink(sink: LogSink): void {
    this.sink = sink;
  }

  get debugEnabled(): boolean {
    return this.verbosity >= 1;
  }

  error(msg: string): void { this.emit("error", msg); }
  warn(msg: string): void { this.emit("warn", msg); }
  info(msg: string): void { this.emit("info", msg); }
  debug(msg: string): void { if (this.verbosity >= 1) this.emit("debug", msg); }
  trace(msg: string): void { if (this.verbosity >= 2) this.emit("trace", msg); }

  private emit(level: LogLevel, msg: string): void {
    const prefix = this.context ? `${this.context} ` : "";
    this.sink.write(level, `${prefix}${level === "info" ? "" : `${level}: `}${msg}`);
  }
}
