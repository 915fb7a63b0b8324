// hastctl metrics [all|name ...]: the status of resources as Prometheus metrics (docs/operations.md).
import { formatPrometheus } from "./prometheus.ts";
import { statusCommand } from "./request.ts";

export default statusCommand("metrics", "show the status of resources as Prometheus metrics", formatPrometheus);
