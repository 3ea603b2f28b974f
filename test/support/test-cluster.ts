/**
 * Test hosts for one test file: `cluster up` before its tests (under a prefix of its own and in
 * its own run directory), `cluster down` after them, and removal by name should `down` fail.
 */
import { afterAll, beforeAll } from "bun:test";
import { join } from "node:path";
import { destroyTestHosts } from "../../src/cluster/test-hosts.ts";
import type { CliResult } from "./cli.ts";

export interface TestCluster {
  prefix: string;
  inventoryPath: string;
}

/** Call inside a describe(); `cli` runs the snowflock command (from source or the executable). */
export function useTestCluster(options: {
  prefix: string;
  hosts: number;
  runDir: string;
  cli: (args: string[]) => Promise<CliResult>;
}): TestCluster {
  const inventoryPath = join(options.runDir, "cluster.json");
  beforeAll(async () => {
    const up = await options.cli([
      "cluster",
      "up",
      "--hosts",
      String(options.hosts),
      "--prefix",
      options.prefix,
      "--inventory",
      inventoryPath,
    ]);
    if (up.status !== 0) throw new Error(`cluster up failed: ${up.stderr}`);
  });
  afterAll(async () => {
    await options.cli(["cluster", "down", "--inventory", inventoryPath]);
    await destroyTestHosts(options.prefix, { inventoryPath: null }).catch(() => {});
  });
  return { prefix: options.prefix, inventoryPath };
}
