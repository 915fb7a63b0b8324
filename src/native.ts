// The one place that loads native/ggate.c (built into native/build/libggate.so by
// native/build.sh). Every call is synchronous: data-path calls hit the page cache and return
// quickly. The exceptions wait for the disk itself (milliseconds) and so run on Bun's thread
// pool through node:fs, with the same fault injection and errors: fdatasyncAsync, and
// preadAsync for what a sync pass's chunk has outside the page cache (preadCached copies the rest).
//
// Buffers go to C by pointer (bun:ffi passes a Uint8Array, subarrays at their byte offset),
// so no block is copied in JavaScript. C returns -errno; this module turns that into a
// NativeError naming the operation, the path and the reason, e.g.
//   pwrite /var/disk0 at offset 4096 (65536 bytes): Input/output error (EIO)
//
// Fault injection (tests, reliability work): HAST_FAULT_INJECT, read on the first call that
// can fail (or replaced with setFaultInjection), is a comma-separated list of
//   <op>:<path-substring>:<errno-name>[:<count>]    the call fails with that errno
//   <op>:<path-substring>:delay=<ms>[:<count>]      the call is carried out <ms> late (a slow disk)
//   <op>:<path-substring>:assert[:<count>]          an invariant fails there (a bug met: the worker
//                                                   stops as an assertion stops it)
// e.g. "pwrite:disk-a:EIO:3" fails the next 3 pwrite calls on paths containing "disk-a" with
// EIO. <op> is one of FAULT_OPS or "*" (any); an empty substring matches every path; without
// a count the rule fires forever. The first live rule that matches fires. An injected failure
// replaces the call (nothing is read or written), except for close, which still closes. A delay
// blocks the calling thread, as a slow disk blocks a synchronous call; fdatasyncAsync and
// preadAsync wait without blocking the event loop, as their helper thread would.
// Paths containing ":" or "," cannot be matched.
//
// Faults that must start or stop mid-run (integration tests): HAST_FAULT_INJECT_FILE names a
// file of the same rules (commas or newlines between them). It replaces HAST_FAULT_INJECT and
// is checked (one stat) on every fallible call; when its inode, size or mtime changed, the
// rules are read again with fresh counts. A missing file means no rules. Replace the file by a
// rename so that no change is missed. Unset, the hot path makes no extra syscall.

import { dlopen, FFIType } from "bun:ffi";
import { close as fsClose, fdatasync as fsFdatasync, open as fsOpen, read as fsRead, readFileSync, statSync } from "node:fs";
import { assert } from "./core/assert.ts";
// The .so is embedded by `bun build --compile` through this import; TypeScript has no module
// type for "*.so" files, and this file is the only place that imports one.
// @ts-expect-error: default export of a { type: "file" } import is its path (a string)
import embeddedLibPath from "../native/build/libggate.so" with { type: "file" };

const NATIVE_VERSION = 12; // hast_native_version() in native/ggate.c
const libPath: string = embeddedLibPath;

const lib = dlopen(libPath, {
  hast_native_version: { args: [], returns: "i32" },
  hast_open: { args: ["ptr", "i32"], returns: "i32" },
  hast_close: { args: ["i32"], returns: "i32" },
  hast_pread: { args: ["i32", "ptr", "u64", "i64"], returns: FFIType.i64_fast },
  hast_pread_cached: { args: ["i32", "ptr", "u64", "i64"], returns: FFIType.i64_fast },
  hast_pwrite: { args: ["i32", "ptr", "u64", "i64"], returns: FFIType.i64_fast },
  hast_recv_ready: { args: ["i32", "ptr", "u64", "i32"], returns: FFIType.i64_fast },
  hast_range_cached: { args: ["i32", "i64", "u64"], returns: "i32" },
  hast_drop_cached: { args: ["i32", "i64", "u64"], returns: "i32" },
  hast_sendfile: { args: ["i32", "i32", "i64", "u64"], returns: FFIType.i64_fast },
  hast_splice_pipe: { args: ["ptr"], returns: "i32" },
  hast_splice_in: { args: ["i32", "i32", "i32", "i32", "i64", "u64", "i32", "ptr"], returns: "i32" },
  hast_dup: { args: ["i32"], returns: "i32" },
  hast_fdatasync: { args: ["i32"], returns: "i32" },
  hast_fsync: { args: ["i32"], returns: "i32" },
  hast_discard: { args: ["i32", "i64", "i64"], returns: "i32" },
  hast_zero_range: { args: ["i32", "i64", "i64"], returns: "i32" },
  hast_pwrite_durable: { args: ["i32", "ptr", "u64", "i64"], returns: FFIType.i64_fast },
  hast_pwrite_zeroes: { args: ["i32", "i64", "i64"], returns: "i32" },
  hast_is_zero: { args: ["ptr", "u64"], returns: "i32" },
  hast_media_size: { args: ["i32"], returns: FFIType.i64_fast },
  hast_sector_size: { args: ["i32"], returns: "i32" },
  hast_kind: { args: ["i32"], returns: "i32" },
  hast_lock_exclusive: { args: ["i32"], returns: "i32" },
  hast_strerror: { args: ["i32", "ptr", "u64"], returns: "i32" },
  hast_errno_table: { args: ["ptr", "u64"], returns: "i32" },
  hast_socketpair: { args: ["ptr"], returns: "i32" },
  hast_genl_family: { args: ["ptr"], returns: "i32" },
  hast_nbd_attach: { args: ["i32", "u64", "u64", "u64", "u32", "ptr", "ptr"], returns: "i32" },
  hast_nbd_detach: { args: ["i32"], returns: "i32" },
  hast_ggate_layout: { args: ["ptr", "u64"], returns: "i32" },
  hast_ggate_create: { args: ["i32", "ptr", "u64", "u32", "u32", "ptr"], returns: "i32" },
  hast_ggate_start: { args: ["i32", "i32", "ptr", "ptr", "u64"], returns: "i32" },
  hast_ggate_done: { args: ["i32", "ptr", "i32", "ptr"], returns: "i32" },
  hast_ggate_cancel: { args: ["i32", "ptr"], returns: "i32" },
  hast_ggate_destroy: { args: ["i32", "i32", "i32"], returns: "i32" },
});
const c = lib.symbols;

