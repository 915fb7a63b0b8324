// Operations still running on a helper thread, so that their owner can wait for every one of them
// (and for what their completions do) before it closes what they use.
export class InFlight {
  private readonly ops = new Set<Promise<unknown>>();

  /** Tracks `op` until it settles. A rejection is not caught here: an error the owner left
   * unhandled (a failed assertion) still ends the process loudly. */
  track(op: Promise<unknown>): void {
    this.ops.add(op);
    void op.finally(() => this.ops.delete(op));
  }

  /** Resolves once everything tracked has settled, including what was tracked meanwhile. It looks
   * only once the caller's synchronous work is done: what that work goes on to start counts too
   * (the secondary's link can be lost in the middle of a batch it carries out). */
  async settled(): Promise<void> {
    await null;
    while (this.ops.size > 0) await Promise.allSettled([...this.ops]);
  }
}
