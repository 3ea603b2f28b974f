/**
 * The cluster inventory: which hosts make up a cluster, how to reach each one's agent, and the
 * cluster's shared secret that authenticates the agents' control plane. `snowflock cluster up`
 * writes it for test hosts (network namespaces); an operator may write one for real hosts
 * (`namespace: null`). It is JSON, version 1, mode 0600 (it holds the secret), and read strictly:
 * a malformed file is refused with the field that is wrong.
 */
import { mkdirSync, type Stats } from "node:fs";
import { dirname, join } from "node:path";
import { SnowflockError } from "../errors.ts";
import { isIpv4 } from "../net/ipv4.ts";
import { readRegularFile } from "../bounded-read.ts";
import { writePrivateFile } from "../sys/private-file.ts";
import { runDir } from "../run-dir.ts";
import { log } from "../output.ts";

export const INVENTORY_VERSION = 1;
/** The TCP port agents listen on unless an inventory says otherwise. */
export const DEFAULT_AGENT_PORT = 7070;

export interface InventoryHost {
  name: string;
  /** The network namespace of a test host; null for a real host. */
  namespace: string | null;
  /** IPv4 address of the host's cluster interface (no prefix length). */
  address: string;
  interface: string;
  mac: string;
  agentPort: number;
}

export interface Inventory {
  version: 1;
  cluster: string;
  /** 64 hex characters, random per cluster: the key of the agents' authenticated control plane. */
  secret: string;
  /** The bridge joining test hosts (inside the `${cluster}-switch` namespace); null for real hosts. */
  bridge: string | null;
  mtu: number;
  hosts: InventoryHost[];
}

export function defaultInventoryPath(): string {
  return join(runDir(), "cluster.json");
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const INTERFACE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const SECRET = /^[0-9a-f]{64}$/;
const TOP_KEYS = ["version", "cluster", "secret", "bridge", "mtu", "hosts"];
const HOST_KEYS = ["name", "namespace", "address", "interface", "mac", "agentPort"];

/** Far more than an inventory of MAX_TEST_HOSTS hosts takes (about 200 bytes a host). */
const MAX_INVENTORY_BYTES = 1024 * 1024;
const warnedReadable = new Set<string>();

/**
 * The inventory's text: only from a regular file of at most MAX_INVENTORY_BYTES (opened without
 * blocking, so a FIFO is refused rather than waited on). Warns once when others may read the secret.
 */
function readInventoryText(path: string): string {
  const warnIfReadable = (stat: Stats) => {
    if ((stat.mode & 0o077) === 0 || warnedReadable.has(path)) return;
    warnedReadable.add(path);
    log.warn(
      `cluster inventory ${path} holds the cluster secret but is readable by others (mode ` +
        `${(stat.mode & 0o777).toString(8)}): chmod 600 it`,
    );
  };
  try {
    return new TextDecoder().decode(
      readRegularFile(path, { what: "cluster inventory", maxBytes: MAX_INVENTORY_BYTES, inspect: warnIfReadable }),
    );
  } catch (error) {
    if (error instanceof SnowflockError && error.code === "NOT_FOUND") {
      throw new SnowflockError(
        "NOT_FOUND",
        `no cluster inventory at ${path}`,
        "create test hosts with `snowflock cluster up --hosts N`, or pass --inventory FILE",
      );
    }
    throw error;
  }
}

/** Reads and validates an inventory; every problem is a SnowflockError naming the file and field. */
export function readInventory(path: string): Inventory {
  const text = readInventoryText(path);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new SnowflockError(
      "USAGE",
      `cluster inventory ${path} is not valid JSON: ${(error as Error).message}`,
      "fix the file, or remove it and run `snowflock cluster up` again",
    );
  }
  return validateInventory(value, path);
}

