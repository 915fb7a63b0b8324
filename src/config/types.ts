// The one typed configuration both syntaxes (hast.conf and TOML) produce.
import type { Role } from "../core/metadata.ts";
import type { ReplicationMode } from "../core/request-legs.ts";
import type { ChecksumKind, CompressionKind } from "../wire/peer/types.ts";
import type { Address } from "./address.ts";

export type { ChecksumKind, CompressionKind, ReplicationMode, Role };

export interface ResourceConfig {
  name: string;
  /** Provider name: /dev/hast/<provname>. */
  provname: string;
  localpath: string;
  /** null for `remote none`. */
  remote: Address | null;
  /** remote as written ("none" when null). */
  remote_text: string;
  source: Address | null;
  replication: ReplicationMode;
  checksum: ChecksumKind;
  compression: CompressionKind;
  timeout_s: number;
  /** Hook program; "" = no hooks. */
  exec: string;
  metaflush: boolean;
  nbd: Address;
  /** Create /dev/hast/<provname> on the primary. */
  device: boolean;
  /** Bytes per second an online verification reads at most; null = no limit. */
  verify_rate: number | null;
  /** Bytes per second a synchronization copies to the secondary at most (copies back to this
   * node are not limited); null = no limit. */
  sync_rate: number | null;
  /** A synchronization to the secondary compares each chunk's SHA-256 first and sends only the
   * chunks that differ (DRBD's csums-alg). */
  resync_digest: boolean;
  /** Shared secret for peer authentication; null = none. */
  secret: string | null;
  /** Where the secret came from, for logs (never the secret): "hast.conf:7" or "/etc/hast.key (hast.conf:7)". */
  secret_source: string | null;
  /** 1-based line of the `resource` statement. */
  line: number;
}

export interface Config {
  file: string;
  /** The node name that matched this host, for logs. */
  node: string;
  control: Address;
  pidfile: string;
  listen: Address[];
  /** Where a daemonized hastd logs instead of syslog; null = syslog. */
  logfile: string | null;
  /** In file order. */
  resources: ResourceConfig[];
}
