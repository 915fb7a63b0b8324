// Runs async tasks one at a time, in the order they were queued. A resource's role changes, peer
// admissions and reload restarts each stop and start its worker across awaits; interleaved, one
// would act on a role another has changed since and start a worker nobody tracks.
export class Serial {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined); // a failed task does not stop the ones behind it
    return result;
  }
}
