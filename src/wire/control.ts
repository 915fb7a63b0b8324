// Control protocol between hastctl and hastd: one JSON object per line over the control socket
// (see docs/control.md). Parsing is pure and total: any input yields a request or a one-line error.
import type { Role } from "../config/index.ts";
import type { VerifyCounts, VerifyResult } from "../core/verify-pass.ts";

export const CONTROL_LINE_MAX_BYTES = 64 * 1024;
export const CONTROL_RESOURCES_MAX = 4096;

/** Per-resource and request error codes; values follow HAST's EHAST_* numbering. */
export const ControlError = {
  OK: 0,
  NOENTRY: 1,
  INVALID: 2,
  NOMEMORY: 3,
  UNIMPLEMENTED: 4,
  BUSY: 5,
  /** The role change was refused for the resource's data (a copy incomplete here): see `message`. */
  REFUSED: 6,
  /** The role change did not take: the new worker ended at its start (the role is init); see `message`. */
  FAILED: 7,
} as const;

export type ControlRequest =
  /** force: promote even a node whose copy is incomplete (its data then counts as the good one). */
  | { cmd: "role"; role: Role; resources: string[]; force?: boolean }
  | { cmd: "status"; resources: string[] }
  /** Start an online verification on the primary (`stop`: end the one running; `resume`: go on
   * from where the last one ended early; `from`: begin at this byte offset, as after a restart). */
  | { cmd: "verify"; resources: string[]; stop?: boolean; resume?: boolean; from?: number }
  /** Stream the events of these resources (`all`: every resource, also those added later): the
   * reply line is their status then, and an event line follows each event until either side closes. */
  | { cmd: "events"; resources: string[] };

/** What happened to a resource: the events hooks run for (docs/operations.md, "Hooks"). */
/** The events of hooks and streams; `copy` (a secondary's copy turned complete or incomplete) is
 * in streams only, as are the `role` and `disconnect` hastd raises itself. */
export const EVENT_NAMES = ["role", "connect", "disconnect", "syncstart", "syncdone", "syncintr", "split-brain", "copy"] as const;
export type EventName = (typeof EVENT_NAMES)[number];

/** One line of an event stream: the event, with the arguments its hook gets, when hastd raised it. */
export interface ControlEvent {
  event: EventName;
  resource: string;
  /** ISO 8601, milliseconds, UTC. */
  time: string;
  args: string[];
}

export interface ResourceStatistics {
  reads: number;
  writes: number;
  deletes: number;
  flushes: number;
  activemap_updates: number;
  /** Bytes moved between the local disk and the peer socket by the kernel (sendfile, splice),
   * never through the worker's memory: synchronization and large writes on Linux. */
  direct_bytes: number;
  /** Synchronized bytes not sent: the peer's digest matched (resync_digest). */
  sync_unchanged_bytes: number;
  local_errors: { read: number; write: number; delete: number; flush: number };
}

export interface SyncProgress {
  done: number;
  total: number;
  rate: number;
  eta: number | null;
}

/** The last completed synchronization pass of this worker. */
export interface LastSync {
  bytes: number;
  /** From the pass's start to its final flush on both nodes. */
  seconds: number;
  /** When it completed (ISO 8601). */
  finished: string;
}

/** What a verification found so far (VerifyCounts): bytes found different (copied to the
 * secondary since) and in how many chunks, bytes not compared (their extent was still to be
 * synchronized, or a read failed). */
export type VerifyFindings = Pick<VerifyCounts, "differ_bytes" | "differ_chunks" | "skipped_bytes" | "failed_bytes">;

/** How a verification compares the copies: by their SHA-256 (the peer sends 32 bytes a chunk), or,
 * with a peer older than protocol version 4, by the peer's data itself. */
export type VerifyCompare = "sha256" | "data";

/** The running online verification: `done`/`total` and the rate count bytes handed out and ended. */
export interface VerifyProgress extends SyncProgress, VerifyFindings {
  compare: VerifyCompare;
  /** Where it began: 0, or where the last one ended early (`hastctl verify --resume`). */
  from_offset: number;
}

/** The last online verification this worker ended ("complete", or why it ended early). */
export interface LastVerify extends Omit<VerifyResult, "done_bytes"> {
  compare: VerifyCompare;
  /** When it ended (ISO 8601), and how long it ran. */
  finished: string;
  seconds: number;
}

