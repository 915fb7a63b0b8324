// hastctl dump (spec 2.4): print a component's metadata. Read-only and lock-free, so it is safe
// while hastd runs. A damaged metadata area is reported as such, never as garbage values.
import { defineCommand } from "citty";
import { humanizeBytes } from "../core/humanize.ts";
import { METADATA_AREA_BYTES } from "../core/layout.ts";
import {
  FLAG_COPY_INCOMPLETE, FLAG_RESUID_UNCONFIRMED, FLAG_SYNC_FULL_ON_CONNECT, MetadataError, type MetadataRead, type SlotState,
} from "../core/metadata.ts";
import { EX_DATAERR, EX_NOINPUT } from "../core/sysexits.ts";
import { MetadataStore } from "../io/metadata-store.ts";
import { checkOptions, commonArgs, ExitStatus, loadCtlConfig, openComponents, warn } from "./common.ts";
import { outLine } from "./output.ts";

function popcount(bytes: Uint8Array): number {
  let n = 0;
  for (let b of bytes) for (; b; b &= b - 1) n++;
  return n;
}

const FLAG_NAMES: [number, string][] = [
  [FLAG_SYNC_FULL_ON_CONNECT, "full sync at the next connect"],
  [FLAG_RESUID_UNCONFIRMED, "resuid unconfirmed"],
  [FLAG_COPY_INCOMPLETE, "copy incomplete (not promotable)"],
];

function flagNames(flags: number): string {
  const names = FLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
  return names.length === 0 ? "none" : names.join(", ");
}

function u64(v: bigint): number | string {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString();
}

function slotSummary(s: SlotState): Record<string, unknown> {
  if (s.status === "valid") return { slot: s.slot, status: "valid", generation: u64(s.generation) };
  if (s.status === "blank") return { slot: s.slot, status: "blank" };
  return { slot: s.slot, status: "invalid", error: s.error.message };
}

function describe(name: string, localpath: string, read: MetadataRead, dirty_extents: number) {
  const m = read.meta;
  return {
    name, localpath, stored_name: m.resource, datasize: m.datasize, extentsize: m.extentsize, keepdirty: m.keepdirty,
    localoff: m.localoff, mapsize: m.mapsize, sectorsize: m.sectorsize, resuid: m.resuid.toString(),
    localcnt: u64(m.localcnt), remotecnt: u64(m.remotecnt), prevrole: m.prevrole, flags: m.flags,
    dirty_extents, generation: u64(read.generation), slots: read.slots.map(slotSummary),
    ...(m.stale ? { stale_extents: m.stale.extents, stale_peer_epoch: m.stale.peer_epoch } : {}),
  };
}

export default defineCommand({
  meta: { name: "dump", description: "print metadata of local components" },
  args: commonArgs,
  run({ args: a }) {
    checkOptions(a, commonArgs);
    const config = loadCtlConfig(a.c);
    const exit = new ExitStatus();
    const dumped: ReturnType<typeof describe>[] = [];
    for (const { name, resource, disk } of openComponents(config, a._, false, exit)) {
      if (disk.size_bytes < METADATA_AREA_BYTES) {
        warn(`${name}: ${resource.localpath} is ${disk.size_bytes} bytes, too small to hold HAST metadata (${METADATA_AREA_BYTES} bytes)`);
        exit.set(EX_DATAERR);
        continue;
      }
      try {
        const store = new MetadataStore(disk);
        const read = store.read();
        const d = describe(name, resource.localpath, read, popcount(store.readMap(read.meta.mapsize)));
        dumped.push(d);
        for (const s of read.slots) {
          if (s.status === "invalid") warn(`${name}: ${resource.localpath}: metadata slot ${s.slot} is damaged (${s.error.message}); using slot ${read.slot}`);
        }
        // hastd refuses such a component ("is not part of resource"): say so here too.
        if (read.meta.resource !== name) {
          warn(`${name}: ${resource.localpath} holds the metadata of resource ${read.meta.resource}`);
          exit.set(EX_DATAERR);
        }
        if (read.meta.localoff + read.meta.datasize > disk.size_bytes) {
          warn(`${name}: ${resource.localpath} is ${disk.size_bytes} bytes, smaller than its metadata's data area (${read.meta.localoff + read.meta.datasize} bytes)`);
          exit.set(EX_DATAERR);
        }
        if (a.json) continue;
        outLine(`resource: ${name}${d.stored_name !== name ? ` (the metadata names ${d.stored_name})` : ""}`);
        outLine(`    datasize: ${d.datasize} (${humanizeBytes(d.datasize)})`);
        outLine(`    extentsize: ${d.extentsize} (${humanizeBytes(d.extentsize)})`);
        outLine(`    keepdirty: ${d.keepdirty}`);
        outLine(`    localoff: ${d.localoff}`);
        outLine(`    resuid: ${d.resuid}`);
        outLine(`    localcnt: ${d.localcnt}`);
        outLine(`    remotecnt: ${d.remotecnt}`);
        outLine(`    prevrole: ${d.prevrole}`);
        outLine(`    flags: ${flagNames(d.flags)}`);
        outLine(`    dirty extents: ${d.dirty_extents}`);
        if (d.stale_extents) {
          outLine(`    stale extents: ${d.stale_extents.length} (${d.stale_extents.join(" ")}), to be copied back from the peer ` +
            `(its cache epoch then: ${d.stale_peer_epoch ?? "unknown"})`);
        }
        outLine(`    metadata generation: ${d.generation} (slot ${read.slot})`);
      } catch (err) {
        if (!(err instanceof MetadataError)) {
          warn(`${name}: ${(err as Error).message}`);
          exit.set(EX_NOINPUT);
          continue;
        }
        warn(`${name}: ${resource.localpath}: unreadable metadata: ${err.message}`);
        exit.set(EX_DATAERR);
      }
    }
    if (a.json) outLine(JSON.stringify(dumped, null, 2));
    return exit.code;
  },
});
