// The secondary's side of replication (spec 6.3, 9) as pure logic: validate each request from
// the primary, answer memsync writes early ("received") before the disk write, run the local
// I/O, reply with the result. Its own activemap is cleared once, at the first request after a
// handshake (by then the primary has merged and persisted it).
import type { ActiveMap, MapWrite } from "./activemap.ts";
import type { RequestKind } from "./primary-engine.ts";

export type SecondaryError = "EINVAL" | "EIO" | "ENOSPC" | "ENOTSUP";

export interface SecondaryRequest {
  seq: bigint;
  kind: RequestKind;
  offset: number;
  length: number;
  memsync: boolean;
}

export type SecondaryAction =
  | { type: "map"; write: MapWrite }
  | { type: "local"; seq: bigint; kind: RequestKind; offset: number; length: number }
  | { type: "reply"; seq: bigint; error: SecondaryError | null; received: boolean }
  | { type: "log"; level: "warn" | "error"; message: string };

export interface SecondaryLimits {
  datasize: number;
  sector_bytes: number;
  max_request_bytes: number;
}

export class SecondaryEngine {
  private map_cleared = false;

  constructor(
    private readonly map: ActiveMap,
    private readonly limits: SecondaryLimits,
  ) {}

  request(r: SecondaryRequest): SecondaryAction[] {
    const invalid = this.validate(r);
    if (invalid) {
      return [
        { type: "log", level: "warn", message: `Rejected ${r.kind} request ${r.seq}: ${invalid}.` },
        { type: "reply", seq: r.seq, error: "EINVAL", received: false },
      ];
    }
    const actions: SecondaryAction[] = [];
    if (!this.map_cleared) {
      this.map_cleared = true;
      actions.push({ type: "map", write: this.map.clear() });
    }
    if (r.memsync && r.kind === "write") actions.push({ type: "reply", seq: r.seq, error: null, received: true });
    actions.push({ type: "local", seq: r.seq, kind: r.kind, offset: r.offset, length: r.length });
    return actions;
  }

  localDone(seq: bigint, error: SecondaryError | null): SecondaryAction[] {
    return [{ type: "reply", seq, error, received: false }];
  }

  private validate(r: SecondaryRequest): string | null {
    if (r.seq === 0n) return "sequence number 0";
    if (r.kind === "flush") return r.offset === 0 && r.length === 0 ? null : "flush with a range";
    const { datasize, sector_bytes, max_request_bytes } = this.limits;
    if (!Number.isSafeInteger(r.offset) || !Number.isSafeInteger(r.length) || r.offset < 0 || r.length <= 0) return "bad range";
    if (r.kind !== "delete" && r.length > max_request_bytes) return `length ${r.length} over ${max_request_bytes}`;
    if (r.offset % sector_bytes !== 0 || r.length % sector_bytes !== 0) return `range not aligned to ${sector_bytes}-byte sectors`;
    if (r.offset + r.length > datasize) return `range ends past the data size ${datasize}`;
    return null;
  }
}
