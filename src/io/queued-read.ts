// Reads a Bun socket's descriptor directly for bytes the kernel queued (native recv with
// MSG_DONTWAIT, after a bounded ppoll when asked to wait). Safe only on the JavaScript thread
// while Bun holds none of the socket's bytes undelivered: Bun hands every read to the data
// callback at once and polls sockets level-triggered, so whatever is left queued after such a
// read raises the next data event.
import type { Socket } from "bun";
import { native } from "../native.ts";
import type { QueuedRead } from "../wire/receive-buffer.ts";

/** A socket's descriptor, or undefined when Bun does not expose it. */
export function socketFd(socket: Socket<unknown>): number | undefined {
  // Bun exposes `fd` on its sockets at run time; bun-types does not declare it.
  const fd = (socket as unknown as { fd?: unknown }).fd;
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** A QueuedRead for a socket's descriptor. Throws a NativeError naming `what` when the socket
 * failed (e.g. ECONNRESET). */
export function queuedRead(fd: number, what: string): QueuedRead {
  return (into, wait_us) => Math.max(0, native.recvReady(fd, what, into, wait_us));
}
