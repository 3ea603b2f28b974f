/**
 * The CLI: one cac program, one file per command, and one error funnel — a SnowflockError prints
 * one line (plus its hint) and sets a non-zero exit status; --debug shows the stack.
 */
import { type CAC, cac } from "cac";
import { selectBackend } from "../backend/select.ts";
import { SnowflockError } from "../errors.ts";
import { timeoutScale } from "../timeouts.ts";
import { registerAgent } from "./agent.ts";
import { registerBench } from "./bench.ts";
import { registerCluster } from "./cluster.ts";
import { registerDescriptor } from "./descriptor.ts";
import { registerDoctor } from "./doctor.ts";
import { registerInspect } from "./inspect.ts";
import { registerFork } from "./fork.ts";
import { registerPool } from "./pool.ts";
import { registerKill } from "./kill.ts";
import { registerLogs } from "./logs.ts";
import { registerConsole } from "./console.ts";
import { registerLs } from "./ls.ts";
import { log, printable } from "../output.ts";
import { registerRun } from "./run.ts";
import packageJson from "../../package.json" with { type: "json" };

/**
 * cac reads any `--no-X` as a bare negation, so an option that takes a value under such a name
 * (`--no-heuristic NAME`) is spelt for it as the option it declares (`--heuristic-off NAME`).
 */
function spellNegatedValues(argv: string[]): string[] {
  return argv.map((arg) =>
    arg === "--no-heuristic" ? "--heuristic-off" : arg.startsWith("--no-heuristic=") ? `--heuristic-off=${arg.slice(15)}` : arg,
  );
}

/**
 * mri reads `-1` as the short option `1`, so `--clones -1` would be refused as "Unknown option
 * -1". A negative number right after an option that takes a value is joined to it (`--clones=-1`),
 * for the command's own check to judge it.
 */
function joinNegativeValues(cli: CAC, argv: string[]): string[] {
  const options = [cli.globalCommand, ...cli.commands].flatMap((c) => c.options).filter((o) => !o.isBoolean);
  const takesValue = new Set(options.flatMap((o) => o.rawName.match(/--?[\w-]+/g) ?? []));
  const out: string[] = [];
  for (const arg of argv) {
    const previous = out.at(-1);
    if (/^-\d/.test(arg) && previous !== undefined && takesValue.has(previous)) out[out.length - 1] = `${previous}=${arg}`;
    else out.push(arg);
  }
  return out;
}

/** Runs the CLI on `argv` (without the program name) and returns the process exit status. */
export async function startCli(argv: string[]): Promise<number> {
  // Internal: a clone's own VMM process, started by a fork (never typed by users).
  if (argv[0] === "__clone" || argv[0] === "__ready") return runCloneProcess(argv);
  if (argv[0] === "__pool") return (await import("../pool/keeper-process.ts")).runKeeperProcess();
  const cli = cac("snowflock");
  cli.option("--debug", "Show stack traces on errors");
  cli.option("--backend <name>", "kvm or xen (default: xen in a Xen dom0, else kvm)");
  registerRun(cli);
  registerLs(cli);
  registerLogs(cli);
  registerConsole(cli);
  registerKill(cli);
  registerFork(cli);
  registerPool(cli);
  registerDescriptor(cli);
  registerInspect(cli);
  registerBench(cli);
  registerCluster(cli, {
    startAgents: async (inventory, path, settings) =>
      (await import("../cluster/test-agents.ts")).startTestAgents(inventory, path, settings),
  });
  registerAgent(cli);
  registerDoctor(cli);
  cli.help();
  cli.version(packageJson.version);

  try {
    cli.parse(["snowflock", "snowflock", ...joinNegativeValues(cli, spellNegatedValues(argv))], { run: false });
    if (!cli.matchedCommand) {
      // cac has printed the help (of the command too: it then unsets the command, whose options the global check would refuse).
      if (cli.options.help || cli.options.version) return 0;
      // An unknown option before the command (`--bogus ls`) would otherwise just print the help.
      cli.globalCommand.checkUnknownOptions();
      if (cli.args.length > 0)
        throw new SnowflockError("USAGE", `unknown command '${cli.args[0]}'`, "`snowflock --help` lists the commands");
      cli.outputHelp();
      return 0;
    }
    if (cli.options.help) return 0;
    timeoutScale(); // a bad SNOWFLOCK_TIMEOUT_SCALE is refused here, before anything waits on it
    // Every command takes --backend; those without a Xen side refuse it here.
    if (cli.options.backend !== undefined) await selectBackend(cli.options.backend, cli.matchedCommand.name.split(" ")[0]!);
    const status = await cli.runMatchedCommand();
    return typeof status === "number" ? status : 0;
  } catch (error) {
    if (cli.options.debug) log.error(error);
    // Errors quote what was typed or read (names, files), which must not drive the terminal.
    if (error instanceof SnowflockError) log.error(printable(error.render()));
    else if (error instanceof Error && error.name === "CACError")
      log.error(printable(`${error.message} (\`snowflock --help\` shows the usage)`));
    else if (!cli.options.debug)
      log.error(printable(`internal error: ${(error as Error)?.message ?? error} (run with --debug for details)`));
    return 1;
  }
}

/**
 * `__clone NAME`: a clone's VMM. All it needs (and the secrets it holds) comes in its launch record
 * on fd 3, never on its command line; NAME is there for `ps`. `__ready`: a VMM started ahead of a
 * fork, which hands it the record over its socket (pool/ready-process.ts). Every failure is one
 * line on stderr.
 */
async function runCloneProcess(args: string[]): Promise<number> {
  try {
    if (args[0] === "__ready") return await (await import("../pool/ready-process.ts")).runReadyProcess();
    const { readLaunchRecord, launchName } = await import("../clone/launch-record.ts");
    if (args.length !== 2)
      throw new SnowflockError(
        "USAGE",
        "__clone takes the clone's name only",
        "a clone process is started by snowflock itself, never by hand",
      );
    const record = readLaunchRecord();
    if (args[1] !== launchName(record))
      throw new SnowflockError(
        "USAGE",
        `__clone ${JSON.stringify(args[1]!.slice(0, 64))} was handed the launch record of ${launchName(record)}`,
      );
    return await (await import("../vmm/clone-process.ts")).serveLaunch(record);
  } catch (error) {
    const message = error instanceof SnowflockError ? error.render() : `internal error: ${(error as Error)?.message ?? error}`;
    log.error(printable(message)); // one line: control characters (newlines too) are shown escaped
    return 1;
  }
}
