// The model of what the application was promised. Writes to one sector never overlap in flight
// (the workload sees to it), so each sector has a history of values in order; `floor` is the
// oldest history entry the device may still return. An acknowledged write raises the floor; a
// crash lowers it to what survives that crash by the rules of the mode:
//   - power loss of the primary, restarted as primary: writes acknowledged and then covered by an
//     acknowledged flush;
//   - failover to the secondary: writes the peer was promised to hold (fullsync answered on the
//     peer's disk write, memsync on its "received", trims like fullsync; not async, not writes
//     answered while the link was down) and everything acknowledged before an in-sync point;
//   - a process kill or a secondary crash: nothing acknowledged may be lost;
//   - a failed flush of the primary's disk that dropped cached sectors (Linux's write-back error):
//     writes to those sectors not promised to the peer; the next flush submitted after it must fail.
// A trim is modelled as zeroing its range on both nodes.

export interface WriteRecord {
  value: number;
  first: number;
  count: number;
  acked: boolean;
  replicated: boolean;
  flushed: boolean;
  /** The secondary reported that its write or trim of this record failed. */
  peer_failed: boolean;
  /** The secondary wrote it (to its cache), whatever the primary had answered by then. */
  landed: boolean;
  /** Still unanswered when a failed flush dropped one of its sectors, and answered without being
   * on the peer: it may be gone from the device. */
  dropped_unacked: boolean;
  /** Still unanswered when the secondary lost it from its cache while the primary was synchronized
   * from it, in an extent only its copy was current in: answered ok after that, it is as a
   * dropped_unacked one (the primary reports the loss with a failed flush). */
  lost_on_source: boolean;
}

/** What a flush covers, taken at its submission. */
export interface FlushToken {
  covered: WriteRecord[];
  drops: number;
}

export class Oracle {
  private readonly history: WriteRecord[][];
  private readonly floor: Int32Array;
  private readonly unflushed = new Set<WriteRecord>();
  private readonly unreplicated = new Set<WriteRecord>();
  /** Writes and trims the primary could not make locally (its metadata or activemap write failed
   * first): the peer's copy is their only one until the pair is in sync again. */
  private readonly local_failed = new Set<WriteRecord>();
  /** Drops of the primary's cached sectors so far. */
  private drops = 0;
  /** The drop (its number in `drops`) no flush has reported yet: the next flush submitted after it
   * must fail. Null when every drop was reported. */
  private unreported_drop: number | null = null;
  /** The secondary crashed or was re-created since the pair was last in sync: its copy may lack
   * changes the primary still has to copy to it, so a drop on the primary is a second fault. */
  private peer_incomplete = false;

  constructor(readonly sectors: number) {
    this.history = Array.from({ length: sectors }, () => []);
    this.floor = new Int32Array(sectors).fill(-1);
  }

  submitModify(first: number, count: number, value: number): WriteRecord {
    const rec: WriteRecord = { value, first, count, acked: false, replicated: false, flushed: false, peer_failed: false, landed: false, dropped_unacked: false, lost_on_source: false };
    for (let s = first; s < first + count; s++) this.history[s]!.push(rec);
    return rec;
  }

  acked(rec: WriteRecord, ok: boolean, promised_on_peer: boolean): void {
    if (!ok) return;
    rec.acked = true;
    const promised = (promised_on_peer || rec.landed) && !rec.peer_failed;
    // Answered after a drop took part of it, and not on the peer: the device may have lost it, and
    // no flush may call it durable (flushAcked).
    rec.dropped_unacked &&= !promised; // else copied back from the peer
    rec.dropped_unacked ||= rec.lost_on_source;
    if (!rec.dropped_unacked) for (let s = rec.first; s < rec.first + rec.count; s++) this.floor[s] = this.history[s]!.lastIndexOf(rec);
    this.unflushed.add(rec);
    if (promised) rec.replicated = true;
    else this.unreplicated.add(rec);
  }

  /** A flush was submitted: it covers every write acknowledged so far, and the drops so far. */
  flushSubmitted(): FlushToken {
    return { covered: [...this.unflushed], drops: this.drops };
  }

