/**
 * What a clone process on another host than its parent is told of its cluster (its launch
 * record's `cluster`, and an agent's clone order's placement), checked field by field.
 */
import { SnowflockError } from "../errors.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { checkName } from "../run-dir.ts";

/** What a clone process on another host than its parent knows of the cluster. */
export interface ClusterEnvironment {
  inventory: string;
  /** The inventory host this process runs on. */
  host: string;
  placement: Record<string, string>;
  parentIncarnation: string;
}

/** Which inventory host each VM of the family runs on, as a clone order or launch record gives it. */
export function checkPlacement(value: unknown, fail: (problem: string) => never): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) fail("placement must be an object");
  const placement = value as Record<string, unknown>;
  const entries = Object.entries(placement);
  if (entries.length > 4 * MAX_CLONES_PER_FORK + 1) fail("placement names too many VMs");
  for (const [name, host] of entries) {
    checkName(name);
    if (typeof host !== "string" || host.length === 0 || host.length > 63) fail(`placement of ${name} is not a host name`);
  }
  return placement as Record<string, string>;
}

/** Checks what a clone process is told of its cluster (from its launch record). */
export function checkClusterEnvironment(value: unknown): ClusterEnvironment {
  const bad = (problem: string): never => {
    throw new SnowflockError("USAGE", `bad cluster environment: ${problem}`);
  };
  if (typeof value !== "object" || value === null || Array.isArray(value)) bad("not an object");
  const env = value as Record<string, unknown>;
  if (typeof env.inventory !== "string" || env.inventory.length === 0 || env.inventory.length > 4096 || env.inventory.includes("\0"))
    bad("inventory must be a path");
  if (typeof env.host !== "string" || env.host.length === 0 || env.host.length > 63) bad("host must be a host name");
  if (typeof env.parentIncarnation !== "string" || env.parentIncarnation.length === 0 || env.parentIncarnation.length > 64)
    bad("no parentIncarnation");
  const known = ["inventory", "host", "placement", "parentIncarnation"];
  const unknown = Object.keys(env).find((key) => !known.includes(key));
  if (unknown !== undefined) bad(`unknown field '${unknown.slice(0, 40)}'`);
  return {
    inventory: env.inventory as string,
    host: env.host as string,
    placement: checkPlacement(env.placement, bad),
    parentIncarnation: env.parentIncarnation as string,
  };
}
