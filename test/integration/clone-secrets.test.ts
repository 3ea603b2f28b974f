/**
 * `ps` shows no token or key while clones run, over every memory path (issue 10, item 3): a VM on
 * two test hosts forks clones on its own host (copy-on-write, and on demand over its Unix socket)
 * and on the other host over each remote transport (tcp: the memory server's token; packet and
 * udp: the mcdist family key). While they all run, every process's arguments and environment are
 * read from /proc, as any local user could.
 */
import { SAY_RUNNING_VARIABLE } from "../../src/vmm/launch-clock.ts";
import { afterAll, expect, test } from "bun:test";
import { readInventory } from "../../src/cluster/inventory.ts";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";
import { describeNetns } from "../support/netns.ts";
import { cloneArguments, leaks, processViews } from "../support/process-secrets.ts";
import { useTestCluster } from "../support/test-cluster.ts";
import { within } from "../support/time.ts";

const PREFIX = `sfs${process.pid % 10000}`;
const runDir = testRunDir();
const env = { SNOWFLOCK_RUN_DIR: runDir };

async function ticking(name: string): Promise<boolean> {
  for (const deadline = Date.now() + within(20_000); Date.now() < deadline; await Bun.sleep(200)) {
    const ticks = (await snowflock(["logs", name], env)).stdout.split("\n").filter((l) => l.startsWith("tick"));
    if (ticks.length >= 2) return true;
  }
  return false;
}

describeNetns("secrets of running clones", () => {
  describeKvm("over test hosts", () => {
    const cluster = useTestCluster({ prefix: PREFIX, hosts: 2, runDir, cli: (args) => snowflock(args, env) });
    afterAll(async () => void (await snowflock(["kill", "web"], env)));

    test(
      "cow, ondemand (unix), tcp, packet and udp clones run, and no process shows a token, key or the cluster secret",
      async () => {
        const run = await snowflock(
          ["run", "serve", "--detach", "--name", "web", "--mem", "64M", "--cluster", cluster.inventoryPath],
          env,
          120_000,
        );
        expect({ status: run.status, stderr: run.stderr }).toEqual({
          status: 0,
          stderr: expect.stringContaining("web runs in the background"),
        });
        const forks: Array<[string[], string]> = [
          [["--memory", "cow"], "h1"],
          [["--memory", "ondemand"], "h1"],
          [["--cluster", "--transport", "tcp"], "h2"],
          [["--cluster", "--transport", "packet"], "h2"],
          [["--cluster", "--transport", "udp"], "h2"],
        ];
        const names: string[] = [];
        for (const [options, host] of forks) {
          const forked = await snowflock(["fork", "web", "--clones", "1", ...options, "--json"], env, 120_000);
          expect({ options, stderr: forked.stderr }).toEqual({ options, stderr: "" });
          const clone = JSON.parse(forked.stdout).clones[0] as { name: string; host: string };
          expect({ options, host: clone.host }).toEqual({ options, host });
          names.push(clone.name);
        }
        for (const name of names) expect({ name, ticking: await ticking(name) }).toEqual({ name, ticking: true });

        // One look at every process while all five clones run.
        const views = processViews();
        const ourClones = views.filter((v) => cloneArguments(v) && v.environ.some((e) => e.startsWith(`SNOWFLOCK_RUN_DIR=${runDir}`)));
        expect(ourClones.length).toBe(names.length);
        expect(leaks(views, [readInventory(cluster.inventoryPath).secret])).toEqual([]);
        expect(ourClones.map((v) => cloneArguments(v)).sort()).toEqual(names.sort().map((name) => [name]));
        // Nothing that looks like a secret in any snowflock command line, and no snowflock variable in
        // a clone's environment but those of this test, its run directory and the quiet and say-running flags.
        const ours = views.filter((v) => v.args.some((a) => a.endsWith("bin/snowflock.ts") || a.endsWith("/snowflock")));
        expect(ours.flatMap((v) => v.args.filter((a) => /[0-9a-f]{64}/.test(a)))).toEqual([]);
        const known = new Set([
          ...Object.keys(process.env),
          "SNOWFLOCK_QUIET",
          SAY_RUNNING_VARIABLE,
          "SNOWFLOCK_RUN_DIR",
          "SNOWFLOCK_INSIDE_TEST_HOST",
        ]);
        const variables = ourClones.flatMap((v) => v.environ.map((e) => e.slice(0, e.indexOf("="))));
        const added = variables.filter((name) => name.startsWith("SNOWFLOCK_") && !known.has(name));
        expect(added).toEqual([]);
      },
      within(600_000),
    );
  });
});