  /** Returns an error when the flush says data is durable that a dropped write-back lost. */
  flushAcked({ covered, drops }: FlushToken, ok: boolean): string | null {
    if (!ok) {
      this.unreported_drop = null;
      for (const rec of covered) rec.dropped_unacked = false; // its possible loss is reported now
      this.peerUntrusted(); // and that of a change only the peer held, if the primary gave it up
      return null;
    }
    // One submitted before the drop need not report it (it does not cover what was dropped), as an
    // fsync whose write-back was done before the error struck.
    if (this.unreported_drop !== null && drops >= this.unreported_drop) {
      return "a flush answered ok after the primary's disk dropped a write-back, which no flush has reported";
    }
    // Write values are unique; a dropped zero may be a copy's or another trim's, so trims are not held to it.
    const dropped = covered.find((rec) => rec.dropped_unacked && rec.value !== 0);
    if (dropped) return `a flush answered ok covering write ${dropped.value}, which the primary's disk dropped before it was answered`;
    for (const rec of covered) {
      rec.flushed = true;
      this.unflushed.delete(rec);
    }
    return null;
  }

  /** Lost writes become values the device may or may not hold. */
  private forget(lost: Set<WriteRecord>): void {
    for (const rec of lost) {
      rec.acked = false;
      this.unflushed.delete(rec);
      this.unreplicated.delete(rec);
    }
  }

  /** The secondary crashed or was re-created: writes promised to it and not flushed count as on it
   * no more (a drop on the primary's disk may now lose them; the primary copies them to it again). */
  peerLostCache(): void {
    this.peer_incomplete = true;
    for (const rec of this.unflushed) {
      if (!rec.replicated) continue;
      rec.replicated = false;
      this.unreplicated.add(rec);
    }
    this.peerUntrusted();
  }

  /** The primary could not write this write or trim locally (found as peerModifyFailed finds it). */
  localFailed(first: number, count: number, value: number): void {
    const rec = this.history[first]!.findLast((r) => r.value === value && r.first === first && r.count === count);
    if (rec) this.local_failed.add(rec);
  }

  /**
   * The primary may have given up the peer's copy of the changes it could not make itself: the
   * peer's cache epoch changed (a crash, or a failed flush there), a flush there failed, or its map
   * handed their extent back (its copy not whole there). It then keeps its own copy and reports
   * the loss with a failed flush. Called at the first two, and at any failed flush for the last;
   * those acknowledged and not covered by a good flush since (it waits for the copy back) become
   * values the device may or may not hold.
   */
  peerUntrusted(): void {
    const lost = new Set([...this.local_failed].filter((rec) => rec.acked && !rec.flushed));
    for (const rec of lost) this.local_failed.delete(rec);
    if (lost.size > 0) this.lowerFloor((rec) => !lost.has(rec));
  }

  /** The primary's disk dropped these sectors' cached writes: those not promised to the peer (which
   * the primary copies back from it) are lost, and all unflushed ones while the peer is incomplete. */
  dropped(sectors: number[], values: number[]): void {
    this.drops++;
    this.unreported_drop ??= this.drops;
    const lost = new Set<WriteRecord>();
    for (const [k, s] of sectors.entries()) {
      const h = this.history[s]!;
      let i = this.floor[s]!;
      for (; i >= 0 && !(h[i]!.acked && ((h[i]!.replicated && !this.peer_incomplete) || h[i]!.flushed)); i--) if (h[i]!.acked) lost.add(h[i]!);
      this.floor[s] = i;
      // A write whose data was dropped before it was answered (the newest with that value).
      const unanswered = h.findLast((rec) => rec.value === values[k] && !rec.acked && !lost.has(rec));
      if (unanswered) unanswered.dropped_unacked = true;
    }
    this.forget(lost);
  }

  /**
   * The secondary failed a replicated write or trim: it is not on the peer after all. A write is
   * found by its unique value; a trim (value 0) is the newest trim of that range, as the primary
   * answers a trim only after the peer did and the workload never overlaps requests in flight.
   */
  peerModifyFailed(first: number, count: number, value: number, peer_serves_now: boolean): void {
    const rec = this.history[first]!.findLast((r) => r.value === value && r.first === first && r.count === count);
    if (!rec) return;
    rec.peer_failed = true;
    if (rec.replicated) {
      rec.replicated = false;
      this.unreplicated.add(rec);
    }
    // The peer failed over to (memsync answers on receipt) before its write failed: lost.
    if (peer_serves_now && rec.acked) this.lowerFloor((r) => r !== rec);
  }

