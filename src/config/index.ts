// Public surface of src/config: one typed Config from hast.conf(5) or TOML.
export type { ChecksumKind, CompressionKind, Config, ReplicationMode, ResourceConfig, Role } from "./types.ts";
export { AddressError, formatAddress, parseAddress, type Address } from "./address.ts";
export { ConfigError, EX_CONFIG, EX_OSFILE } from "./errors.ts";
export { acceptableNames, localIdentity, nodeMatches, type NodeIdentity } from "./node.ts";
export { parseSize } from "./size.ts";
export { CONFIG_MAX_BYTES, DEFAULT_CONFIG_PATH, loadConfig, parseConfigText } from "./load.ts";
export { DEFAULTS } from "./_resolve.ts";
export { HAST_PORT, NBD_PORT } from "./_statements.ts";