{
  const version = c.hast_native_version();
  if (version !== NATIVE_VERSION) {
    throw new Error(`native library ${libPath}: version ${version}, expected ${NATIVE_VERSION}; ` +
      "rebuild it with `sh native/build.sh`");
  }
}

// ---------------------------------------------------------------------------------------------
// errno names and messages (numbers differ between Linux and FreeBSD, so both come from C)

const ERRNO_TABLE_BYTES_MAX = 16_384;
const errnoByName = new Map<string, number>();
const nameByErrno = new Map<number, string>();
{
  const buf = new Uint8Array(ERRNO_TABLE_BYTES_MAX);
  const used = c.hast_errno_table(buf, buf.length);
  if (used < 0 || used >= buf.length) throw new Error(`native errno table: bad length ${used}`);
  for (const line of new TextDecoder().decode(buf.subarray(0, used)).split("\n")) {
    if (line === "") continue;
    const [name = "", value = ""] = line.split("=");
    errnoByName.set(name, Number(value));
    if (!nameByErrno.has(Number(value))) nameByErrno.set(Number(value), name);
  }
}

/** The errno value of a name ("EIO") on this platform, or undefined if it has none. */
function errnoValue(name: string): number | undefined {
  return errnoByName.get(name);
}

function errnoMust(name: string): number {
  const value = errnoByName.get(name);
  if (value === undefined) throw new Error(`native errno table has no ${name}`);
  return value;
}

/** The name of an errno value ("EIO"), or "errno <n>" when the table does not know it. */
function errnoName(errno: number): string {
  return nameByErrno.get(errno) ?? `errno ${errno}`;
}

const STRERROR_BYTES = 256;
const strerrorCache = new Map<number, string>();

function strerror(errno: number): string {
  let text = strerrorCache.get(errno);
  if (text === undefined) {
    const buf = new Uint8Array(STRERROR_BYTES);
    const used = c.hast_strerror(errno, buf, buf.length);
    text = used > 0 ? new TextDecoder().decode(buf.subarray(0, Math.min(used, buf.length - 1))) : `errno ${errno}`;
    strerrorCache.set(errno, text);
  }
  return text;
}

/** errno values callers compare against (platform numbering). */
const ERRNO = {
  EBADF: errnoMust("EBADF"),
  EBUSY: errnoMust("EBUSY"),
  ENODEV: errnoMust("ENODEV"),
  EPERM: errnoMust("EPERM"),
  EINVAL: errnoMust("EINVAL"),
  EIO: errnoMust("EIO"),
  EOPNOTSUPP: errnoMust("EOPNOTSUPP"),
  ENOTSUP: errnoMust("ENOTSUP"),
  EWOULDBLOCK: errnoMust("EWOULDBLOCK"),
  EAGAIN: errnoMust("EAGAIN"),
} as const;

// ---------------------------------------------------------------------------------------------
// errors

export interface NativeErrorInit {
  op: string;
  path: string;
  errno: number;
  code?: string;   // default: the platform name of errno
  where?: string;  // e.g. " at offset 4096 (65536 bytes)"
  reason?: string; // default: strerror(errno)
  note?: string;   // appended after the code, e.g. "injected by HAST_FAULT_INJECT"
}

/** A failed native call: `<op> <path>[ where]: <reason> (<CODE>[, note])`. */
export class NativeError extends Error {
  override readonly name = "NativeError";
  readonly errno: number;
  readonly code: string;
  readonly op: string;
  readonly path: string;

