// Secondary-side check of a decoded request against the resource. A failing request is answered
// with REPLY EINVAL and nothing is executed; the frame was consumed whole, so the stream stays in
// step (HAST desynchronized here: sharp edge 16).

export interface RequestRange {
  kind: "read" | "write" | "delete";
  offset: number;
  length: number;
}

export function requestRangeProblem(request: RequestRange, datasize_bytes: number, sector_bytes: number): string | null {
  const { kind, offset, length } = request;
  if (offset % sector_bytes !== 0 || length % sector_bytes !== 0) {
    return `${kind} offset ${offset} length ${length} not aligned to the ${sector_bytes}-byte sector`;
  }
  if (offset + length > datasize_bytes) return `${kind} ends at ${offset + length}, beyond datasize ${datasize_bytes}`;
  return null;
}
