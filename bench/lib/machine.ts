// What the numbers were measured on: CPU, memory, kernel, filesystems, tool versions.
import { cpus, totalmem } from "node:os";
import { readFileSync } from "node:fs";

export interface MachineInfo {
  cpu_model: string;
  cpus: number;
  memory_gib: number;
  kernel: string;
  bun: string;
  tools: Record<string, string>;
}

export function machineInfo(): MachineInfo {
  return {
    cpu_model: cpus()[0]?.model ?? "unknown",
    cpus: cpus().length,
    memory_gib: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    bun: Bun.version,
    tools: {
      fio: firstLine(["fio", "--version"]),
      nbdkit: firstLine(["nbdkit", "--version"]),
      "qemu-nbd": firstLine(["qemu-nbd", "--version"]),
    },
  };
}

/** Filesystem type of the directory's mount (tmpfs, ext4, ...). */
export function filesystemOf(path: string): string {
  const out = Bun.spawnSync(["stat", "-f", "-c", "%T", path]).stdout.toString().trim();
  return out || "unknown";
}

function firstLine(argv: string[]): string {
  const p = Bun.spawnSync(argv, { stdout: "pipe", stderr: "pipe" });
  return `${p.stdout.toString()}${p.stderr.toString()}`.split("\n")[0]!.trim();
}
