// The e2e test network: two node namespaces cabled to a "switch" namespace, TEST-NET-1
// addresses only (192.0.2.0/24, RFC 5737). Nothing is created in the host's own namespace.
//
//   node A ── hast0 ═ portA ── brA ── trunkA ═ trunkB ── brB ── portB ═ hast0 ── node B
//                                       (switch namespace)
//
// Why a switch between the nodes rather than one veth pair: ucarp exits when its own interface
// goes down, and a veth whose peer is down loses carrier, which ucarp treats as a reason to
// drop to BACKUP; cutting a direct pair would leave no master at all. Setting the trunk veth
// down inside the switch partitions the nodes while both keep carrier, as a failed switch
// or inter-switch link does, so each ucarp acts only on the adverts it hears.
import { runOk, run } from "../integration/harness.ts";

const IP_TIMEOUT_MS = 10_000;

export const VIP = "192.0.2.100";
export const IFACE = "hast0";

export interface NodeNet {
  /** Network namespace name (ip netns). */
  ns: string;
  /** Interface inside ns and its real address (the ucarp --srcip, the hastd listen address). */
  iface: string;
  address: string;
}

async function ip(...args: string[]): Promise<void> {
  await runOk(["ip", ...args], { timeout_ms: IP_TIMEOUT_MS });
}

export class TestNetwork {
  private created: string[] = [];

  private constructor(
    readonly a: NodeNet,
    readonly b: NodeNet,
    readonly sw: string,
  ) {}

  /** Namespaces <prefix>-a, -b, -sw and their links; on failure what was made is removed. */
  static async create(prefix: string): Promise<TestNetwork> {
    const net = new TestNetwork(
      { ns: `${prefix}-a`, iface: IFACE, address: "192.0.2.1" },
      { ns: `${prefix}-b`, iface: IFACE, address: "192.0.2.2" },
      `${prefix}-sw`,
    );
    try {
      await net.build();
    } catch (err) {
      await net.destroy();
      throw err;
    }
    return net;
  }

  private async build(): Promise<void> {
    for (const ns of [this.a.ns, this.b.ns, this.sw]) {
      this.created.push(ns);
      await ip("netns", "add", ns);
      await ip("-n", ns, "link", "set", "lo", "up");
    }
    await ip("-n", this.sw, "link", "add", "trunkA", "type", "veth", "peer", "name", "trunkB");
    for (const [side, node] of [["A", this.a], ["B", this.b]] as const) {
      await ip("-n", this.sw, "link", "add", `br${side}`, "type", "bridge");
      await ip("-n", this.sw, "link", "add", `port${side}`, "type", "veth", "peer", "name", node.iface, "netns", node.ns);
      for (const port of [`port${side}`, `trunk${side}`]) {
        await ip("-n", this.sw, "link", "set", port, "master", `br${side}`);
        await ip("-n", this.sw, "link", "set", port, "up");
      }
      await ip("-n", this.sw, "link", "set", `br${side}`, "up");
      await ip("-n", node.ns, "addr", "add", `${node.address}/24`, "dev", node.iface);
      await ip("-n", node.ns, "link", "set", node.iface, "up");
    }
  }

  /** argv run inside a node's network namespace (only the network: mounts and /dev are shared). */
  exec(node: NodeNet, argv: string[]): string[] {
    return ["nsenter", `--net=/run/netns/${node.ns}`, "--", ...argv];
  }

  /** Partitions the nodes: the trunk goes down, both nodes keep carrier. */
  async cut(): Promise<void> {
    await ip("-n", this.sw, "link", "set", "trunkA", "down");
  }

  async heal(): Promise<void> {
    await ip("-n", this.sw, "link", "set", "trunkA", "up");
  }

  /** Limits what flows from A's side to B's (a slow link for a resync A → B); null lifts it. */
  async throttle(bits_per_s: number | null): Promise<void> {
    const tc = ["tc", "-n", this.sw, "qdisc", bits_per_s === null ? "del" : "replace", "dev", "trunkA", "root"];
    const args = bits_per_s === null ? tc : [...tc, "tbf", "rate", `${bits_per_s}bit`, "burst", "32kbit", "latency", "400ms"];
    await runOk(args, { timeout_ms: IP_TIMEOUT_MS });
  }

  /** IPv4 addresses on the node's interface. */
  async addresses(node: NodeNet): Promise<string[]> {
    const out = await runOk(["ip", "-n", node.ns, "-4", "-o", "addr", "show", "dev", node.iface], { timeout_ms: IP_TIMEOUT_MS });
    return [...out.matchAll(/\sinet (\d+\.\d+\.\d+\.\d+)\//g)].map((m) => m[1]!);
  }

  async hasVip(node: NodeNet): Promise<boolean> {
    return (await this.addresses(node)).includes(VIP);
  }

  /** A reboot's loss of the address a killed manager left configured. */
  async dropVip(node: NodeNet): Promise<void> {
    if (await this.hasVip(node)) await ip("-n", node.ns, "addr", "del", `${VIP}/32`, "dev", node.iface);
  }

  /** Removes the namespaces (their links go with them); call after their processes are gone. */
  async destroy(): Promise<void> {
    for (const ns of this.created.reverse()) await run(["ip", "netns", "del", ns], { timeout_ms: IP_TIMEOUT_MS });
    this.created = [];
  }
}
