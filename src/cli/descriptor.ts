/** `snowflock descriptor NAME -o FILE`: write a running VM's descriptor to a file. */
import type { CAC } from "cac";
import { resolve } from "node:path";
import { SnowflockError } from "../errors.ts";
import type { DomainOperations } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { describeDomain } from "../clone/describe.ts";
import { decodeDescriptor, encodeDescriptor } from "../descriptor/format.ts";
import { type DescriptorSummary, summarize } from "../descriptor/summary.ts";
import { controlRequest } from "../vmm/control-client.ts";
import { checkName } from "../run-dir.ts";
import { writePrivateFile } from "../sys/private-file.ts";
import { log, printJson } from "../output.ts";
import { printSummary } from "./inspect.ts";

export function registerDescriptor(cli: CAC): void {
  cli
    .command("descriptor <name>", "Write a running VM's descriptor (its state without bulk memory) to a file")
    .option("-o, --output <file>", "Where to write it")
    .option("--json", "Print what was written as JSON")
    .example((bin) => `  ${bin} descriptor web -o web.sfd && ${bin} inspect web.sfd`)
    .example((bin) => `  ${bin} descriptor mydomu -o mydomu.sfd --backend xen     # in a Xen dom0 (a PVH domU; it suspends for a moment)`)
    .action(async (name: string, options: { output?: string; json?: boolean; backend?: string }) => {
      if (!options.output) throw new SnowflockError("USAGE", "descriptor needs -o FILE", "e.g. `snowflock descriptor web -o web.sfd`");
      const path = resolve(String(options.output));
      const backend = await selectBackend(options.backend, "descriptor");
      const summary = backend.domains
        ? await domainDescriptor(backend.domains, String(name), path)
        : await vmDescriptor(String(name), path);
      if (options.json) return printJson({ path, ...summary });
      log.success(`wrote ${path} (VM paused ${summary.pausedMs.toFixed(2)} ms)`);
      printSummary(summary);
    });
}

/** A VM of snowflock's own VMM writes its descriptor itself. */
async function vmDescriptor(name: string, path: string): Promise<DescriptorSummary & { pausedMs: number }> {
  const answer = await controlRequest(checkName(name), { op: "descriptor", path }, 30_000);
  if (!answer.ok) throw new SnowflockError("CONTROL", `VM '${name}' could not write its descriptor: ${answer.error}`);
  return answer.descriptor!;
}

/** A domain the hypervisor runs is read from here. */
async function domainDescriptor(domains: DomainOperations, name: string, path: string): Promise<DescriptorSummary & { pausedMs: number }> {
  const snapshot = await domains.snapshot(name);
  const bytes = encodeDescriptor(describeDomain(snapshot));
  writePrivateFile(path, bytes);
  const { descriptor, envelope } = decodeDescriptor(bytes);
  return { ...summarize(descriptor, envelope, bytes.byteLength), pausedMs: snapshot.pausedMs };
}