/** Checks the shape of an inventory (version 1) exactly; `source` names it in errors. */
export function validateInventory(value: unknown, source = "inventory"): Inventory {
  const fail = (field: string, problem: string): never => {
    throw new SnowflockError(
      "USAGE",
      `cluster inventory ${source}: ${field} ${problem}`,
      "fix the file, or remove it and run `snowflock cluster up` again",
    );
  };
  const show = (v: unknown) => (v === undefined ? "nothing" : JSON.stringify(v));
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail("the document", "must be a JSON object");
  const top = value as Record<string, unknown>;
  for (const key of Object.keys(top))
    if (!TOP_KEYS.includes(key)) fail(`'${key}'`, `is not a field of a version ${INVENTORY_VERSION} inventory`);
  if (top.version !== INVENTORY_VERSION) fail("version", `must be ${INVENTORY_VERSION}, got ${show(top.version)}`);
  if (typeof top.cluster !== "string" || !NAME.test(top.cluster))
    fail("cluster", `must be a name (letters, digits, '.', '_', '-'), got ${show(top.cluster)}`);
  if (typeof top.secret !== "string" || !SECRET.test(top.secret)) fail("secret", "must be 64 lowercase hex characters");
  if (top.bridge !== null && (typeof top.bridge !== "string" || !INTERFACE.test(top.bridge)))
    fail("bridge", `must be an interface name or null, got ${show(top.bridge)}`);
  if (typeof top.mtu !== "number" || !Number.isInteger(top.mtu) || top.mtu < 68 || top.mtu > 65535)
    fail("mtu", `must be a whole number from 68 to 65535, got ${show(top.mtu)}`);
  if (!Array.isArray(top.hosts) || top.hosts.length === 0) fail("hosts", "must be a non-empty array");
  const hosts = top.hosts as unknown[];
  const names = new Set<string>();
  const addresses = new Set<string>();
  hosts.forEach((raw, i) => {
    const at = `hosts[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail(at, "must be an object");
    const host = raw as Record<string, unknown>;
    for (const key of Object.keys(host)) if (!HOST_KEYS.includes(key)) fail(`${at}.${key}`, "is not a field of a host");
    if (typeof host.name !== "string" || !NAME.test(host.name)) fail(`${at}.name`, `must be a host name, got ${show(host.name)}`);
    if (names.has(host.name as string)) fail(`${at}.name`, `'${host.name}' appears twice`);
    names.add(host.name as string);
    if (host.namespace !== null && (typeof host.namespace !== "string" || !NAME.test(host.namespace)))
      fail(`${at}.namespace`, `must be a namespace name or null, got ${show(host.namespace)}`);
    if (typeof host.address !== "string" || !isIpv4(host.address))
      fail(`${at}.address`, `must be an IPv4 address like 10.77.0.11, got ${show(host.address)}`);
    if (addresses.has(host.address as string)) fail(`${at}.address`, `${host.address} appears twice`);
    addresses.add(host.address as string);
    if (typeof host.interface !== "string" || !INTERFACE.test(host.interface))
      fail(`${at}.interface`, `must be an interface name (up to 15 characters), got ${show(host.interface)}`);
    if (typeof host.mac !== "string" || !MAC.test(host.mac))
      fail(`${at}.mac`, `must be a MAC address like 02:73:66:00:00:01 (lowercase), got ${show(host.mac)}`);
    if (typeof host.agentPort !== "number" || !Number.isInteger(host.agentPort) || host.agentPort < 1 || host.agentPort > 65535)
      fail(`${at}.agentPort`, `must be a port from 1 to 65535, got ${show(host.agentPort)}`);
  });
  return value as Inventory;
}

/** Writes an inventory atomically (temporary file, fsync, rename), mode 0600. */
export function writeInventory(path: string, inventory: Inventory): void {
  validateInventory(inventory, "to be written");
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    writePrivateFile(path, `${JSON.stringify(inventory, null, 2)}\n`, { durable: true });
  } catch (error) {
    throw new SnowflockError(
      "USAGE",
      `cannot write the cluster inventory ${path}: ${(error as Error).message}`,
      "pass --inventory FILE in a writable directory",
    );
  }
}
