// /dev/hast/<provname> on FreeBSD through GEOM Gate (platform.md 4), as hastd's primary does:
// CREATE "hast/<provname>" on /dev/ggctl (a device left by a crashed worker is taken over with
// CANCEL), then a receive thread loops on the blocking START ioctl and this thread serves each
// request on the BlockBackend and answers it with DONE; DESTROY (forced) at the end.
//
// UNTESTED ON FREEBSD. Nothing here has run against a real /dev/ggctl: the structure layouts
// and ioctl numbers are checked on Linux (test/unit/native/ggate-layout.test.ts) and the request
// dispatch (serveGgateRequest) runs against a MemoryBackend; the Worker, the ioctls and the
// takeover wait for a FreeBSD host.
//
// Threads: a blocking ioctl blocks the whole JS thread (platform.md 5.1), so START runs in a
// Worker (ggate-worker.ts). Requests live in a SharedArrayBuffer pool of SLOT_COUNT slots, each
// a g_gate_ctl_io header plus a MAXPHYS data area: the worker claims a free slot, STARTs into
// it and posts the slot number; this thread serves the request from the slot, DONEs it and
// frees the slot. START and DONE on one descriptor from two threads is what hastd does too.
import { existsSync, lstatSync, mkdirSync, symlinkSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { EX_TEMPFAIL } from "../core/sysexits.ts";
import { native } from "../native.ts";
import { isCompiled } from "../io/self.ts";
import { BackendError, type BlockBackend } from "./block-backend.ts";
import type { DeviceGate, DeviceOptions } from "./device.ts";

const GGCTL_PATH = "/dev/ggctl";
/** Where the kernel creates the provider for the name "hast/<provname>". */
const KERNEL_DEVDIR = "/dev/hast";
/** In-flight requests at most (hastd keeps 256 hios; GEOM queues the rest in the kernel). */
export const SLOT_COUNT = 32;
/** MAXPHYS on FreeBSD 13+ (amd64, arm64): GEOM never hands a gate a larger request. */
export const SLOT_DATA_BYTES = 1024 * 1024;
/** Room for a g_gate_ctl_io (56 bytes) at the start of each slot, keeping data 64-byte aligned. */
const SLOT_IO_BYTES = 64;
/** Timeout sweep of the kernel (seconds): off, as in hastd; replication has its own timeouts. */
const KERNEL_TIMEOUT_S = 0;
const DRAIN_TIMEOUT_MS = 10_000;
const WORKER_EXIT_TIMEOUT_MS = 5_000;

export const SLOT_FREE = 0;
export const SLOT_BUSY = 1;

/** bio_cmd values (sys/bio.h). */
export const BIO = { READ: 0x01, WRITE: 0x02, DELETE: 0x03, GETATTR: 0x04, FLUSH: 0x05, SPEEDUP: 0x0a } as const;

export interface GgateWorkerInit {
  ctl_fd: number;
  unit: number;
  slot_count: number;
  slot_data_bytes: number;
  /** [slot states..., control: stopping flag, free-slot generation] */
  sab: SharedArrayBuffer;
  data_sab: SharedArrayBuffer;
}

export type GgateWorkerMessage =
  | { kind: "request"; slot: number }
  | { kind: "stopped"; reason: string }
  | { kind: "failed"; message: string };

/** Views on the shared pool, the same in both threads. */
export function openSlotPool(init: Pick<GgateWorkerInit, "slot_count" | "slot_data_bytes" | "sab" | "data_sab">) {
  const stride = SLOT_IO_BYTES + init.slot_data_bytes;
  const bytes = new Uint8Array(init.data_sab);
  return {
    states: new Int32Array(init.sab, 0, init.slot_count),
    /** [0] stopping (1 = do not START again), [1] bumped and notified whenever a slot is freed. */
    control: new Int32Array(init.sab, init.slot_count * 4, 2),
    io: (slot: number) => bytes.subarray(slot * stride, slot * stride + SLOT_IO_BYTES),
    data: (slot: number) => bytes.subarray(slot * stride + SLOT_IO_BYTES, (slot + 1) * stride),
  };
}

function newSlotPool(slot_count: number, slot_data_bytes: number) {
  const shared = {
    slot_count, slot_data_bytes,
    sab: new SharedArrayBuffer((slot_count + 2) * 4),
    data_sab: new SharedArrayBuffer(slot_count * (SLOT_IO_BYTES + slot_data_bytes)),
  };
  return { shared, ...openSlotPool(shared) };
}

/** The request START left in a slot's g_gate_ctl_io, read at the offsets the C side compiled. */
export interface GgateRequest {
  seq: bigint;
  cmd: number;
  offset: number;
  length: number;
}

const layout = native.ggateLayout();
function at(field: string): number {
  const offset = layout.get(`io.${field}`);
  if (offset === undefined) throw new Error(`native ggate layout has no io.${field}`);
  return offset;
}
const IO_AT = { seq: at("gctl_seq"), cmd: at("gctl_cmd"), offset: at("gctl_offset"), length: at("gctl_length") };

export function readGgateRequest(io: Uint8Array): GgateRequest {
  const view = new DataView(io.buffer, io.byteOffset, io.byteLength);
  return {
    seq: view.getBigUint64(IO_AT.seq, true),
    cmd: view.getUint32(IO_AT.cmd, true),
    offset: Number(view.getBigInt64(IO_AT.offset, true)),
    length: Number(view.getBigInt64(IO_AT.length, true)),
  };
}

/**
 * Serves one request on the backend; returns the errno name to complete it with, or null for
 * success. READ data goes to data[0, length); WRITE data is taken from there.
 */
export async function serveGgateRequest(backend: BlockBackend, req: GgateRequest, data: Uint8Array): Promise<string | null> {
  if (req.cmd === BIO.SPEEDUP) return null; // must be answered, or it leaks in the kernel (4.3)
  if (req.cmd === BIO.FLUSH) return await outcome(backend.flush());
  if (req.cmd !== BIO.READ && req.cmd !== BIO.WRITE && req.cmd !== BIO.DELETE) return "EOPNOTSUPP";
  const aligned = req.offset % backend.block_bytes === 0 && req.length % backend.block_bytes === 0;
  if (!aligned || req.offset < 0 || req.length < 0 || req.offset + req.length > backend.size_bytes) return "EINVAL";
  if (req.cmd === BIO.DELETE) return await outcome(backend.trim(req.offset, req.length));
  // The kernel checks a WRITE's length against the buffer, not a READ's (4.3).
  if (req.length > data.length) return "EIO";
  const span = data.subarray(0, req.length);
  return await outcome(req.cmd === BIO.READ ? backend.read(req.offset, span) : backend.write(req.offset, span, false));
}

async function outcome(op: Promise<void> | null): Promise<string | null> {
  try {
    await op;
    return null;
  } catch (err) {
    return err instanceof BackendError ? err.code : "EIO";
  }
}

/** Worker script: beside this file from source, at its repo path inside a compiled binary. */
function workerUrl(): string {
  return isCompiled() ? "./src/gate/ggate-worker.ts" : new URL("./ggate-worker.ts", import.meta.url).href;
}

function openGgctl(): number {
  if (!existsSync(GGCTL_PATH)) {
    throw new Error(`${GGCTL_PATH} is missing: load the GEOM Gate module (kldload geom_gate, or geom_gate_load="YES" in /boot/loader.conf)`);
  }
  return native.open(GGCTL_PATH, { write: true });
}

/** devdir other than /dev/hast (tests): a symlink there to the kernel's device. */
function linkInto(devdir: string, provname: string, target: string): string | null {
  if (devdir === KERNEL_DEVDIR) return null;
  const link = join(devdir, provname);
  mkdirSync(devdir, { recursive: true, mode: 0o755 });
  if (existsSync(link) || lstatIsLink(link)) unlinkSync(link);
  symlinkSync(target, link);
  return link;
}

function lstatIsLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

export interface GgateOptions extends Pick<DeviceOptions, "provname" | "size_bytes" | "sector_bytes" | "devdir" | "log" | "takeover"> {
  backend: BlockBackend;
}

/** Creates /dev/hast/<provname> served by backend; destroy() drains, DESTROYs and closes. */
export async function createGgateDevice(opts: GgateOptions): Promise<DeviceGate> {
  const name = `hast/${opts.provname}`;
  const kernel_path = `/dev/${name}`;
  const errno = (code: string) => native.errnoValue(code) ?? native.errno.EIO;
  const ctl_fd = openGgctl();
  let unit: number;
  try {
    let created = native.ggateCreate(ctl_fd, name, opts.size_bytes, opts.sector_bytes, KERNEL_TIMEOUT_S);
    if (created.recovered && opts.takeover !== true) {
      // Left by a worker of an earlier primary period: what it queued must not reach the disk now.
      native.ggateDestroy(ctl_fd, created.unit, true);
      opts.log(`Destroyed ${kernel_path} (GEOM Gate unit ${created.unit}) left by a worker of an earlier primary period, with the requests queued on it.`);
      created = native.ggateCreate(ctl_fd, name, opts.size_bytes, opts.sector_bytes, KERNEL_TIMEOUT_S);
    }
    unit = created.unit;
    if (created.recovered) opts.log(`Took over ${kernel_path} (GEOM Gate unit ${unit}) left by a previous worker.`);
  } catch (err) {
    native.close(ctl_fd, GGCTL_PATH);
    throw err;
  }

  const pool = newSlotPool(SLOT_COUNT, SLOT_DATA_BYTES);
  const worker = new Worker(workerUrl());
  let inflight = 0;
  let stopping = false;
  const stopped = Promise.withResolvers<void>();

  const freeSlot = (slot: number) => {
    Atomics.store(pool.states, slot, SLOT_FREE);
    Atomics.add(pool.control, 1, 1);
    Atomics.notify(pool.control, 1);
  };
  const complete = (slot: number, code: string | null) => {
    try {
      native.ggateDone(ctl_fd, unit, pool.io(slot), code === null ? 0 : errno(code), pool.data(slot));
    } catch (err) {
      if (!stopping) opts.log(`${kernel_path}: ${(err as Error).message}`);
    }
    freeSlot(slot);
  };
  const serve = async (slot: number) => {
    inflight++;
    try {
      const req = readGgateRequest(pool.io(slot));
      // After destroy() began, new requests fail fast instead of reaching the disk.
      complete(slot, stopping ? "ENXIO" : await serveGgateRequest(opts.backend, req, pool.data(slot)));
    } finally {
      inflight--;
    }
  };
  worker.onmessage = (event: MessageEvent<GgateWorkerMessage>) => {
    const msg = event.data;
    if (msg.kind === "request") void serve(msg.slot);
    else if (msg.kind === "failed") receiveFailed(msg.message);
    else stopped.resolve();
  };
  worker.onerror = (event) => receiveFailed(event.message);
  // As hastd's ggate_recv: without its receive thread the device hangs, so the worker exits and
  // the main process restarts it (the new one takes the device over with CANCEL).
  const receiveFailed = (message: string) => {
    stopped.resolve();
    if (stopping) return;
    opts.log(`${kernel_path}: GEOM Gate receive thread failed: ${message}; exiting so the worker is restarted.`);
    // The status that makes the main process restart it (WORKER_EXIT_RESTART): any other puts
    // the role back to init, and the device would hang with nobody to serve or destroy it.
    process.exit(EX_TEMPFAIL);
  };
  const init: GgateWorkerInit = { ctl_fd, unit, ...pool.shared };
  worker.postMessage(init);
  const link = linkInto(opts.devdir, opts.provname, kernel_path);

  const destroy = async () => {
    stopping = true;
    Atomics.store(pool.control, 0, 1);
    Atomics.notify(pool.control, 1);
    const deadline = Date.now() + DRAIN_TIMEOUT_MS;
    while (inflight > 0 && Date.now() < deadline) await Bun.sleep(10);
    if (inflight > 0) opts.log(`${kernel_path}: ${inflight} requests still in flight after ${DRAIN_TIMEOUT_MS} ms; destroying anyway.`);
    try {
      native.ggateDestroy(ctl_fd, unit, true); // wakes a blocked START with ECANCELED
    } catch (err) {
      opts.log(`${kernel_path}: ${(err as Error).message}`);
    }
    await Promise.race([stopped.promise, Bun.sleep(WORKER_EXIT_TIMEOUT_MS)]);
    worker.terminate();
    native.close(ctl_fd, GGCTL_PATH);
    if (link !== null && lstatIsLink(link)) unlinkSync(link);
  };
  return { path: link ?? kernel_path, mechanism: `GEOM Gate (unit ${unit})`, destroy };
}