export interface ResourceStatus {
  name: string;
  error?: number;
  message?: string;
  role?: Role;
  previous_role?: Role;
  provname?: string;
  localpath?: string;
  remoteaddr?: string;
  sourceaddr?: string;
  replication?: string;
  checksum?: string;
  compression?: string;
  /** verify_rate and sync_rate in bytes per second; absent without a limit. */
  verify_rate?: number;
  sync_rate?: number;
  status?: "complete" | "degraded";
  workerpid?: number;
  extentsize?: number;
  keepdirty?: number;
  dirty?: number;
  statistics?: ResourceStatistics;
  nbd?: string;
  device?: { path: string; mechanism: string } | null;
  sync?: SyncProgress;
  last_sync?: LastSync;
  split_brain?: boolean;
  /** Whether this secondary's copy lacks changes the primary has (FLAG_COPY_INCOMPLETE: not
   * promotable), as its worker last reported; absent when no worker reported since the last role change. */
  copy_incomplete?: boolean;
  /** On a primary: extents of its copy whose newest changes only the secondary holds (a write or
   * flush failed here); reads of them go to the secondary, which they are copied back from. */
  stale_extents?: number;
  verify?: VerifyProgress;
  last_verify?: LastVerify;
}

export interface ControlReply {
  error: number;
  message?: string;
  resources: ResourceStatus[];
}

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: string };

const ROLES: readonly Role[] = ["init", "primary", "secondary"];

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;

/** A resource operand as the control protocol takes it (1-255 characters; hastd refuses a request
 * with another). */
export function isResourceName(name: unknown): boolean {
  return typeof name === "string" && name.length > 0 && name.length <= 255;
}

/** The line as a JSON object, or why not (`what` names the line in the error). */
function jsonObject(line: string, what: string): ParseResult<Record<string, unknown>> {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { ok: false, error: `${what} is not valid JSON` };
  }
  return isObject(raw) ? { ok: true, value: raw } : { ok: false, error: `${what} must be a JSON object` };
}

export function parseControlRequest(line: string): ParseResult<ControlRequest> {
  if (line.length > CONTROL_LINE_MAX_BYTES) return { ok: false, error: `request longer than ${CONTROL_LINE_MAX_BYTES} bytes` };
  const parsed = jsonObject(line, "request");
  if (!parsed.ok) return parsed;
  const obj = parsed.value;
  const resources = obj.resources;
  if (!Array.isArray(resources) || resources.length === 0) return { ok: false, error: "request needs a non-empty 'resources' array" };
  if (resources.length > CONTROL_RESOURCES_MAX) return { ok: false, error: `more than ${CONTROL_RESOURCES_MAX} resources` };
  if (!resources.every(isResourceName)) {
    return { ok: false, error: "'resources' must hold resource names (1-255 characters)" };
  }
  const names = resources as string[];
  switch (obj.cmd) {
    case "status":
    case "events":
      return { ok: true, value: { cmd: obj.cmd, resources: names } };
    case "verify":
      if (obj.stop !== undefined && typeof obj.stop !== "boolean") return { ok: false, error: "'stop' must be true or false" };
      if (obj.resume !== undefined && typeof obj.resume !== "boolean") return { ok: false, error: "'resume' must be true or false" };
      if (obj.stop === true && obj.resume === true) return { ok: false, error: "'stop' and 'resume' exclude each other" };
      if (obj.from !== undefined) {
        if (typeof obj.from !== "number" || !Number.isSafeInteger(obj.from) || obj.from < 0) return { ok: false, error: "'from' must be a byte offset (an integer, 0 or more)" };
        if (obj.stop === true || obj.resume === true) return { ok: false, error: "'from' excludes 'stop' and 'resume'" };
      }
      return {
        ok: true,
        value: {
          cmd: "verify", resources: names, ...(obj.stop === true ? { stop: true } : {}), ...(obj.resume === true ? { resume: true } : {}),
          ...(obj.from !== undefined ? { from: obj.from } : {}),
        },
      };
    case "role": {
      if (!ROLES.includes(obj.role as Role)) return { ok: false, error: "'role' must be init, primary or secondary" };
      if (obj.force !== undefined && typeof obj.force !== "boolean") return { ok: false, error: "'force' must be true or false" };
      return { ok: true, value: { cmd: "role", role: obj.role as Role, resources: names, ...(obj.force === true ? { force: true } : {}) } };
    }
    case undefined:
      return { ok: false, error: "request has no 'cmd'" };
    default:
      return { ok: false, error: `unknown command ${JSON.stringify(obj.cmd).slice(0, 64)}` };
  }
}

