/** `snowflock run WORKLOAD [KEY=VALUE ...]`: boot the built-in guest and run a workload in it. */
import type { CAC } from "cac";
import { selectBackend } from "../backend/select.ts";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { checkMemory, parseWorkload, workloadHelp } from "../guest/workloads.ts";
import { checkName, ensureRunDir, freeName, claimName, vmPaths } from "../run-dir.ts";
import { MAX_CLONES_PER_FORK } from "../vmm/protocol.ts";
import { spawnVmm } from "../vmm/spawn.ts";
import { log, printJson, printLine } from "../output.ts";
import { memoryOption, memoryPathOption, transportOption, vcpusOption } from "./options.ts";
import { chooseCluster, rerunInside, withoutOption } from "./cluster-option.ts";
import { HEURISTICS, parseHeuristics } from "../heuristics/heuristics.ts";

interface RunOptions {
  backend?: string;
  mem: string;
  vcpus: number;
  maxClones: number;
  memory: string;
  name?: string;
  detach?: boolean;
  json?: boolean;
  cluster?: string | boolean;
  transport: string;
  heuristics?: boolean;
  heuristicOff?: string | string[];
}

export function registerRun(cli: CAC): void {
  cli
    .command("run <workload> [...params]", "Boot the built-in guest and run a workload in it")
    .usage(`run <workload> [key=value ...] [options]\n\nWorkloads:\n${workloadHelp()}`)
    .option("--mem <size>", "Guest memory (K/M/G suffixes, multiple of 2M)", { default: "256M" })
    .option("--vcpus <n>", "Virtual CPUs", { default: 1 })
    .option("--memory <path>", "How clones the guest makes get memory: cow or ondemand", { default: "cow" })
    .option("--max-clones <n>", "Most clones one sf_request_ticket grants", { default: 32 })
    .option("--name <name>", "Name for ls/logs/kill (default: <workload>-<n>)")
    .option("--detach", "Run in the background; print the VM's name and return")
    .option("--json", "Print one JSON object at the end instead of the console lines")
    .option(
      "--cluster [inventory]",
      "Spread the guest's clones over the cluster's hosts (default inventory: " +
        "$SNOWFLOCK_RUN_DIR/cluster.json); clones on other hosts take memory on demand",
    )
    .option(
      "--transport <kind>",
      "With --cluster: how clones on other hosts get pages: packet (mcdist multicast over raw Ethernet " +
        "frames), udp (mcdist over UDP multicast) or tcp (unicast only)",
      { default: "packet" },
    )
    .option("--no-heuristics", "Clones fetch every page they touch: no avoidance heuristic (to measure them)")
    .option("--heuristic-off <name>", `(or --no-heuristic NAME) Switch one avoidance heuristic off, repeatable: ${HEURISTICS.join(", ")}`)
    .example((bin) => `  ${bin} run hello`)
    .example((bin) => `  ${bin} run sha256 size=64M seed=42 --vcpus 2 --json`)
    .example((bin) => `  ${bin} run serve --name web --detach && ${bin} logs web --follow`)
    .example((bin) => `  ${bin} cluster up --hosts 4 && ${bin} run sha256-par size=64M seed=7 clones=8 --cluster --json`)
    .action(async (workloadName: string, params: string[], options: RunOptions) => {
      const workload = parseWorkload(workloadName, params.map(String));
      const memoryBytes = memoryOption(options.mem);
      const vcpus = vcpusOption(options.vcpus);
      const memoryPath = memoryPathOption(options.memory);
      const maxClones = Number(options.maxClones);
      if (!Number.isInteger(maxClones) || maxClones < 1 || maxClones > MAX_CLONES_PER_FORK) {
        throw new SnowflockError(
          "USAGE",
          `bad --max-clones '${options.maxClones}'`,
          `give a whole number from 1 to ${MAX_CLONES_PER_FORK}`,
        );
      }
      const choice = options.cluster === undefined || options.cluster === false ? undefined : chooseCluster(options.cluster);
      if (choice && "rerunInside" in choice) {
        const args = withoutOption(process.argv.slice(2), "--cluster", options.cluster);
        return rerunInside(choice.rerunInside, choice.runDir, [...args, `--cluster=${choice.inventoryPath}`]);
      }
      const cluster = choice?.cluster;
      const transport = transportOption(options.transport);
      const heuristicsOff =
        options.heuristics === false ? [...HEURISTICS] : parseHeuristics([options.heuristicOff ?? []].flat().map(String));
      ensureRunDir();
      const name = options.name === undefined ? freeName(workload.name) : checkName(String(options.name));
      const clusterArgs = [
        ...(cluster ? [`--cluster=${cluster.inventoryPath}`, "--transport", transport] : []),
        ...heuristicsOff.flatMap((h) => ["--no-heuristic", h]),
      ];
      if (options.detach)
        return detach(
          name,
          workloadName,
          params,
          [
            "--mem",
            String(memoryBytes),
            "--vcpus",
            String(vcpus),
            "--max-clones",
            String(maxClones),
            "--memory",
            memoryPath,
            ...clusterArgs,
          ],
          options.json === true,
        );

      const { runVm } = await import("../vmm/vmm.ts");
      checkMemory(workload, memoryBytes);
      (await selectBackend(options.backend, "run")).check();
      if (!options.json)
        log.start(
          `booting ${name}: ${workload.cmdline} (${formatSize(memoryBytes)}, ${vcpus} ` +
            `vCPU${vcpus > 1 ? "s" : ""})${cluster ? ` on ${cluster.host.name} of cluster '${cluster.inventory.cluster}'` : ""}`,
        );
      const result = await runVm(
        { name, workload, memoryBytes, vcpus, maxClones, memoryPath, cluster, transport, heuristicsOff },
        options.json ? () => {} : printLine,
      );
      if (options.json) printJson(result);
      else if (result.end.kind === "crash")
        log.error(
          `${name}: guest crashed on vCPU ${result.end.vcpu}: ${result.end.reason}${result.end.rip ? ` at rip ${result.end.rip}` : ""}`,
        );
      else if (result.end.kind === "exit" && result.end.status !== 0) log.warn(`${name}: guest exited with status ${result.end.status}`);
      return result.exitStatus;
    });
}

/** Starts a VMM process of its own for the VM and waits until its control socket answers. */
async function detach(name: string, workload: string, params: string[], options: string[], json: boolean): Promise<number> {
  claimName(name);
  const { pid } = await spawnVmm(name, ["run", workload, ...params, ...options, "--name", name]);
  if (json) printJson({ name, pid, socket: vmPaths(name).socket, log: vmPaths(name).log });
  else {
    printLine(name);
    log.success(`${name} runs in the background (pid ${pid}); \`snowflock logs ${name}\` shows its console`);
  }
  return 0;
}