  /**
   * The secondary wrote a replicated write or trim to its cache: it is on the peer, even one the
   * primary answered before the peer had it (async), which is then as one promised there (a drop on
   * the primary is repaired from the peer; a failover keeps it). Found as peerModifyFailed finds it.
   */
  peerModifyLanded(first: number, count: number, value: number): void {
    const rec = this.history[first]!.findLast((r) => r.value === value && r.first === first && r.count === count);
    if (!rec || rec.peer_failed) return;
    rec.landed = true;
    if (!rec.acked || rec.replicated) return;
    rec.replicated = true;
    rec.dropped_unacked = false;
    this.unreplicated.delete(rec);
  }

  /** The pair is in sync and idle: everything acknowledged is on both nodes. */
  inSync(): void {
    this.peer_incomplete = false;
    this.local_failed.clear(); // copied back
    for (const rec of this.unreplicated) {
      if (!rec.acked) continue;
      rec.replicated = true;
      rec.dropped_unacked = false; // on both nodes: the drop was repaired
    }
    this.unreplicated.clear();
  }

  /** The primary's process ended with a flush and it becomes the secondary of the next primary
   * (a failback): every acknowledged write is on the new secondary's stable storage. */
  durableOnPeer(): void {
    this.inSync();
    for (const rec of this.unflushed) rec.flushed = true;
    this.unflushed.clear();
  }

  /** These sectors lost their cached writes (the value each held there) with no other copy whole:
   * the acknowledged writes to them that no flush made durable become values the device may or may
   * not hold, and one not answered yet is so even when answered ok (lost_on_source). */
  lostUnflushed(sectors: number[], values: number[]): void {
    const lost = new Set<WriteRecord>();
    for (const [k, s] of sectors.entries()) {
      const h = this.history[s]!;
      let i = this.floor[s]!;
      for (; i >= 0 && !(h[i]!.acked && h[i]!.flushed); i--) if (h[i]!.acked) lost.add(h[i]!);
      this.floor[s] = i;
      const unanswered = h.findLast((rec) => rec.value === values[k] && !rec.acked && !lost.has(rec));
      if (unanswered) unanswered.lost_on_source = true;
    }
    this.forget(lost);
  }

  /**
   * A crash: the floor drops to the newest acknowledged write that `survives`; the acknowledged
   * writes above it are lost (from now on they are values the device may or may not hold).
   */
  /** The primary's process ended, in a crash or a planned switch-over (made in sync: any drop was
   * repaired): the application sees that, not a dropped write-back from before it (a new process
   * does not inherit the error, as a file opened after a write-back error does not). */
  primaryEnded(): void {
    this.unreported_drop = null;
    // Writes a drop took before they were answered, on the peer neither: values the device may or
    // may not hold (their floor was never raised), which no later process's flush reports.
    this.forget(new Set([...this.unflushed].filter((rec) => rec.dropped_unacked)));
  }

  lowerFloor(survives: (rec: WriteRecord) => boolean): void {
    const lost = new Set<WriteRecord>();
    for (let s = 0; s < this.sectors; s++) {
      const h = this.history[s]!;
      let i = this.floor[s]!;
      for (; i >= 0 && !(h[i]!.acked && !lost.has(h[i]!) && survives(h[i]!)); i--) if (h[i]!.acked) lost.add(h[i]!);
      this.floor[s] = i;
    }
    this.forget(lost);
  }

  floorsOf(first: number, count: number): Int32Array {
    return this.floor.slice(first, first + count);
  }

  /** Whether sector s may hold `value` given the floor `floor` (a snapshot or the current one). */
  allows(s: number, value: number, floor = this.floor[s]!): boolean {
    if (floor < 0 && value === 0) return true;
    const h = this.history[s]!;
    for (let i = Math.max(floor, 0); i < h.length; i++) if (h[i]!.value === value) return true;
    return false;
  }

  describe(s: number): string {
    const h = this.history[s]!;
    const f = this.floor[s]!;
    const tail = h.slice(Math.max(0, f - 2)).map((r, i) => `${r.value}${r.acked ? "a" : ""}${r.flushed ? "f" : ""}${r.replicated ? "r" : ""}${i + Math.max(0, f - 2) === f ? "*" : ""}`);
    return `floor ${f} of ${h.length}: ${tail.join(" ")}`;
  }
}
