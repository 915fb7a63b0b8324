// Error vocabularies: decode failures (bad input from the peer), peer ERROR codes, REPLY error names.
import { PeerErrorCode, ReplyErrorCode, type PeerErrorName, type ReplyErrorName } from "./constants.ts";
import type { DecodeErrorCode } from "./types.ts";

/** Thrown inside the codec on malformed input and turned into a DecodeResult error at the API boundary. */
export class DecodeFailure {
  constructor(
    readonly code: DecodeErrorCode,
    readonly reason: string,
  ) {}
}

export function fail(code: DecodeErrorCode, reason: string): never {
  throw new DecodeFailure(code, reason);
}

export function replyErrorName(wire_code: number): ReplyErrorName | undefined {
  return nameOf(ReplyErrorCode, wire_code);
}

export function peerErrorName(wire_code: number): PeerErrorName | undefined {
  return nameOf(PeerErrorCode, wire_code);
}

/** Portable reply error for a local I/O failure, from a Node-style error code ("EIO", "ENOSPC", ...). */
export function replyErrorFromSystemCode(code: string | undefined): Exclude<ReplyErrorName, "OK"> {
  switch (code) {
    case "ENOSPC":
    case "EDQUOT":
      return "ENOSPC";
    case "EINVAL":
      return "EINVAL";
    case "ENOTSUP":
    case "EOPNOTSUPP":
      return "ENOTSUP";
    case "ENOTCONN":
      return "ENOTCONN";
    case "ETIMEDOUT":
      return "ETIMEDOUT";
    case "ENOMEM":
      return "ENOMEM";
    case "EROFS":
      return "EROFS";
    default:
      return "EIO";
  }
}

function nameOf<T extends Record<string, number>>(table: T, value: number): (keyof T & string) | undefined {
  for (const name in table) if (table[name] === value) return name;
  return undefined;
}
