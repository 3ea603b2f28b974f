/** `snowflock descriptor NAME -o FILE`: write a running VM's descriptor to a file. */
import type { CAC } from "cac";
import { resolve } from "node:path";
import { SnowflockError } from "../errors.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { checkName } from "../run-dir.ts";
import { log, printJson } from "../output.ts";
import { printSummary } from "./inspect.ts";

export function registerDescriptor(cli: CAC): void {
  cli
    .command("descriptor <name>", "Write a running VM's descriptor (its state without bulk memory) to a file")
    .option("-o, --output <file>", "Where to write it")
    .option("--json", "Print what was written as JSON")
    .example((bin) => `  ${bin} descriptor web -o web.sfd && ${bin} inspect web.sfd`)
    .action(async (name: string, options: { output?: string; json?: boolean }) => {
      if (!options.output) throw new SnowflockError("USAGE", "descriptor needs -o FILE", "e.g. `snowflock descriptor web -o web.sfd`");
      const path = resolve(String(options.output));
      const answer = await controlRequest(checkName(String(name)), { op: "descriptor", path }, 30_000);
      if (!answer.ok) throw new SnowflockError("CONTROL", `VM '${name}' could not write its descriptor: ${answer.error}`);
      const summary = answer.descriptor!;
      if (options.json) return printJson({ path, ...summary });
      log.success(`wrote ${path} (VM paused ${summary.pausedMs.toFixed(2)} ms)`);
      printSummary(summary);
    });
}
