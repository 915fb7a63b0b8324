#!/usr/bin/env bun
// Names for JavaScriptCore's JIT code in `perf report`: converts the JITDump file a Bun process
// writes when started with
//   BUN_JSC_useJITDump=1 BUN_JSC_jitDumpDirectory=<dir>
// (one jit-<tid>-<pid>.dump per process) into /tmp/perf-<pid>.map, the symbol file perf reads for
// anonymous executable memory. Without it perf shows JIT frames as bare addresses
// (docs/performance.md, "Sixteenth round"). Usage:
//   bun bench/jit-perf-map.ts <dir>/jit-<tid>-<pid>.dump
// then `perf report` on a recording of that process. Only JIT_CODE_LOAD records are read
// (the format: linux/tools/perf/Documentation/jitdump-specification.txt).
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";

const JIT_CODE_LOAD = 0;
const RECORD_HEADER_BYTES = 16; // id u32, total_size u32, timestamp u64
const LOAD_FIXED_BYTES = 40; // pid u32, tid u32, vma u64, code_addr u64, code_size u64, code_index u64

const file = process.argv[2];
const pid = file ? /^jit-\d+-(\d+)\.dump$/.exec(basename(file))?.[1] : undefined;
if (!file || !pid) {
  console.error("usage: bun bench/jit-perf-map.ts <dir>/jit-<tid>-<pid>.dump");
  process.exit(64); // EX_USAGE
}
const bytes = readFileSync(file);
const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
if (bytes.byteLength < 12 || view.getUint32(0, true) !== 0x4a695444) {
  console.error(`${file}: not a JITDump file (no JiTD magic)`);
  process.exit(65); // EX_DATAERR
}
const lines: string[] = [];
for (let at = view.getUint32(8, true); at + RECORD_HEADER_BYTES <= bytes.byteLength;) {
  const id = view.getUint32(at, true);
  const size = view.getUint32(at + 4, true);
  if (size < RECORD_HEADER_BYTES || at + size > bytes.byteLength) break; // a record cut off as the process ended
  if (id === JIT_CODE_LOAD) {
    const fixed = at + RECORD_HEADER_BYTES;
    const code_addr = view.getBigUint64(fixed + 16, true);
    const code_size = view.getBigUint64(fixed + 24, true);
    const name_at = fixed + LOAD_FIXED_BYTES;
    const name_end = bytes.indexOf(0, name_at);
    const name = bytes.subarray(name_at, name_end < 0 ? name_at : name_end).toString("utf8").replace(/\s+/g, "_");
    lines.push(`${code_addr.toString(16)} ${code_size.toString(16)} ${name}`);
  }
  at += size;
}
const out = `/tmp/perf-${pid}.map`;
writeFileSync(out, lines.join("\n") + "\n");
console.log(`${out}: ${lines.length} symbols`);
