// Sequential reading of frames during a handshake: "give me the next frame within N ms".
import type { Frame } from "../wire/peer/index.ts";
import type { PeerLink } from "./peer-link.ts";

export type Waited = { kind: "frame"; frame: Frame } | { kind: "closed"; reason: string } | { kind: "timeout" };

export class FrameWaiter {
  private queue: Frame[] = [];
  private closed: string | null = null;
  private wake: (() => void) | null = null;

  constructor(link: PeerLink) {
    link.start(
      (frame) => {
        this.queue.push(frame);
        this.wake?.();
      },
      (reason) => {
        this.closed = reason;
        this.wake?.();
      },
    );
  }

  async next(timeout_ms: number): Promise<Waited> {
    const deadline = Date.now() + timeout_ms;
    for (;;) {
      const frame = this.queue.shift();
      if (frame) return { kind: "frame", frame };
      if (this.closed !== null) return { kind: "closed", reason: this.closed };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: "timeout" };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** Why the link ended, if it did (it may have, behind frames still queued), else null. */
  get ended(): string | null {
    return this.closed;
  }

  /** Frames that arrived after the handshake's last one (must be none: the peer waits for us). */
  get leftover(): number {
    return this.queue.length;
  }
}
