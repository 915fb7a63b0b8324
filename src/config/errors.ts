// Configuration errors carry sysexits(3) codes so hastd and hastctl can exit with them.

export const EX_OSFILE = 72;
export const EX_CONFIG = 78;

export class ConfigError extends Error {
  readonly file: string;
  /** 1-based; null when the error is about the whole file (e.g. it cannot be read). */
  readonly line: number | null;
  readonly exit_code: 72 | 78;
  /** The message without the "<file>:<line>: " prefix. */
  readonly detail: string;

  constructor(file: string, line: number | null, detail: string, exit_code: 72 | 78 = EX_CONFIG) {
    super(line === null ? `${file}: ${detail}` : `${file}:${line}: ${detail}`);
    this.name = "ConfigError";
    this.file = file;
    this.line = line;
    this.detail = detail;
    this.exit_code = exit_code;
  }
}
