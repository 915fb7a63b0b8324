// hastctl create (spec 2.1): write fresh metadata and a clean activemap on the local component.
// Offline: it does not talk to hastd, but it locks the component, so it refuses one in use.
import { defineCommand } from "citty";
import { computeLayout, LayoutError } from "../core/layout.ts";
import { FLAG_SYNC_FULL_ON_CONNECT, type Metadata } from "../core/metadata.ts";
import { EX_DATAERR, EX_IOERR, EX_USAGE, ExitError } from "../core/sysexits.ts";
import { MetadataStore } from "../io/metadata-store.ts";
import { NativeError } from "../native.ts";
import { checkOptions, commonArgs, ExitStatus, loadCtlConfig, openComponents, sizeOption, warn } from "./common.ts";
import { outLine } from "./output.ts";

const args = {
  ...commonArgs,
  e: { type: "string", description: "extent size (dirty-tracking granularity), default 2M", valueHint: "extentsize" },
  k: { type: "string", description: "keepdirty: recently written extents kept dirty, default 64", valueHint: "keepdirty" },
  m: { type: "string", description: "media size to use (the smaller of the two nodes' components)", valueHint: "mediasize" },
  "initial-sync": {
    type: "string", valueHint: "full|none",
    description: "first connection of a new pair: copy the primary's whole data (full, default) or nothing (none: both components are known to be identical, e.g. zeroed)",
  },
} as const;

export default defineCommand({
  meta: { name: "create", description: "initialize metadata of local components" },
  args,
  run({ args: a }) {
    checkOptions(a, args);
    if (a._.length === 0) throw new ExitError("create needs at least one resource name", EX_USAGE);
    const extentsize = sizeOption(a.e, "extent size") ?? 0;
    const keepdirty = sizeOption(a.k, "keepdirty") ?? 0;
    const mediasize = sizeOption(a.m, "media size") ?? 0;
    const initial = a["initial-sync"] ?? "full";
    if (initial !== "full" && initial !== "none") throw new ExitError(`--initial-sync must be full or none, not ${JSON.stringify(initial)}`, EX_USAGE);
    const config = loadCtlConfig(a.c);
    const exit = new ExitStatus();
    const created: Record<string, unknown>[] = [];
    for (const { name, resource, disk } of openComponents(config, a._, true, exit)) {
      try {
        if (mediasize > disk.size_bytes) {
          warn(`${name}: media size ${mediasize} is larger than ${resource.localpath} (${disk.size_bytes} bytes)`);
          exit.set(EX_DATAERR);
          continue;
        }
        const layout = computeLayout({ mediasize: mediasize || disk.size_bytes, sectorsize: disk.sector_bytes, extentsize, keepdirty });
        const meta: Metadata = {
          resource: name, datasize: layout.datasize, extentsize: layout.extentsize, keepdirty: layout.keepdirty,
          localoff: layout.localoff, mapsize: layout.mapsize, sectorsize: layout.sectorsize,
          resuid: 0n, localcnt: 0n, remotecnt: 0n, prevrole: "init",
          flags: initial === "full" ? FLAG_SYNC_FULL_ON_CONNECT : 0,
        };
        new MetadataStore(disk).initialize(meta);
        created.push({ name, localpath: resource.localpath, datasize: meta.datasize, extentsize: meta.extentsize,
          keepdirty: meta.keepdirty, localoff: meta.localoff, initial_sync: initial });
      } catch (err) {
        if (err instanceof LayoutError) {
          warn(`${name}: ${err.message}`);
          exit.set(EX_DATAERR);
        } else if (err instanceof NativeError) {
          warn(`${name}: unable to write metadata: ${err.message}`);
          exit.set(EX_IOERR);
        } else throw err;
      }
    }
    if (a.json) outLine(JSON.stringify(created, null, 2));
    return exit.code;
  },
});
