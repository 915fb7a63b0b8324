// What a SIGHUP does to a resource whose configuration changed (spec 3.8, item 6): restart it,
// reload its primary worker in place, or take settings only a primary reads in any role.
import { describe, expect, test } from "bun:test";
import type { ResourceConfig, Role } from "../../../src/config/index.ts";
import { resourceChanged, resourceNeedsRestart } from "../../../src/daemon/reload.ts";
import { conf } from "../config/helpers.ts";

/** r0, with `statements` in its block and `on` in this node's `on` block. */
function resource(statements: string, on = "remote 10.0.0.2"): ResourceConfig {
  return conf(`resource r0 {\n ${statements}\n on alpha { ${on} }\n on beta { remote 10.0.0.1 }\n local /dev/sdb\n}\n`).resources[0]!;
}

const ROLES: Role[] = ["init", "secondary", "primary"];
const base = resource("");
const restarts = (next: ResourceConfig) => ROLES.filter((role) => resourceNeedsRestart(base, next, role));

describe("reload of a changed resource", () => {
  test("nothing changed: nothing to do", () => {
    expect(resourceChanged(base, resource(""))).toBe(false);
  });

  test("provider name or local component: a restart in every role", () => {
    for (const next of [resource("name other"), resource("", "remote 10.0.0.2 local /dev/sdc")]) {
      expect(resourceChanged(base, next)).toBe(true);
      expect(restarts(next)).toEqual(ROLES);
    }
  });

  test("FreeBSD's reloadable settings: in place on a primary, a restart in the other roles", () => {
    const changes = ["replication fullsync", "checksum crc32", "compression zstd", "timeout 7", "exec /bin/true", "metaflush off"].map((st) => [st, resource(st)] as const);
    for (const [what, next] of [...changes, ["source", resource("", "remote 10.0.0.2 source 10.0.0.9")] as const, ["remote", resource("", "remote 10.0.0.3")] as const]) {
      expect(resourceChanged(base, next)).toBe(true);
      expect([what, restarts(next)]).toEqual([what, ["init", "secondary"]]);
    }
  });

  test("settings only a primary reads (and the secret, read at the next connection): in place in every role", () => {
    // A secondary restarted for them would drop its link, and the pass or verification running.
    for (const statements of ["sync_rate 10M", "verify_rate 10M", "resync_digest on", "secret s3cr3tw0rd"]) {
      expect(resourceChanged(base, resource(statements))).toBe(true);
      expect([statements, restarts(resource(statements))]).toEqual([statements, []]);
    }
  });
});
