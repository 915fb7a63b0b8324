import { expect, test } from "bun:test";
import { describeVersions, protocolVersions, VERSION_MAX_ENV } from "../../../src/daemon/protocol-versions.ts";
import { EX_CONFIG, ExitError } from "../../../src/core/sysexits.ts";
import { PROTOCOL_VERSION_MAX, PROTOCOL_VERSION_MIN } from "../../../src/wire/peer/index.ts";

test("without the variable a node speaks every version of this build", () => {
  expect(protocolVersions({})).toEqual({ min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX });
  expect(protocolVersions({ [VERSION_MAX_ENV]: "" })).toEqual({ min: PROTOCOL_VERSION_MIN, max: PROTOCOL_VERSION_MAX });
  expect(describeVersions({ min: 1, max: 4 })).toBe("1 to 4");
  expect(describeVersions({ min: 1, max: 1 })).toBe("1");
});

test("HASTD_PROTOCOL_VERSION_MAX lowers the top of the range", () => {
  for (let v = PROTOCOL_VERSION_MIN; v <= PROTOCOL_VERSION_MAX; v++) {
    expect(protocolVersions({ [VERSION_MAX_ENV]: String(v) })).toEqual({ min: PROTOCOL_VERSION_MIN, max: v });
  }
});

test("anything but a version of this build is refused, naming the variable, with EX_CONFIG", () => {
  for (const bad of ["0", String(PROTOCOL_VERSION_MAX + 1), "3.0", " 3", "-1", "three", "0x3", "1e0", "0003"]) {
    let caught: unknown;
    try {
      protocolVersions({ [VERSION_MAX_ENV]: bad });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ExitError);
    expect((caught as ExitError).exit_code).toBe(EX_CONFIG);
    expect((caught as Error).message).toBe(
      `${VERSION_MAX_ENV}=${JSON.stringify(bad)} is not a protocol version this build speaks (${PROTOCOL_VERSION_MIN} to ${PROTOCOL_VERSION_MAX})`,
    );
  }
});
