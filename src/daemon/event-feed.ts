// The subscribers of `hastctl events`: each gets every event the main process raises for the
// resources it asked for (the hooks' events, whether an `exec` is configured or not), in the order
// they were raised. A subscriber is bounded: one that cannot keep up is ended, never waited for.
import type { ControlEvent } from "../wire/control.ts";
import { assert } from "../core/assert.ts";

export const EVENT_SUBSCRIBERS_MAX = 64;
/** Events held for a subscriber whose stream has not begun yet (its snapshot is being gathered). */
export const EVENT_PENDING_MAX = 1024;

export type EventSink = (event: ControlEvent) => void;

export class EventSubscription {
  /** Events raised before `attach`; null once attached. */
  private pending: ControlEvent[] | null = [];
  private sink: EventSink | null = null;
  private end_why: ((why: string) => void) | null = null;
  /** Why the subscription ended before it was attached (its pending events overflowed). */
  private ended: string | null = null;

  constructor(
    private feed: EventFeed,
    /** null: every resource, also those added later. */
    readonly resources: ReadonlySet<string> | null,
  ) {}

  /** The stream begins: the held events go out first, then each as it comes. `end` is called when
   * the feed gives up on this subscriber. */
  attach(sink: EventSink, end: (why: string) => void): void {
    assert(this.pending !== null, "an event subscription is attached once");
    if (this.ended !== null) {
      end(this.ended);
      return;
    }
    const held = this.pending;
    this.pending = null;
    this.sink = sink;
    this.end_why = end;
    for (const event of held) sink(event);
  }

  deliver(event: ControlEvent): void {
    if (this.resources !== null && !this.resources.has(event.resource)) return;
    if (this.sink) {
      this.sink(event);
      return;
    }
    assert(this.pending !== null, "a subscription not attached holds its events");
    if (this.pending.length < EVENT_PENDING_MAX) {
      this.pending.push(event);
      return;
    }
    this.ended = `more than ${EVENT_PENDING_MAX} events came before the stream began`;
    this.close();
  }

  /** Ends the subscription from the feed's side: its stream is told why. */
  end(why: string): void {
    this.close();
    const end = this.end_why;
    this.end_why = null;
    end?.(why);
  }

  close(): void {
    this.feed.remove(this);
    this.sink = null;
  }
}

export class EventFeed {
  private subscribers = new Set<EventSubscription>();

  /** null when EVENT_SUBSCRIBERS_MAX streams are open already. */
  subscribe(resources: ReadonlySet<string> | null): EventSubscription | null {
    if (this.subscribers.size >= EVENT_SUBSCRIBERS_MAX) return null;
    const subscription = new EventSubscription(this, resources);
    this.subscribers.add(subscription);
    return subscription;
  }

  publish(event: ControlEvent): void {
    // A copy: a sink that ends its subscription must not change the set being walked.
    for (const subscription of [...this.subscribers]) subscription.deliver(event);
  }

  /** Every stream ends (hastd is exiting). */
  endAll(why: string): void {
    for (const subscription of [...this.subscribers]) subscription.end(why);
  }

  remove(subscription: EventSubscription): void {
    this.subscribers.delete(subscription);
  }

  get size(): number {
    return this.subscribers.size;
  }
}
