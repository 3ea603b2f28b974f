/** `snowflock run WORKLOAD [KEY=VALUE ...]`: boot the built-in guest and run a workload in it. */
import type { CAC } from "cac";
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { formatSize } from "../size.ts";
import { checkMemory, parseWorkload, workloadHelp } from "../guest/workloads.ts";
import { checkName, ensureRunDir, freeName, claimName, vmPaths } from "../vmm/run-dir.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { log, printJson, printLine } from "./output.ts";
import { memoryOption, vcpusOption } from "./options.ts";
import { selfCommand } from "./self.ts";

interface RunOptions {
  mem: string;
  vcpus: number;
  name?: string;
  detach?: boolean;
  json?: boolean;
}

const DETACH_READY_TIMEOUT_MS = 15_000;

export function registerRun(cli: CAC): void {
  cli
    .command("run <workload> [...params]", "Boot the built-in guest and run a workload in it")
    .usage(`run <workload> [key=value ...] [options]\n\nWorkloads:\n${workloadHelp()}`)
    .option("--mem <size>", "Guest memory (K/M/G suffixes, multiple of 2M)", { default: "256M" })
    .option("--vcpus <n>", "Virtual CPUs", { default: 1 })
    .option("--name <name>", "Name for ls/logs/kill (default: <workload>-<n>)")
    .option("--detach", "Run in the background; print the VM's name and return")
    .option("--json", "Print one JSON object at the end instead of the console lines")
    .example((bin) => `  ${bin} run hello`)
    .example((bin) => `  ${bin} run sha256 size=64M seed=42 --vcpus 2 --json`)
    .example((bin) => `  ${bin} run serve --name web --detach && ${bin} logs web --follow`)
    .action(async (workloadName: string, params: string[], options: RunOptions) => {
      const workload = parseWorkload(workloadName, params.map(String));
      const memoryBytes = memoryOption(options.mem);
      const vcpus = vcpusOption(options.vcpus);
      ensureRunDir();
      const name = options.name === undefined ? freeName(workload.name) : checkName(String(options.name));
      if (options.detach) return detach(name, workloadName, params, memoryBytes, vcpus, options.json === true);

      const { runVm } = await import("../vmm/vmm.ts");
      const { kvmHost } = await import("../backend/kvm/host.ts");
      checkMemory(workload, memoryBytes);
      kvmHost();
      if (!options.json) log.start(`booting ${name}: ${workload.cmdline} (${formatSize(memoryBytes)}, ${vcpus} vCPU${vcpus > 1 ? "s" : ""})`);
      const result = await runVm({ name, workload, memoryBytes, vcpus }, options.json ? () => {} : printLine);
      if (options.json) printJson(result);
      else if (result.end.kind === "crash") log.error(`${name}: guest crashed on vCPU ${result.end.vcpu}: ${result.end.reason}${result.end.rip ? ` at rip ${result.end.rip}` : ""}`);
      else if (result.end.kind === "exit" && result.end.status !== 0) log.warn(`${name}: guest exited with status ${result.end.status}`);
      return result.exitStatus;
    });
}

/** Starts a VMM process of its own for the VM and waits until its control socket answers. */
async function detach(name: string, workload: string, params: string[], memoryBytes: number, vcpus: number, json: boolean): Promise<number> {
  claimName(name);
  const errorPath = vmPaths(name).startupErrors;
  const errorFd = openSync(errorPath, "w", 0o600);
  const args = [...selfCommand(), "run", workload, ...params, "--mem", String(memoryBytes), "--vcpus", String(vcpus), "--name", name];
  const child = spawn(args[0]!, args.slice(1), { detached: true, stdio: ["ignore", "ignore", errorFd], env: { ...process.env, SNOWFLOCK_QUIET: "1" } });
  closeSync(errorFd);
  let exited: number | null = null;
  child.on("exit", (code) => (exited = code ?? 1));
  child.unref();

  const deadline = Date.now() + DETACH_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (exited !== null) {
      const why = existsSync(errorPath) ? readFileSync(errorPath, "utf8").trim().split("\n").pop() : "";
      throw new SnowflockError("VM_STATE", `VM '${name}' stopped right after starting${why ? `: ${why}` : ` (status ${exited})`}`, `see \`snowflock logs ${name}\``);
    }
    if (existsSync(vmPaths(name).socket)) {
      const answer = await controlRequest(name, "status").catch(() => undefined);
      if (answer?.ok) {
        if (json) printJson({ name, pid: child.pid, socket: vmPaths(name).socket, log: vmPaths(name).log });
        else {
          printLine(name);
          log.success(`${name} runs in the background (pid ${child.pid}); \`snowflock logs ${name}\` shows its console`);
        }
        return 0;
      }
    }
    await Bun.sleep(20);
  }
  throw new SnowflockError("VM_STATE", `VM '${name}' did not come up within ${DETACH_READY_TIMEOUT_MS / 1000} s`, `see \`snowflock logs ${name}\``);
}
