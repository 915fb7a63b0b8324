// How hastd re-invokes itself (workers, daemonizing): the compiled binary runs alone,
// `bun src/cli/hastd.ts` needs the runtime and the entry script.
export function isCompiled(): boolean {
  return Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");
}

export function selfArgv(): string[] {
  return isCompiled() ? [process.execPath] : [process.execPath, Bun.main];
}
