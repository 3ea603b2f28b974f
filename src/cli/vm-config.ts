/**
 * `snowflock run --config-file PATH`: a VM's settings in one JSON file (in the spirit of
 * Firecracker's --config-file), with the names of run's options:
 *
 *   { "kernel": "vmlinuz", "initrd": "initrd.img", "cmdline": "console=ttyS0 quiet",
 *     "disks": [{ "path": "root.ext4" }, { "path": "data.img", "readOnly": true }],
 *     "net": { "bridge": "br0" }, "mem": "512M", "vcpus": 1, "name": "web" }
 *
 * Paths are relative to the file's directory. Options given on the command line win.
 */
import { dirname, resolve } from "node:path";
import { readRegularFile } from "../bounded-read.ts";
import { SnowflockError, shown } from "../errors.ts";
import type { DiskAttachment } from "../disk/image.ts";
import { badBridgeName, DEFAULT_BRIDGE, type NetAttachment } from "../net/tap.ts";

export interface VmConfig {
  kernel?: string;
  disks?: DiskAttachment[];
  net?: NetAttachment;
  initrd?: string;
  cmdline?: string;
  mem?: string | number;
  vcpus?: number;
  name?: string;
}

const MAX_CONFIG_BYTES = 64 * 1024;
const KEYS: Record<keyof VmConfig, "string" | "number" | "path" | "disks" | "net"> = {
  kernel: "path",
  disks: "disks",
  net: "net",
  initrd: "path",
  cmdline: "string",
  mem: "string",
  vcpus: "number",
  name: "string",
};

export function readVmConfig(path: string): VmConfig {
  const text = new TextDecoder().decode(readRegularFile(path, { what: "VM config", maxBytes: MAX_CONFIG_BYTES }));
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SnowflockError("USAGE", `the VM config ${path} is not JSON: ${(error as Error).message}`);
  }
  return parseVmConfig(value, path);
}

export function parseVmConfig(value: unknown, path: string): VmConfig {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new SnowflockError("USAGE", `the VM config ${path} must be a JSON object, not ${shown(value)}`);
  const config: Record<string, string | number | DiskAttachment[] | NetAttachment> = {};
  for (const [key, field] of Object.entries(value)) {
    const kind = KEYS[key as keyof VmConfig];
    if (kind === undefined || !Object.hasOwn(KEYS, key))
      throw new SnowflockError(
        "USAGE",
        `the VM config ${path} has an unknown key ${shown(key)}`,
        `known keys: ${Object.keys(KEYS).join(", ")}`,
      );
    if (kind === "disks") {
      config.disks = parseDisks(field, path);
      continue;
    }
    if (kind === "net") {
      if (field === false) continue;
      config.net = parseNet(field, path);
      continue;
    }
    const wanted = kind === "number" ? "number" : "string";
    // mem may be given as bytes too.
    if (typeof field !== wanted && !(key === "mem" && typeof field === "number"))
      throw new SnowflockError("USAGE", `the VM config ${path}: "${key}" must be a ${wanted}, not ${shown(field)}`);
    config[key] = kind === "path" ? resolve(dirname(path), field as string) : (field as string | number);
  }
  return config as VmConfig;
}

function parseDisks(value: unknown, path: string): DiskAttachment[] {
  const bad = (why: string) =>
    new SnowflockError("USAGE", `the VM config ${path}: "disks" ${why}`, 'give [{ "path": "disk.img", "readOnly": false }, ...]');
  if (!Array.isArray(value)) throw bad(`must be a list, not ${shown(value)}`);
  return value.map((entry: unknown, i) => {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw bad(`entry ${i} is not an object`);
    const { path: image, readOnly, ...rest } = entry as Record<string, unknown>;
    if (Object.keys(rest).length > 0) throw bad(`entry ${i} has an unknown key ${shown(Object.keys(rest)[0])}`);
    if (typeof image !== "string" || image === "") throw bad(`entry ${i} has no "path"`);
    if (readOnly !== undefined && typeof readOnly !== "boolean") throw bad(`entry ${i}'s "readOnly" must be true or false`);
    return { path: resolve(dirname(path), image), readOnly: readOnly === true };
  });
}

/** "net": true (the default bridge) or { "bridge": NAME }. */
function parseNet(value: unknown, path: string): NetAttachment {
  if (value === true) return { bridge: DEFAULT_BRIDGE };
  const bad = (why: string) => new SnowflockError("USAGE", `the VM config ${path}: "net" ${why}`, 'give true or { "bridge": "br0" }');
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad(`must be true or an object, not ${shown(value)}`);
  const { bridge, ...rest } = value as Record<string, unknown>;
  if (Object.keys(rest).length > 0) throw bad(`has an unknown key ${shown(Object.keys(rest)[0])}`);
  if (bridge === undefined) return { bridge: DEFAULT_BRIDGE };
  if (typeof bridge !== "string") throw bad(`"bridge" must be a string, not ${shown(bridge)}`);
  const why = badBridgeName(bridge);
  if (why) throw bad(`names a bad bridge ${shown(bridge)}: ${why}`);
  return { bridge };
}
