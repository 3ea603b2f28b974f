/**
 * `snowflock run WORKLOAD [KEY=VALUE ...]`: boot the built-in guest and run a workload in it;
 * `snowflock run --kernel PATH [--initrd PATH] [--cmdline "..."]`: boot the user's own kernel.
 */
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
import { resolve } from "node:path";
import { DEFAULT_KERNEL_CMDLINE, readKernelGuest } from "../guest/kernel-guest.ts";
import { type GuestSpec, guestLabel } from "../vmm/guest-spec.ts";
import { readVmConfig } from "./vm-config.ts";
import { checkDiskImages, type DiskAttachment, parseDiskOption } from "../disk/image.ts";
import { checkBridgeName, DEFAULT_BRIDGE, type NetAttachment } from "../net/tap.ts";

interface RunOptions {
  backend?: string;
  mem?: string;
  vcpus?: number;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  disk?: string | string[];
  net?: string | boolean;
  configFile?: string;
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
    .command("run [workload] [...params]", "Boot the built-in guest and run a workload in it, or boot your own kernel")
    .usage(
      `run <workload> [key=value ...] [options]\n  run --kernel <path> [--initrd <path>] [--cmdline "..."] [options]\n  run --config-file <path> [options]\n\nWorkloads of the built-in guest:\n${workloadHelp()}`,
    )
    .option("--kernel <path>", "Boot this kernel instead of the built-in guest: a Linux bzImage, or an ELF with a PVH entry")
    .option("--initrd <path>", "With --kernel: the initramfs (or initrd) the kernel gets")
    .option("--cmdline <text>", `With --kernel: the kernel's command line (default: "${DEFAULT_KERNEL_CMDLINE}")`)
    .option("--disk <path[,ro]>", "With --kernel: a raw disk image the guest sees as /dev/vdX (virtio), read-write or ,ro; repeatable")
    .option(
      "--net [bridge]",
      `With --kernel: a virtio network device on a tap device of the bridge (made if missing; default ${DEFAULT_BRIDGE}); ` +
        "the VM's clones on this host join the same bridge, each with a MAC of its own",
    )
    .option(
      "--config-file <path>",
      "Read kernel, initrd, cmdline, disks, net, mem, vcpus and name from a JSON file; options given here win",
    )
    .option("--mem <size>", "Guest memory (K/M/G suffixes, multiple of 2M; default 256M)")
    .option("--vcpus <n>", "Virtual CPUs (default 1)")
    .option("--memory <path>", "How clones the guest makes get memory: cow or ondemand", { default: "cow" })
    .option("--max-clones <n>", "Most clones one sf_request_ticket grants", { default: 32 })
    .option("--name <name>", "Name for ls/logs/kill (default: <workload>-<n>, or linux-<n> with --kernel)")
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
    .example((bin) => `  ${bin} run --kernel /boot/vmlinuz-$(uname -r) --initrd initramfs.cpio --mem 512M --name vm1 --detach`)
    .example((bin) => `  ${bin} run --kernel bzImage --initrd init.cpio --disk root.ext4 --net br0 --name vm2 --detach`)
    .example((bin) => `  ${bin} cluster up --hosts 4 && ${bin} run sha256-par size=64M seed=7 clones=8 --cluster --json`)
    .action(async (workloadName: string | undefined, params: string[], options: RunOptions) => {
      const config = options.configFile === undefined ? {} : readVmConfig(String(options.configFile));
      const kernelPath = options.kernel ?? config.kernel;
      const givenDisks = [options.disk ?? []].flat().map((d) => parseDiskOption(String(d)));
      const guest = chooseGuest(workloadName, params.map(String), kernelPath, {
        initrd: options.initrd ?? config.initrd,
        cmdline: options.cmdline ?? config.cmdline,
        disks: givenDisks.length > 0 ? givenDisks : config.disks,
        net: netOption(options.net) ?? config.net,
      });
      const memoryBytes = memoryOption(options.mem ?? config.mem ?? "256M");
      const vcpus = vcpusOption(options.vcpus ?? config.vcpus ?? 1);
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
      const givenName = options.name ?? config.name;
      const name = givenName === undefined ? freeName(guestLabel(guest).name) : checkName(String(givenName));
      const clusterArgs = [
        ...(cluster ? [`--cluster=${cluster.inventoryPath}`, "--transport", transport] : []),
        ...heuristicsOff.flatMap((h) => ["--no-heuristic", h]),
      ];
      if (options.detach)
        return detach(
          name,
          guest.kind === "workload" ? [guest.workload.name, ...params.map(String)] : kernelArguments(guest),
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
      if (guest.kind === "workload") checkMemory(guest.workload, memoryBytes);
      (await selectBackend(options.backend, "run")).check();
      if (!options.json)
        log.start(
          `booting ${name}: ${guestLabel(guest).cmdline} (${formatSize(memoryBytes)}, ${vcpus} ` +
            `vCPU${vcpus > 1 ? "s" : ""})${cluster ? ` on ${cluster.host.name} of cluster '${cluster.inventory.cluster}'` : ""}`,
        );
      const result = await runVm(
        { name, guest, memoryBytes, vcpus, maxClones, memoryPath, cluster, transport, heuristicsOff },
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
async function detach(name: string, guest: string[], options: string[], json: boolean): Promise<number> {
  claimName(name);
  const { pid } = await spawnVmm(name, ["run", ...guest, ...options, "--name", name]);
  if (json) printJson({ name, pid, socket: vmPaths(name).socket, log: vmPaths(name).log });
  else {
    printLine(name);
    log.success(`${name} runs in the background (pid ${pid}); \`snowflock logs ${name}\` shows its console`);
  }
  return 0;
}

/**
 * The built-in guest with a workload, or the user's kernel (read and checked here, so that a bad
 * path or a file that is not a kernel stops everything before a VM or a name exists).
 */
function chooseGuest(
  workloadName: string | undefined,
  params: string[],
  kernel: string | undefined,
  files: { initrd?: string; cmdline?: string; disks?: DiskAttachment[]; net?: NetAttachment },
): GuestSpec {
  if (kernel === undefined) {
    if (files.initrd !== undefined || files.cmdline !== undefined || files.disks?.length || files.net)
      throw new SnowflockError("USAGE", "--initrd, --cmdline, --disk and --net go with --kernel", "name the kernel with --kernel PATH");
    if (workloadName === undefined)
      throw new SnowflockError("USAGE", "run needs a workload of the built-in guest or --kernel PATH", "see `snowflock run --help`");
    return { kind: "workload", workload: parseWorkload(workloadName, params) };
  }
  if (workloadName !== undefined)
    throw new SnowflockError(
      "USAGE",
      `a workload ('${workloadName}') is for the built-in guest; --kernel boots your own`,
      "give either a workload or --kernel",
    );
  const cmdline = files.cmdline ?? DEFAULT_KERNEL_CMDLINE;
  const guest = readKernelGuest({
    kernel: resolve(kernel),
    cmdline,
    ...(files.initrd === undefined ? {} : { initrd: resolve(files.initrd) }),
  });
  const disks = (files.disks ?? []).map((d) => ({ path: resolve(d.path), readOnly: d.readOnly }));
  checkDiskImages(disks);
  return { kind: "kernel", guest, disks, ...(files.net ? { net: files.net } : {}) };
}

/** --net's bridge: the default for a bare --net. */
function netOption(value: string | boolean | undefined): NetAttachment | undefined {
  if (value === undefined || value === false) return undefined;
  return { bridge: value === true ? DEFAULT_BRIDGE : checkBridgeName(String(value)) };
}

/** The same kernel guest for the detached VMM's command line. */
function kernelArguments(guest: Extract<GuestSpec, { kind: "kernel" }>): string[] {
  const { files } = guest.guest;
  return [
    "--kernel",
    files.kernel,
    ...(files.initrd === undefined ? [] : ["--initrd", files.initrd]),
    "--cmdline",
    files.cmdline,
    ...guest.disks.flatMap((d) => ["--disk", `${d.path},${d.readOnly ? "ro" : "rw"}`]),
    ...(guest.net ? ["--net", guest.net.bridge] : []),
  ];
}
