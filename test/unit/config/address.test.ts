// Spec 1.6 address formats.
import { describe, expect, test } from "bun:test";
import { AddressError, formatAddress, parseAddress, type Address } from "../../../src/config/index.ts";

const tcp = (family: 4 | 6 | 0, host: string, port: number): Address => ({ kind: "tcp", family, host, port });

describe("parseAddress", () => {
  test("unix-domain: uds://, unix:// (any case) and a bare absolute path", () => {
    expect(parseAddress("uds:///var/run/hastctl", 8457)).toEqual({ kind: "uds", path: "/var/run/hastctl" });
    expect(parseAddress("UNIX:///run/x", 8457)).toEqual({ kind: "uds", path: "/run/x" });
    expect(parseAddress("/var/run/hastctl", 8457)).toEqual({ kind: "uds", path: "/var/run/hastctl" });
  });

  test("equivalent IPv4 forms and the default port", () => {
    for (const text of ["0.0.0.0", "0.0.0.0:8457", "tcp://0.0.0.0", "tcp4://0.0.0.0:8457", "TCP4://0.0.0.0"]) {
      expect(parseAddress(text, 8457)).toEqual(tcp(4, "0.0.0.0", 8457));
    }
    expect(parseAddress("10.0.0.1", 0)).toEqual(tcp(4, "10.0.0.1", 0));
    expect(parseAddress("hasta.example.com:9000", 8457)).toEqual(tcp(0, "hasta.example.com", 9000));
    expect(parseAddress("tcp4://hasta", 8457)).toEqual(tcp(4, "hasta", 8457));
  });

  test("IPv6: unbracketed takes the default port, bracketed needs a port", () => {
    expect(parseAddress("2001:db8::1", 8457)).toEqual(tcp(6, "2001:db8::1", 8457));
    expect(parseAddress("[fe80::1]:8457", 1)).toEqual(tcp(6, "fe80::1", 8457));
    expect(parseAddress("tcp6://[::]:8458", 8457)).toEqual(tcp(6, "::", 8458));
    expect(() => parseAddress("[::1]", 8457)).toThrow("invalid address '[::1]': port '1]' is not a number from 1 to 65535");
  });

  test("rejections say why", () => {
    const cases: [string, string][] = [
      ["", "the host is missing"],
      ["tcp://", "the host is missing"],
      ["10.0.0.1:0", "port '0' is not a number from 1 to 65535"],
      ["10.0.0.1:65536", "port '65536' is not a number from 1 to 65535"],
      ["10.0.0.1:", "port '' is not a number from 1 to 65535"],
      ["tcp6://10.0.0.1", "tcp6:// needs an IPv6 address or a host name"],
      ["tcp4://[::1]:80", "tcp4:// needs an IPv4 address or a host name"],
      ["2001:db8::1/64", "'2001:db8::1/64' is not a valid IPv6 address"],
      ["[10.0.0.1]:80", "brackets are only for IPv6 addresses"],
      ["x]:80:1", "'x]:80:1' is not a valid IPv6 address"],
      ["bad_host!", "'bad_host!' is neither an IP address nor a valid host name"],
      ["uds://", "the unix socket path is empty"],
      ["unix://run/x", "the unix socket path must be absolute"],
      [`/${"s".repeat(200)}`, "the unix socket path is 201 bytes, the limit is "],
    ];
    for (const [text, reason] of cases) {
      let err: unknown;
      try {
        parseAddress(text, 8457);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AddressError);
      expect((err as AddressError).reason).toStartWith(reason);
    }
  });

  test("formatAddress round-trips", () => {
    for (const text of ["uds:///run/h", "tcp4://10.0.0.1:8457", "tcp6://[::1]:8457", "tcp://hasta:9000", "2001:db8::1", "[fe80::1%eth0]:1"]) {
      const a = parseAddress(text, 8457);
      expect(parseAddress(formatAddress(a), 1)).toEqual(a);
    }
    expect(formatAddress(tcp(6, "::", 8457))).toBe("tcp6://[::]:8457");
    expect(formatAddress({ kind: "uds", path: "/run/x" })).toBe("uds:///run/x");
  });
});
