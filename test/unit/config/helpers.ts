// Shared fixtures for the config tests: a fixed node identity and error assertions.
import { expect } from "bun:test";
import { ConfigError, parseConfigText, type Config, type NodeIdentity } from "../../../src/config/index.ts";

/** This host in every test: hostname alpha.example.com, with a machine id in upper case. */
export const MACHINE_ID = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
export const ALPHA: NodeIdentity = {
  hostname: "alpha.example.com",
  machine_id: MACHINE_ID,
  hostid: null,
  override: null,
};

export function conf(text: string, identity: NodeIdentity = ALPHA): Config {
  return parseConfigText(text, "hast.conf", identity);
}

export function toml(text: string, identity: NodeIdentity = ALPHA): Config {
  return parseConfigText(text, "hast.toml", identity);
}

/** Assert the exact "<file>:<line>: <detail>" of a ConfigError and its exit code. */
export function expectConfigError(fn: () => unknown, file: string, line: number | null, detail: string, exit_code: 72 | 78 = 78): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  if (!(caught instanceof ConfigError)) {
    throw new Error(`expected a ConfigError "${detail}", got ${caught === undefined ? "no error" : String(caught)}`);
  }
  expect({ line: caught.line, detail: caught.detail, exit_code: caught.exit_code }).toEqual({ line, detail, exit_code });
  expect(caught.file).toBe(file);
  expect(caught.message).toBe(line === null ? `${file}: ${detail}` : `${file}:${line}: ${detail}`);
}

export function confError(text: string, line: number, detail: string, identity: NodeIdentity = ALPHA): void {
  expectConfigError(() => conf(text, identity), "hast.conf", line, detail);
}

export function tomlError(text: string, line: number, detail: string, identity: NodeIdentity = ALPHA): void {
  expectConfigError(() => toml(text, identity), "hast.toml", line, detail);
}

/** The shortest valid resource for node alpha, in each syntax. */
export const MIN_CONF = "resource r0 {\n  local /dev/sdb\n  on alpha {\n    remote 10.0.0.2\n  }\n}\n";
export const MIN_TOML = '[resource.r0]\nlocal = "/dev/sdb"\n\n[resource.r0.on.alpha]\nremote = "10.0.0.2"\n';
