// hastctl list [all|name ...]: the verbose per-resource view (spec 2.3).
import { formatList } from "./format.ts";
import { statusCommand } from "./request.ts";

export default statusCommand("list", "show resources in detail", formatList);