const STATISTICS_COUNTS = ["reads", "writes", "deletes", "flushes", "activemap_updates", "direct_bytes", "sync_unchanged_bytes"] as const;
const LOCAL_ERROR_COUNTS = ["read", "write", "delete", "flush"] as const;
/** The numbers hastctl prints of each progress object. */
const PROGRESS_NUMBERS = {
  sync: ["done", "total", "rate"],
  last_sync: ["bytes", "seconds"],
  verify: ["done", "total", "rate", "differ_bytes", "differ_chunks", "skipped_bytes", "failed_bytes", "from_offset"],
  last_verify: ["seconds", "same_bytes", "differ_bytes", "differ_chunks", "skipped_bytes", "failed_bytes", "from_offset", "resume_offset", "total_bytes"],
} as const;

/** hastctl's check of hastd's reply: the shape it prints from (a hastd of another build may send
 * another), or a one-line error instead of a crash in the printing. */
export function parseControlReply(line: string): ParseResult<ControlReply> {
  const parsed = jsonObject(line, "the reply");
  if (!parsed.ok) return parsed;
  const raw = parsed.value;
  if (!isCount(raw.error)) return { ok: false, error: "the reply's 'error' must be a number" };
  if (raw.message !== undefined && typeof raw.message !== "string") return { ok: false, error: "the reply's 'message' must be a string" };
  if (!Array.isArray(raw.resources)) return { ok: false, error: "the reply's 'resources' must be an array" };
  for (const [i, r] of raw.resources.entries()) {
    const bad = (why: string): ParseResult<ControlReply> => ({ ok: false, error: `resource ${i + 1} of the reply: ${why}` });
    if (!isObject(r) || typeof r.name !== "string" || r.name === "") return bad("no 'name'");
    if (r.error !== undefined && !isCount(r.error)) return bad("'error' must be a number");
    if (r.message !== undefined && typeof r.message !== "string") return bad("'message' must be a string");
    if (r.role !== undefined && !ROLES.includes(r.role as Role)) return bad(`unknown role ${JSON.stringify(r.role)?.slice(0, 32)}`);
    const s = r.statistics;
    if (s !== undefined && !(isObject(s) && STATISTICS_COUNTS.every((k) => isCount(s[k])) &&
      isObject(s.local_errors) && LOCAL_ERROR_COUNTS.every((k) => isCount((s.local_errors as Record<string, unknown>)[k])))) {
      return bad("'statistics' lacks counts");
    }
    for (const [k, numbers] of Object.entries(PROGRESS_NUMBERS)) {
      const o = r[k];
      if (o !== undefined && !(isObject(o) && numbers.every((n) => typeof o[n] === "number"))) return bad(`'${k}' lacks numbers`);
    }
  }
  return { ok: true, value: raw as unknown as ControlReply };
}

/** The last line of an event stream hastd ends itself (it is exiting). */
export interface ControlStreamEnd {
  end: string;
}

/** hastctl's check of a stream line from hastd: an event it knows, the stream's end, or a one-line error. */
export function parseStreamLine(line: string): ParseResult<ControlEvent | ControlStreamEnd> {
  const parsed = jsonObject(line, "event line");
  if (!parsed.ok) return parsed;
  const e = parsed.value as Partial<Record<keyof ControlEvent, unknown>>;
  const end = (e as { end?: unknown }).end;
  if (end !== undefined) return typeof end === "string" ? { ok: true, value: { end } } : { ok: false, error: "'end' must be a string" };
  if (!EVENT_NAMES.includes(e.event as EventName)) return { ok: false, error: `unknown event ${JSON.stringify(e.event)?.slice(0, 64)}` };
  if (typeof e.resource !== "string" || e.resource.length === 0) return { ok: false, error: "event has no 'resource'" };
  if (typeof e.time !== "string" || Number.isNaN(Date.parse(e.time))) return { ok: false, error: "event has no valid 'time'" };
  if (!Array.isArray(e.args) || !e.args.every((a) => typeof a === "string")) return { ok: false, error: "event 'args' must be an array of strings" };
  return { ok: true, value: { event: e.event as EventName, resource: e.resource, time: e.time, args: e.args as string[] } };
}

export function encodeControlLine(message: ControlRequest | ControlReply | ControlEvent | ControlStreamEnd): string {
  return `${JSON.stringify(message)}\n`;
}
