/**
 * Agents for test hosts: `cluster up` starts one `snowflock agent` inside each host's network
 * namespace, with a run directory of its own (so clones on different test hosts never find each
 * other through the file system), and waits until each listens. The check looks inside the
 * namespace (`ss`): this machine's own namespace has no route to the test hosts, and a connection
 * tried from it would leave the machine.
 */
import { constants, mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { SnowflockError } from "../errors.ts";
import { runDir } from "../run-dir.ts";
import { spawnDetached } from "../vmm/detached.ts";
import { selfCommand } from "../vmm/self.ts";
import { listensInside, listNamespaces } from "./netns.ts";
import type { Inventory, InventoryHost } from "./inventory.ts";
import { scaledTimeout } from "../timeouts.ts";

const AGENT_START_TIMEOUT_MS = scaledTimeout(15_000);

/** The run directory of test host `host` of `cluster` (below `base`): its VMs' sockets, records and logs. */
export function hostRunDir(cluster: string, host: string, base = runDir()): string {
  return join(base, `${cluster}-${host}`);
}

/** What each test host's agent is started with: its room for clones, and its pool of ready VMMs (0: none). */
export interface TestAgentSettings {
  maxClones: number;
  pool: number;
}

async function startAgent(inventory: Inventory, inventoryPath: string, host: InventoryHost, settings: TestAgentSettings): Promise<void> {
  const dir = hostRunDir(inventory.cluster, host.name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const logFd = openSync(join(dir, "agent.log"), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  const command = [
    "ip",
    "netns",
    "exec",
    host.namespace!,
    ...selfCommand(),
    "agent",
    "--inventory",
    inventoryPath,
    "--host",
    host.name,
    "--max-clones",
    String(settings.maxClones),
    ...(settings.pool > 0 ? ["--pool", String(settings.pool)] : []),
  ];
  const { exitStatus } = spawnDetached(command, { outputFd: logFd, stdoutToo: true, env: { ...process.env, SNOWFLOCK_RUN_DIR: dir } });
  const deadline = Date.now() + AGENT_START_TIMEOUT_MS;
  while (!(await listensInside(host.namespace!, host.agentPort))) {
    const exited = exitStatus();
    if (exited !== null || Date.now() > deadline) {
      throw new SnowflockError(
        "INTERNAL",
        `the agent of ${host.name} did not come ` +
          `up${exited !== null ? ` (it exited with status ${exited})` : ` within ${AGENT_START_TIMEOUT_MS / 1000} s`}`,
        `see ${join(dir, "agent.log")}`,
      );
    }
    await Bun.sleep(50);
  }
}

/** Starts every test host's agent; throws (with the host and its log) if one does not answer. */
export async function startTestAgents(inventory: Inventory, inventoryPath: string, settings: TestAgentSettings): Promise<void> {
  await Promise.all(
    inventory.hosts.filter((h) => h.namespace !== null).map((host) => startAgent(inventory, inventoryPath, host, settings)),
  );
}

/** Starts the agent again on every test host whose namespace exists but where none listens; returns those hosts. */
export async function restartDeadAgents(
  inventory: Inventory,
  inventoryPath: string,
  settings: TestAgentSettings,
): Promise<InventoryHost[]> {
  const present = new Set(await listNamespaces());
  const testHosts = inventory.hosts.filter((h) => h.namespace !== null && present.has(h.namespace));
  const dead = (await Promise.all(testHosts.map(async (h) => ((await listensInside(h.namespace!, h.agentPort)) ? [] : [h])))).flat();
  await Promise.all(dead.map((host) => startAgent(inventory, inventoryPath, host, settings)));
  return dead;
}
