// hastctl status [all|name ...]: one line per resource (spec 2.3).
import { formatStatus } from "./format.ts";
import { statusCommand } from "./request.ts";

export default statusCommand("status", "show the status of resources", formatStatus);
