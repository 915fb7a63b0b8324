// ops/prometheus/hast.rules.yml names only metrics and labels `hastctl metrics` prints: a renamed
// metric would otherwise leave an alert that never fires.
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { formatPrometheus } from "../../../src/ctl/prometheus.ts";
import type { ResourceStatus } from "../../../src/wire/control.ts";
import { parseExposition } from "./exposition.ts";

const RULES = new URL("../../../ops/prometheus/hast.rules.yml", import.meta.url).pathname;

/** A status with every optional part present, so every family is printed. */
const everything: ResourceStatus = {
  name: "r0", role: "primary", provname: "r0", localpath: "/dev/da1", remoteaddr: "tcp://10.0.0.2", replication: "memsync",
  status: "degraded", workerpid: 1, extentsize: 2097152, keepdirty: 64, dirty: 4096, split_brain: true,
  statistics: { reads: 1, writes: 1, deletes: 1, flushes: 1, activemap_updates: 1, direct_bytes: 1, sync_unchanged_bytes: 1, local_errors: { read: 1, write: 0, delete: 0, flush: 0 } },
  sync: { done: 1, total: 2, rate: 1, eta: 1 }, last_sync: { bytes: 1, seconds: 1, finished: "2026-11-27T00:00:00Z" },
  verify: { done: 1, total: 2, rate: 1, eta: 1, differ_bytes: 1, differ_chunks: 1, skipped_bytes: 0, failed_bytes: 0, compare: "sha256", from_offset: 0 },
  last_verify: { finished: "2026-11-27T00:00:00Z", seconds: 1, ended: "complete", total_bytes: 2, same_bytes: 1, differ_bytes: 1, differ_chunks: 1, skipped_bytes: 0, failed_bytes: 0, compare: "sha256", from_offset: 0, resume_offset: 2 },
};

/** The families only a secondary prints. */
const secondary: ResourceStatus = { ...everything, name: "r1", role: "secondary", copy_incomplete: true };

test("every hast_ metric and label the alerting rules use is one hastctl metrics prints", () => {
  const families = parseExposition(formatPrometheus([everything, secondary]));
  const labels = new Map(families.map((f) => [f.name, new Set(f.samples.flatMap((s) => Object.keys(s.labels)))]));
  const doc = Bun.YAML.parse(readFileSync(RULES, "utf8")) as { groups: { rules: { alert: string; expr: string }[] }[] };
  const rules = doc.groups.flatMap((g) => g.rules);
  expect(rules.length).toBeGreaterThan(0);
  let checked = 0;
  for (const rule of rules) {
    // A metric with a selector: hast_name{label="…", …}; or a bare hast_name.
    for (const m of rule.expr.matchAll(/\b(hast_[a-z_]+)(\{([^}]*)\})?/g)) {
      const name = m[1]!;
      expect({ alert: rule.alert, metric: name, printed: labels.has(name) }).toEqual({ alert: rule.alert, metric: name, printed: true });
      for (const l of (m[3] ?? "").matchAll(/([a-z_]+)\s*[!=~]+/g)) {
        expect({ alert: rule.alert, metric: name, label: l[1], printed: labels.get(name)!.has(l[1]!) })
          .toEqual({ alert: rule.alert, metric: name, label: l[1], printed: true });
      }
      checked++;
    }
    // on (…) joins name labels every hast_ metric carries (instance is added by the scrape).
    for (const on of rule.expr.matchAll(/\bon \(([^)]*)\)/g)) {
      for (const l of on[1]!.split(",").map((x) => x.trim())) expect(["instance", "resource"]).toContain(l);
    }
  }
  expect(checked).toBeGreaterThanOrEqual(rules.length);
});