  constructor(init: NativeErrorInit) {
    const code = init.code ?? errnoName(init.errno);
    const reason = init.reason ?? strerror(init.errno);
    const note = init.note === undefined ? "" : `, ${init.note}`;
    super(`${init.op} ${init.path}${init.where ?? ""}: ${reason} (${code}${note})`);
    this.errno = init.errno;
    this.code = code;
    this.op = init.op;
    this.path = init.path;
  }
}

/** " at offset O (L bytes)" for calls on a byte range, "" otherwise (offset undefined). */
function at(offset: number | undefined, length: number): string {
  return offset === undefined ? "" : ` at offset ${offset} (${length} bytes)`;
}

/** Returns a non-negative rc; turns -errno into a NativeError. Allocates only on failure. */
function check(rc: number | bigint, op: string, path: string, offset?: number, length = 0): number {
  const value = Number(rc);
  if (value < 0) throw new NativeError({ op, path, errno: -value, where: at(offset, length) });
  return value;
}

function assertByteCount(op: string, path: string, what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${op} ${path}: ${what} ${value} is not a non-negative integer`);
  }
}

function cPath(path: string): Uint8Array {
  if (path.includes("\0")) throw new RangeError(`path ${JSON.stringify(path)} contains a NUL byte`);
  return Buffer.from(`${path}\0`);
}

// ---------------------------------------------------------------------------------------------
// fault injection

export const FAULT_OPS = [
  "open", "close", "pread", "pwrite", "fdatasync", "fsync", "discard", "zero-range",
  "media-size", "sector-size", "kind", "lock",
] as const;
export type FaultOp = (typeof FAULT_OPS)[number];

const FAULT_RULES_MAX = 64;

interface FaultRule {
  readonly op: FaultOp | "*";
  readonly path_part: string;
  readonly errno: number;     // 0 for a delay or assert rule
  readonly code: string;      // "assert" for an assert rule
  readonly delay_ms: number;  // 0 for an errno rule
  remaining: number; // Infinity when the rule has no count
}

const FAULT_DELAY_MS_MAX = 60_000;

let faultRules: FaultRule[] | undefined; // undefined until HAST_FAULT_INJECT is read

function parseFaultSpec(spec: string, source: string): FaultRule[] {
  const items = spec.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (items.length > FAULT_RULES_MAX) {
    throw new Error(`${source}: ${items.length} rules, at most ${FAULT_RULES_MAX} allowed`);
  }
  return items.map((item) => {
    const fields = item.split(":");
    const bad = (why: string) => new Error(`${source}: "${item}": ${why} ` +
      "(format <op>:<path-substring>:<errno-name>|delay=<ms>|assert[:<count>])");
    if (fields.length < 3 || fields.length > 4) throw bad("wrong number of fields");
    const [op = "", path_part = "", code = "", countText] = fields;
    if (op !== "*" && !(FAULT_OPS as readonly string[]).includes(op)) {
      throw bad(`unknown op "${op}", expected * or one of ${FAULT_OPS.join(" ")}`);
    }
    const delay = /^delay=(\d+)$/.exec(code);
    const delay_ms = delay ? Number(delay[1]) : 0;
    if (delay && !(delay_ms > 0 && delay_ms <= FAULT_DELAY_MS_MAX)) throw bad(`delay must be 1..${FAULT_DELAY_MS_MAX} ms`);
    const errno = delay || code === "assert" ? 0 : errnoValue(code);
    if (errno === undefined) throw bad(`unknown errno name "${code}"`);
    const remaining = countText === undefined ? Infinity : Number(countText);
    if (countText !== undefined && !(/^[0-9]+$/.test(countText) && Number.isSafeInteger(remaining) && remaining > 0)) {
      throw bad(`count "${countText}" is not a positive integer`);
    }
    return { op: op as FaultOp | "*", path_part, errno, code, delay_ms, remaining };
  });
}

/** Replaces the fault rules (tests); undefined or "" clears them. Same format as the env var. */
export function setFaultInjection(spec: string | undefined): void {
  faultRules = parseFaultSpec(spec ?? "", "fault injection");
}

/** null: no rules file; undefined: HAST_FAULT_INJECT_FILE not looked at yet. */
let faultFile: string | null | undefined;
/** inode:size:mtime of the rules file as last read ("" when it was missing). */
let faultFileStamp = "";

/** Reads rules from `path` from now on, as HAST_FAULT_INJECT_FILE does; null stops that (tests). */
export function setFaultInjectionFile(path: string | null): void {
  faultFile = path;
  faultFileStamp = "";
  faultRules = [];
}

/** Re-reads the rules file when it changed since the last call. */
function refreshFaultFile(path: string): void {
  const st = statSync(path, { bigint: true, throwIfNoEntry: false });
  const stamp = st ? `${st.ino}:${st.size}:${st.mtimeNs}` : "";
  if (stamp === faultFileStamp) return;
  faultFileStamp = stamp;
  let text = "";
  try {
    text = st ? readFileSync(path, "utf8") : "";
  } catch (err) {
    if ((err as { code?: string }).code !== "ENOENT") throw err;
  }
  faultRules = parseFaultSpec(text.replace(/\s+/g, ","), `HAST_FAULT_INJECT_FILE ${path}`);
}

function injectedFault(op: FaultOp, path: string): FaultRule | undefined {
  const rule = liveFault(op, path);
  if (rule !== undefined) rule.remaining -= 1;
  assert(rule?.code !== "assert", () => `${op} ${path}: injected by HAST_FAULT_INJECT`);
  return rule;
}

/** The rule the next such call would fire, without firing it. */
function liveFault(op: FaultOp, path: string): FaultRule | undefined {
  if (faultFile === undefined) {
    faultFile = process.env.HAST_FAULT_INJECT_FILE || null;
    if (faultFile !== null) faultRules = [];
  }
  if (faultFile !== null) refreshFaultFile(faultFile);
  faultRules ??= parseFaultSpec(process.env.HAST_FAULT_INJECT ?? "", "HAST_FAULT_INJECT");
  if (faultRules.length === 0) return undefined;
  return faultRules.find((r) => r.remaining > 0 && (r.op === "*" || r.op === op) && path.includes(r.path_part));
}

function injectedError(rule: FaultRule, op: FaultOp, path: string, offset?: number, length = 0): NativeError {
  return new NativeError({ op, path, errno: rule.errno, code: rule.code, where: at(offset, length),
    note: "injected by HAST_FAULT_INJECT" });
}

/** Throws when an errno rule fires for this call; sleeps when a delay rule does. */
function maybeFail(op: FaultOp, path: string, offset?: number, length = 0): void {
  const rule = injectedFault(op, path);
  if (rule === undefined) return;
  if (rule.delay_ms > 0) return Bun.sleepSync(rule.delay_ms);
  throw injectedError(rule, op, path, offset, length);
}

// ---------------------------------------------------------------------------------------------
// local components

const OPEN_WRITE = 0x1;
const OPEN_DIRECT = 0x2;
const OPEN_CREATE = 0x4;

export interface OpenOptions {
  write: boolean;
  direct?: boolean; // O_DIRECT: buffers, offsets and lengths must be sector aligned
  create?: boolean; // O_CREAT (mode 0600), regular files only; needs write
}

export type FileKind = "file" | "block" | "char" | "directory" | "other";
const KINDS: readonly FileKind[] = ["file", "block", "char", "directory", "other"];

function open(path: string, opts: OpenOptions): number {
  if (opts.create === true && !opts.write) throw new RangeError(`open ${path}: create needs write`);
  maybeFail("open", path);
  const flags = (opts.write ? OPEN_WRITE : 0) | (opts.direct === true ? OPEN_DIRECT : 0) |
    (opts.create === true ? OPEN_CREATE : 0);
  return check(c.hast_open(cPath(path), flags), "open", path);
}

function close(fd: number, path: string): void {
  check(c.hast_close(fd), "close", path);
  maybeFail("close", path);
}

/** Reads up to buf.length bytes at offset; fewer only at end of file. Returns the count. */
function pread(fd: number, path: string, buf: Uint8Array, offset: number): number {
  assertByteCount("pread", path, "offset", offset);
  maybeFail("pread", path, offset, buf.length);
  return check(c.hast_pread(fd, buf, buf.length, offset), "pread", path, offset, buf.length);
}

/** Writes all of buf at offset (C retries short writes). Returns buf.length. */
function pwrite(fd: number, path: string, buf: Uint8Array, offset: number): number {
  assertByteCount("pwrite", path, "offset", offset);
  maybeFail("pwrite", path, offset, buf.length);
  return check(c.hast_pwrite(fd, buf, buf.length, offset), "pwrite", path, offset, buf.length);
}

/**
 * Writes all of buf at offset and makes that range durable (RWF_DSYNC: its pages and the device
 * cache, not the file's other dirty pages). Its errors are named as fdatasync's: the range's
 * write-back also reports a write-back error any earlier page of the file met (the kernel reports
 * one per file, to the first sync that looks), so the caller treats it as a failed flush.
 */
function pwriteDurable(fd: number, path: string, buf: Uint8Array, offset: number): number {
  assertByteCount("pwrite", path, "offset", offset);
  maybeFail("pwrite", path, offset, buf.length);
  maybeFail("fdatasync", path);
  return check(c.hast_pwrite_durable(fd, buf, buf.length, offset), "fdatasync", path, offset, buf.length);
}

/** Takes up to buf.length bytes queued on a stream socket the event loop also reads, waiting at
 * most wait_us for some when none are: the count, 0 at end of stream, or -1 when nothing came.
 * Only for callers that know the event loop holds none of the socket's bytes undelivered
 * (src/io/queued-read.ts). */
function recvReady(fd: number, what: string, buf: Uint8Array, wait_us: number): number {
  const rc = Number(c.hast_recv_ready(fd, buf, buf.length, wait_us));
  return rc === -ERRNO.EAGAIN ? -1 : check(rc, "recv", what, undefined, buf.length);
}

/** Whether the page cache holds every page of the range: false where some page is not or a fault
 * rule awaits a read of the path, undefined where the system cannot tell (before Linux 6.5: no
 * cachestat). Asks without starting any I/O. */
function rangeCached(fd: number, path: string, offset: number, length: number): boolean | undefined {
  assertByteCount("pread", path, "offset", offset);
  if (length === 0 || liveFault("pread", path) !== undefined) return false;
  const rc = c.hast_range_cached(fd, offset, length);
  return rc === 1 ? true : rc === 0 ? false : undefined;
}

/** Drops the range's clean pages from the page cache (posix_fadvise DONTNEED) so that the next read
 * comes from the medium; pages still dirty stay. A failure is a NativeError. */
function dropCached(fd: number, path: string, offset: number, length: number): void {
  assertByteCount("pread", path, "offset", offset);
  if (length === 0) return;
  check(c.hast_drop_cached(fd, offset, length), "posix_fadvise", path, offset, length);
}

/** errno values sendfile reports for the socket end. */
const SOCKET_ERRNOS = new Set(["EPIPE", "ECONNRESET", "ENOTCONN", "ETIMEDOUT", "ENOTSOCK", "EHOSTUNREACH", "ENETUNREACH"]
  .map(errnoValue).filter((v): v is number => v !== undefined));

/** sendfile of up to `length` bytes of the file at `offset` to a nonblocking stream socket: the
 * count the socket took now (fewer when it is full), or -1 where the system has no sendfile. A
 * file read error is a NativeError naming the path; a socket's one names `what`. */
function sendfile(sock: number, what: string, fd: number, path: string, offset: number, length: number): number {
  assertByteCount("pread", path, "offset", offset);
  assertByteCount("sendfile", path, "length", length);
  const rc = Number(c.hast_sendfile(sock, fd, offset, length));
  if (rc === -ERRNO.EOPNOTSUPP) return -1;
  if (rc === -ERRNO.EAGAIN) return 0;
  // sendfile does not say which end failed; errors of a socket are named for it.
  if (rc < 0 && SOCKET_ERRNOS.has(-rc)) return check(rc, "sendfile", what, undefined, length);
  return check(rc, "sendfile", path, offset, length);
}

/** A pipe for spliceIn ([read end, write end]), or null where the system has no splice. */
function splicePipe(): [number, number] | null {
  const fds = new Int32Array(2);
  const rc = c.hast_splice_pipe(fds);
  if (rc === -ERRNO.EOPNOTSUPP) return null;
  check(rc, "pipe", "splice");
  return [fds[0]!, fds[1]!];
}

export interface SpliceResult {
  /** Bytes taken from the socket (0: none queued, even after the wait). */
  taken: number;
  /** The write of those bytes into the file failed (they are taken all the same). */
  error: NativeError | null;
}

const spliceIo = new BigInt64Array(2);

/** Moves up to `length` bytes queued on a stream socket the event loop also reads (as recvReady)
 * into the file at `offset` through `pipe`, or discards them when fd < 0. A fault rule for a
 * pwrite of the path fails the write (the bytes are then discarded). */
function spliceIn(sock: number, what: string, pipe: [number, number], fd: number, path: string, offset: number, length: number, wait_us: number): SpliceResult {
  assertByteCount("pwrite", path, "offset", offset);
  assertByteCount("splice", what, "length", length);
  // A rule fires only for a call that moved bytes (as a pwrite, which always has some): calls
  // that find nothing queued yet are part of the same write. An errno rule's bytes are discarded.
  const injected = fd >= 0 && liveFault("pwrite", path)?.delay_ms === 0;
  const rc = c.hast_splice_in(sock, pipe[0], pipe[1], injected ? -1 : fd, offset, length, wait_us, spliceIo);
  if (rc === -ERRNO.EAGAIN) return { taken: 0, error: null };
  check(rc, "splice", what, undefined, length);
  const taken = Number(spliceIo[0]);
  const errno = Number(spliceIo[1]);
  try {
    if (fd >= 0) maybeFail("pwrite", path, offset, taken);
  } catch (err) {
    return { taken, error: err as NativeError };
  }
  return { taken, error: errno !== 0 ? new NativeError({ op: "pwrite", path, errno, where: at(offset, taken) }) : null };
}

/** A second descriptor of fd (close-on-exec); `what` names it in errors. */
function dup(fd: number, what: string): number {
  return check(c.hast_dup(fd), "dup", what);
}

function fdatasync(fd: number, path: string): void {
  maybeFail("fdatasync", path);
  check(c.hast_fdatasync(fd), "fdatasync", path);
}

/** open for reading on Bun's thread pool (close-on-exec, as node:fs opens), for a caller whose
 * event loop must not wait on a device that hangs in open: the descriptor. */
function openReadAsync(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    startOnPool("open", path, reject, () =>
      fsOpen(path, "r", (err, fd) => (err === null ? resolve(fd) : reject(fsError(err, "open", path)))));
  });
}

/** close on Bun's thread pool: the last close of a disk writes its dirty pages back first. An
 * injected failure still closes, as close() does. */
function closeAsync(fd: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fsClose(fd, (err) => {
      if (err !== null) return reject(fsError(err, "close", path));
      try {
        maybeFail("close", path);
        resolve();
      } catch (e) {
        reject(e as NativeError);
      }
    });
  });
}

/** fdatasync on Bun's thread pool, so the event loop goes on serving while the disk writes its
 * cache out. The caller keeps fd open until the promise settles. */
function fdatasyncAsync(fd: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    startOnPool("fdatasync", path, reject, () =>
      fsFdatasync(fd, (err) => (err === null ? resolve() : reject(fsError(err, "fdatasync", path)))));
  });
}

/** Copies what the page cache holds of buf's range, at once: the count (fewer than buf.length
 * where the rest would wait for the disk, or at end of file), 0 where the system cannot tell
 * (see hast_pread_cached) or a fault rule awaits the read (preadAsync fires it). */
function preadCached(fd: number, path: string, buf: Uint8Array, offset: number): number {
  assertByteCount("pread", path, "offset", offset);
  if (liveFault("pread", path) !== undefined) return 0;
  const rc = Number(c.hast_pread_cached(fd, buf, buf.length, offset));
  return rc === -ERRNO.EAGAIN || rc === -ERRNO.EOPNOTSUPP ? 0 : check(rc, "pread", path, offset, buf.length);
}

/** pread on Bun's thread pool: fills buf from offset (fewer bytes only at end of file) while the
 * event loop goes on serving. Resolves with the count. The caller keeps fd open until it settles. */
function preadAsync(fd: number, path: string, buf: Uint8Array, offset: number): Promise<number> {
  assertByteCount("pread", path, "offset", offset);
  return new Promise((resolve, reject) => {
    let got = 0;
    const run = () => fsRead(fd, buf, got, buf.length - got, offset + got, (err, n) => {
      if (err !== null) return reject(fsError(err, "pread", path, offset, buf.length));
      got += n;
      if (n === 0 || got === buf.length) resolve(got);
      else run();
    });
    startOnPool("pread", path, reject, run, offset, buf.length);
  });
}

/** Starts a thread-pool call as a fault rule says: at once, `delay_ms` late without blocking the
 * event loop, or not at all (rejected with the injected errno). */
function startOnPool(op: FaultOp, path: string, reject: (err: NativeError) => void, run: () => void, offset?: number, length = 0): void {
  const rule = injectedFault(op, path);
  if (rule === undefined) return run();
  if (rule.delay_ms === 0) return reject(injectedError(rule, op, path, offset, length));
  setTimeout(run, rule.delay_ms);
}

/** node:fs's error for an operation, named as the synchronous calls name theirs. */
function fsError(err: NodeJS.ErrnoException, op: string, path: string, offset?: number, length = 0): NativeError {
  const errno = errnoValue(err.code ?? "") ?? Math.abs(err.errno ?? ERRNO.EIO);
  return new NativeError({ op, path, errno, where: at(offset, length) });
}

function fsync(fd: number, path: string): void {
  maybeFail("fsync", path);
  check(c.hast_fsync(fd), "fsync", path);
}

/** Punch hole (files) or BLKDISCARD / DIOCGDELETE (disks); a discarded file range reads zero. */
function discard(fd: number, path: string, offset: number, length: number): void {
  assertByteCount("discard", path, "offset", offset);
  assertByteCount("discard", path, "length", length);
  maybeFail("discard", path, offset, length);
  check(c.hast_discard(fd, offset, length), "discard", path, offset, length);
}

/** ZERO_RANGE (files, else written zeroes) or BLKZEROOUT (disks): the range reads back zero. */
function zeroRange(fd: number, path: string, offset: number, length: number): void {
  assertByteCount("zero-range", path, "offset", offset);
  assertByteCount("zero-range", path, "length", length);
  maybeFail("zero-range", path, offset, length);
  check(c.hast_zero_range(fd, offset, length), "zero-range", path, offset, length);
}

/** Writes zeroes over the range as a pwrite would (page cache, no device round trip, the range
 * stays allocated): the secondary's answer to a hole. Fault rules for "pwrite" apply. */
function pwriteZeroes(fd: number, path: string, offset: number, length: number): void {
  assertByteCount("pwrite", path, "offset", offset);
  assertByteCount("pwrite", path, "length", length);
  maybeFail("pwrite", path, offset, length);
  check(c.hast_pwrite_zeroes(fd, offset, length), "pwrite", path, offset, length);
}

/** Whether every byte of data is zero, at the C library's memcmp speed (no I/O; no errors). */
function isZero(data: Uint8Array): boolean {
  return data.length === 0 || c.hast_is_zero(data, data.length) === 1;
}

/** Size in bytes: st_size for files, BLKGETSIZE64 / DIOCGMEDIASIZE for disks. */
function mediaSize(fd: number, path: string): number {
  maybeFail("media-size", path);
  const size = check(c.hast_media_size(fd), "media-size", path);
  if (!Number.isSafeInteger(size)) throw new RangeError(`media-size ${path}: ${size} bytes is too large`);
  return size;
}

/** Logical sector size: 512 for files, BLKSSZGET / DIOCGSECTORSIZE for disks. */
function sectorSize(fd: number, path: string): number {
  maybeFail("sector-size", path);
  return check(c.hast_sector_size(fd), "sector-size", path);
}

/** What fd refers to; "block" means a disk (a FreeBSD GEOM provider counts as one). */
function kind(fd: number, path: string): FileKind {
  maybeFail("kind", path);
  const value = check(c.hast_kind(fd), "kind", path);
  const name = KINDS[value];
  if (name === undefined) throw new Error(`kind ${path}: native library returned unknown kind ${value}`);
  return name;
}

/** Non-blocking exclusive flock(); fails with EWOULDBLOCK while another open holds it. */
function lockExclusive(fd: number, path: string): void {
  maybeFail("lock", path);
  const rc = c.hast_lock_exclusive(fd);
  if (rc === -ERRNO.EWOULDBLOCK) {
    throw new NativeError({ op: "lock", path, errno: ERRNO.EWOULDBLOCK, code: "EWOULDBLOCK",
      reason: "already locked by another open of this component (another hastd or hastctl?)" });
  }
  check(rc, "lock", path);
}

// ---------------------------------------------------------------------------------------------
// sockets and the Linux kernel nbd client (platform.md 3)

/** A connected AF_UNIX stream socket pair (close-on-exec); both descriptors belong to the caller. */
function socketpair(): [number, number] {
  const fds = new Int32Array(2);
  check(c.hast_socketpair(fds), "socketpair", "AF_UNIX SOCK_STREAM");
  return [fds[0]!, fds[1]!];
}

/** Id of a generic netlink family ("nbd" exists once the module is loaded); ENOENT when absent. */
function genlFamily(name: string): number {
  return check(c.hast_genl_family(cPath(name)), "genl-family", `"${name}"`);
}

export interface NbdAttachment {
  /** N of /dev/nbdN. */
  index: number;
  /** How it was attached: generic netlink, or the ioctl fallback (a C thread sits in NBD_DO_IT). */
  via: "netlink" | "ioctl";
}

/** Longest backend identifier (NBD_ATTR_BACKEND_IDENTIFIER, shown in /sys/block/nbdN/backend). */
export const NBD_IDENTIFIER_BYTES_MAX = 127;

/** One line saying what is missing or not allowed, for the errors an operator is likely to meet. */
function nbdReason(errno: number): string | undefined {
  if (errno === ERRNO.ENODEV) return "no kernel nbd: neither the generic netlink family \"nbd\" nor /dev/nbd0 exists (load it: modprobe nbd)";
  if (errno === ERRNO.EBUSY) return "every /dev/nbdN already has a client (raise the module's nbds_max)";
  if (errno === ERRNO.EPERM) return "not permitted: attaching kernel nbd needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)";
  if (errno === ERRNO.ENOTSUP) return "kernel nbd exists only on Linux";
  return undefined;
}

function nbdCheck(rc: number, op: string, path: string): number {
  if (rc >= 0) return rc;
  throw new NativeError({ op, path, errno: -rc, reason: nbdReason(-rc) });
}

/**
 * Hands sockFd (already in transmission phase: no handshake, simple replies) to a kernel nbd
 * device of size_bytes; netlink first, the ioctls on a free /dev/nbdN when the family is missing.
 * The kernel keeps its own reference: the caller may close sockFd afterwards.
 */
function nbdAttach(sockFd: number, size_bytes: number, block_bytes: number, server_flags: number,
  timeout_s: number, identifier: string): NbdAttachment {
  const path = `socket fd ${sockFd}`;
  assertByteCount("nbd-attach", path, "size", size_bytes);
  const name = cPath(identifier);
  if (name.byteLength - 1 > NBD_IDENTIFIER_BYTES_MAX) {
    throw new RangeError(`nbd-attach ${path}: identifier "${identifier}" is longer than ${NBD_IDENTIFIER_BYTES_MAX} bytes`);
  }
  const via_ioctl = new Int32Array(1);
  const index = nbdCheck(c.hast_nbd_attach(sockFd, size_bytes, block_bytes, server_flags, timeout_s, name, via_ioctl),
    "nbd-attach", path);
  return { index, via: via_ioctl[0] === 1 ? "ioctl" : "netlink" };
}

/** Disconnects /dev/nbd<index> (netlink NBD_CMD_DISCONNECT, else NBD_DISCONNECT + NBD_CLEAR_SOCK). */
function nbdDetach(index: number): void {
  if (!Number.isInteger(index) || index < 0) throw new RangeError(`nbd-detach: index ${index} is not a non-negative integer`);
  nbdCheck(c.hast_nbd_detach(index), "nbd-detach", `/dev/nbd${index}`);
}

// ---------------------------------------------------------------------------------------------
// FreeBSD GEOM Gate

/** ENOTSUP off FreeBSD, where the GEOM Gate entry points only refuse. */
function ggateCall(rc: number, op: string, path: string): number {
  if (rc === -ERRNO.ENOTSUP) {
    throw new NativeError({ op, path, errno: ERRNO.ENOTSUP, code: "ENOTSUP", note: "GEOM Gate exists only on FreeBSD" });
  }
  return check(rc, op, path);
}

/** Sizes, field offsets and ioctl numbers of the GEOM Gate structures as compiled (platform.md 4). */
function ggateLayout(): Map<string, number> {
  const buf = new Uint8Array(4096);
  const used = c.hast_ggate_layout(buf, buf.length);
  if (used < 0 || used >= buf.length) throw new Error(`native ggate layout: bad length ${used}`);
  const layout = new Map<string, number>();
  for (const line of new TextDecoder().decode(buf.subarray(0, used)).split("\n")) {
    if (line === "") continue;
    const [key = "", value = ""] = line.split("=");
    layout.set(key, Number(value));
  }
  return layout;
}

/**
 * Creates /dev/<name> (e.g. "hast/shared") through the /dev/ggctl descriptor ctl_fd. A device left
 * by a crashed predecessor (EEXIST) is taken over with CANCEL: then `recovered` is true.
 */
function ggateCreate(ctl_fd: number, name: string, media_bytes: number, sector_bytes: number,
  timeout_s: number): { unit: number; recovered: boolean } {
  const recovered = new Int32Array(1);
  const unit = ggateCall(c.hast_ggate_create(ctl_fd, cPath(name), media_bytes, sector_bytes, timeout_s, recovered),
    "ggate-create", `/dev/${name}`);
  return { unit, recovered: recovered[0] === 1 };
}

/**
 * Blocks (run it in a Worker) until the kernel queues a request into io (a 56-byte
 * g_gate_ctl_io) with WRITE data copied into data. Returns 0 for a request, or the kernel's
 * gctl_error: ECANCELED (device destroyed: stop) or ENOMEM (a WRITE needs io.gctl_length bytes).
 */
function ggateStart(ctl_fd: number, unit: number, io: Uint8Array, data: Uint8Array): number {
  return ggateCall(c.hast_ggate_start(ctl_fd, unit, io, data, data.length), "ggate-start", `ggate unit ${unit}`);
}

/** Completes the request in io with error (0 or an errno; EAGAIN requeues); READ data in data. */
function ggateDone(ctl_fd: number, unit: number, io: Uint8Array, error: number, data: Uint8Array): void {
  ggateCall(c.hast_ggate_done(ctl_fd, io, error, data), "ggate-done", `ggate unit ${unit}`);
}

/** Requeues every outstanding request of /dev/<name> and returns its unit (takeover). */
function ggateCancel(ctl_fd: number, name: string): number {
  return ggateCall(c.hast_ggate_cancel(ctl_fd, cPath(name)), "ggate-cancel", `/dev/${name}`);
}

/** Destroys the unit; with force, open users see ENXIO and blocked STARTs return ECANCELED. */
function ggateDestroy(ctl_fd: number, unit: number, force: boolean): void {
  ggateCall(c.hast_ggate_destroy(ctl_fd, unit, force ? 1 : 0), "ggate-destroy", `ggate unit ${unit}`);
}

export const native = {
  libPath,
  errnoValue,
  errnoName,
  strerror,
  errno: ERRNO,
  open,
  close,
  pread,
  preadCached,
  preadAsync,
  pwrite,
  pwriteDurable,
  recvReady,
  rangeCached,
  dropCached,
  sendfile,
  splicePipe,
  spliceIn,
  dup,
  fdatasync,
  fdatasyncAsync,
  openReadAsync,
  closeAsync,
  fsync,
  discard,
  zeroRange,
  pwriteZeroes,
  isZero,
  mediaSize,
  sectorSize,
  kind,
  lockExclusive,
  socketpair,
  genlFamily,
  nbdAttach,
  nbdDetach,
  ggateLayout,
  ggateCreate,
  ggateStart,
  ggateDone,
  ggateCancel,
  ggateDestroy,
} as const;
