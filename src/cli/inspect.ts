/** `snowflock inspect FILE`: what a VM descriptor holds. */
import type { CAC } from "cac";
import { decodeDescriptor, MAX_DESCRIPTOR_FILE_BYTES } from "../descriptor/format.ts";
import { type DescriptorSummary, summarize } from "../descriptor/summary.ts";
import { formatSize } from "../size.ts";
import { readRegularFile } from "../bounded-read.ts";
import { printJson, printLine } from "../output.ts";

export function printSummary(s: DescriptorSummary): void {
  printLine(`descriptor v${s.formatVersion} of ${s.name} (${s.cmdline}), a ${s.backend} machine captured ${s.createdAt}`);
  printLine(`memory      ${formatSize(s.memoryBytes)}: ${s.pages} pages, ${s.pagesNonZero} non-zero, ${s.pagesIncluded} included`);
  printLine(
    `size        ${s.fileBytes} bytes (${s.rawBytes} before compression, ratio ` +
      `${s.compressionRatio.toFixed(1)}:1) = 1/${Math.round(1 / s.fractionOfMemory)} of guest memory`,
  );
  for (const v of s.vcpus)
    printLine(
      `vcpu ${v.index}      rip ${v.rip} rsp ` +
        `${v.rsp}${v.mpState === undefined ? "" : ` mp_state ${v.mpState}`}${v.msrs === undefined ? "" : ` msrs ${v.msrs}`}`,
    );
}

export function registerInspect(cli: CAC): void {
  cli
    .command("inspect <file>", "Show what a VM descriptor holds")
    .option("--json", "Print it as JSON")
    .action((file: string, options: { json?: boolean }) => {
      const bytes = readRegularFile(String(file), { what: "descriptor", maxBytes: MAX_DESCRIPTOR_FILE_BYTES, code: "DESCRIPTOR" });
      const { descriptor, envelope } = decodeDescriptor(bytes);
      const summary = summarize(descriptor, envelope, bytes.byteLength);
      if (options.json) printJson(summary);
      else printSummary(summary);
    });
}
