// The peer protocol versions this node speaks: this build's range, its top lowered by
// HASTD_PROTOCOL_VERSION_MAX to stand in for an older build (tests of mixed-version pairs) or to
// keep a pair on the older version's behaviour while the other node is upgraded.
import { EX_CONFIG, ExitError } from "../core/sysexits.ts";
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from "../wire/peer/index.ts";

export const VERSION_MAX_ENV = "HASTD_PROTOCOL_VERSION_MAX";

export interface ProtocolVersions {
  min: number;
  max: number;
}

/** Throws ExitError (EX_CONFIG) naming the variable when it is set to anything but a version here. */
export function protocolVersions(env: Record<string, string | undefined> = process.env): ProtocolVersions {
  const text = env[VERSION_MAX_ENV];
  if (text === undefined || text === "") return { min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX };
  const max = /^[0-9]{1,3}$/.test(text) ? Number(text) : NaN;
  if (!(max >= PROTOCOL_VERSION_MIN && max <= PROTOCOL_VERSION_MAX)) {
    throw new ExitError(
      `${VERSION_MAX_ENV}=${JSON.stringify(text)} is not a protocol version this build speaks (${PROTOCOL_VERSION_MIN} to ${PROTOCOL_VERSION_MAX})`,
      EX_CONFIG,
    );
  }
  return { min: PROTOCOL_VERSION_MIN, max };
}

/** "1 to 4" (or "1" alone), for the start-up log line. */
export function describeVersions(v: ProtocolVersions): string {
  return v.min === v.max ? `${v.min}` : `${v.min} to ${v.max}`;
}
