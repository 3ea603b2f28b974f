/**
 * The CLI: one cac program, one file per command, and one error funnel — a SnowflockError prints
 * one line (plus its hint) and sets a non-zero exit status; --debug shows the stack.
 */
import { cac } from "cac";
import { SnowflockError } from "../errors.ts";
import { timeoutScale } from "../timeouts.ts";
import { registerAgent } from "./agent.ts";
import { chosenBackend } from "./backend.ts";
import { registerBench } from "./bench.ts";
import { registerCluster } from "./cluster.ts";
import { registerDescriptor } from "./descriptor.ts";
import { registerDoctor } from "./doctor.ts";
import { registerInspect } from "./inspect.ts";
import { registerFork } from "./fork.ts";
import { registerKill } from "./kill.ts";
import { registerLogs } from "./logs.ts";
import { registerLs } from "./ls.ts";
import { log } from "./output.ts";
import { registerRun } from "./run.ts";
import packageJson from "../../package.json" with { type: "json" };

/**
 * cac reads any `--no-X` as a bare negation, so an option that takes a value under such a name
 * (`--no-heuristic NAME`) is spelt for it as the option it declares (`--heuristic-off NAME`).
 */
function spellNegatedValues(argv: string[]): string[] {
  return argv.map((arg) => (arg === "--no-heuristic" ? "--heuristic-off" : arg.startsWith("--no-heuristic=") ? `--heuristic-off=${arg.slice(15)}` : arg));
}

/** Runs the CLI on `argv` (without the program name) and returns the process exit status. */
export async function startCli(argv: string[]): Promise<number> {
  // Internal: a clone's own VMM process, started by a fork (never typed by users).
  if (argv[0] === "__clone") return runCloneProcess(argv.slice(1));
  const cli = cac("snowflock");
  cli.option("--debug", "Show stack traces on errors");
  cli.option("--backend <name>", "kvm or xen (default: xen in a Xen dom0, else kvm)");
  registerRun(cli);
  registerLs(cli);
  registerLogs(cli);
  registerKill(cli);
  registerFork(cli);
  registerDescriptor(cli);
  registerInspect(cli);
  registerBench(cli);
  registerCluster(cli, { startAgents: async (inventory, path, maxClones) => (await import("../cluster/test-agents.ts")).startTestAgents(inventory, path, maxClones) });
  registerAgent(cli);
  registerDoctor(cli);
  cli.help();
  cli.version(packageJson.version);

  try {
    cli.parse(["snowflock", "snowflock", ...spellNegatedValues(argv)], { run: false });
    if (!cli.matchedCommand) {
      if (cli.options.help || cli.options.version) return 0;
      if (cli.args.length > 0) throw new SnowflockError("USAGE", `unknown command '${cli.args[0]}'`, "`snowflock --help` lists the commands");
      cli.outputHelp();
      return 0;
    }
    if (cli.options.help) return 0;
    timeoutScale(); // a bad SNOWFLOCK_TIMEOUT_SCALE is refused here, before anything waits on it
    // Every command takes --backend; those without a Xen side refuse it here.
    if (cli.options.backend !== undefined) await chosenBackend(cli.options.backend, cli.matchedCommand.name.split(" ")[0]!);
    const status = await cli.runMatchedCommand();
    return typeof status === "number" ? status : 0;
  } catch (error) {
    if (cli.options.debug) log.error(error);
    if (error instanceof SnowflockError) log.error(error.render());
    else if (error instanceof Error && error.name === "CACError") log.error(`${error.message} (\`snowflock --help\` shows the usage)`);
    else if (!cli.options.debug) log.error(`internal error: ${(error as Error)?.message ?? error} (run with --debug for details)`);
    return 1;
  }
}

/** `__clone PARENT ID DESCRIPTOR cow:/proc/PID/fd/N | ondemand:unix:SOCKET | ondemand:tcp:ADDRESS:PORT:TOKEN` */
async function runCloneProcess([parent, cloneId, descriptorPath, memorySource]: string[]): Promise<number> {
  try {
    const { runClone } = await import("../vmm/vmm.ts");
    const { parsePageServer } = await import("../memory/page-server-address.ts");
    const [kind, path] = [memorySource!.slice(0, memorySource!.indexOf(":")), memorySource!.slice(memorySource!.indexOf(":") + 1)];
    const memory = kind === "ondemand" ? { kind: "ondemand" as const, server: parsePageServer(path) } : { kind: "cow" as const, imagePath: path };
    const result = await runClone({ parent: parent!, cloneId: Number(cloneId), descriptorPath: descriptorPath!, memory }, () => {});
    if (result.end.kind === "crash") log.error(`${result.name}: guest crashed on vCPU ${result.end.vcpu}: ${result.end.reason}${result.end.rip ? ` at rip ${result.end.rip}` : ""}`);
    return result.exitStatus;
  } catch (error) {
    log.error(error instanceof SnowflockError ? error.render() : (error as Error).message);
    return 1;
  }
}
