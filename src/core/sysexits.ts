// sysexits(3) codes: how hastd and hastctl report why they ended.
export const EX_OK = 0;
export const EX_USAGE = 64;
export const EX_DATAERR = 65;
export const EX_NOINPUT = 66;
export const EX_UNAVAILABLE = 69;
export const EX_SOFTWARE = 70;
export const EX_OSERR = 71;
export const EX_OSFILE = 72;
export const EX_IOERR = 74;
export const EX_TEMPFAIL = 75;
export const EX_NOPERM = 77;
export const EX_CONFIG = 78;

/** An error that ends a program with a specific exit code and a one-line message. */
export class ExitError extends Error {
  constructor(message: string, readonly exit_code: number) {
    super(message);
    this.name = "ExitError";
  }
}
