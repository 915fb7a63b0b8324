// How hastd re-invokes itself (workers, daemonizing): the compiled binary runs alone,
// `bun src/cli/hastd.ts` needs the runtime and the entry script.
export function isCompiled(): boolean {
  return Bun.main.startsWith("/$bunfs/") || Bun.main.startsWith("B:/~BUN/");
}

/** runtime_flags go to `bun` itself; a compiled binary has no runtime command line and drops them. */
export function selfArgv(runtime_flags: string[] = []): string[] {
  return isCompiled() ? [process.execPath] : [process.execPath, ...runtime_flags, Bun.main];
}
