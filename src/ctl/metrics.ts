// hastctl metrics [all|name ...]: the status of resources as Prometheus metrics (docs/operations.md).
// A resource whose worker does not answer is in the exposition (hast_up 0), so it exits 0: the
// scrape file is replaced (`metrics > f.tmp && mv`) and the alert on hast_up can fire. Only a name
// hastd does not know fails it.
import { ControlError } from "../wire/control.ts";
import { formatPrometheus } from "./prometheus.ts";
import { statusCommand } from "./request.ts";

export default statusCommand("metrics", "show the status of resources as Prometheus metrics", formatPrometheus,
  (error) => error === ControlError.NOENTRY);
