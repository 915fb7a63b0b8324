// Unix-socket listener housekeeping shared by the control socket and NBD endpoints:
// remove a stale socket file (nothing answers), refuse to steal a live one, restrict the mode.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";

export async function isSocketAlive(path: string, timeout_ms = 1_000): Promise<boolean> {
  return await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeout_ms);
    Bun.connect({
      unix: path,
      socket: {
        open(s) { clearTimeout(timer); s.end(); resolve(true); },
        data() {},
        connectError() { clearTimeout(timer); resolve(false); },
      },
    }).catch(() => { clearTimeout(timer); resolve(false); });
  });
}

/** Prepares `path` for listen(): parent directory exists, stale socket removed. */
export async function prepareSocketPath(path: string, what: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${what} ${path} exists and is not a socket`);
  if (await isSocketAlive(path)) throw new Error(`${what} ${path} is in use by another process`);
  unlinkSync(path);
}

/** Listens on the unix socket at `path` (through `listen`) with mode 0600: the umask closes the
 * window between bind and chmod in which the socket would be connectable by anyone. */
export function listenRestricted<T>(path: string, listen: () => T): T {
  const umask = process.umask(0o177);
  let listener: T;
  try {
    listener = listen();
  } finally {
    process.umask(umask);
  }
  chmodSync(path, 0o600);
  return listener;
}

export function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
