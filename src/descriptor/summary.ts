/** What `inspect` shows of a descriptor. */
import * as abi from "../backend/kvm/abi.ts";
import { StructView } from "../sys/layout.ts";
import { PAGE_SIZE } from "../memory/layout.ts";
import { PageBitmap } from "../wasm/page-bitmap.ts";
import type { EnvelopeInfo } from "./envelope.ts";
import type { Descriptor } from "./format.ts";

export interface DescriptorSummary {
  formatVersion: number;
  name: string;
  cmdline: string;
  createdAt: string;
  vcpus: Array<{ index: number; rip: string; rsp: string; mpState: number; msrs: number }>;
  memoryBytes: number;
  pages: number;
  pagesNonZero: number;
  pagesIncluded: number;
  /** Encoded size before and after compression, and the file size (header included). */
  rawBytes: number;
  compressedBytes: number;
  fileBytes: number;
  compressionRatio: number;
  /** File size as a fraction of guest memory (the design target is about 1/1000). */
  fractionOfMemory: number;
}

export function summarize(d: Descriptor, envelope: EnvelopeInfo, fileBytes: number): DescriptorSummary {
  const pages = d.meta.memorySize / PAGE_SIZE;
  using nonZero = PageBitmap.fromBytes(d.nonZeroPages, pages);
  return {
    formatVersion: envelope.version,
    name: d.meta.name,
    cmdline: d.meta.cmdline,
    createdAt: d.meta.createdAt,
    vcpus: d.state.vcpus.map((v, index) => {
      const regs = new StructView(abi.kvm_regs, v.regs);
      return { index, rip: `0x${regs.get64("rip").toString(16)}`, rsp: `0x${regs.get64("rsp").toString(16)}`, mpState: v.mpState, msrs: v.msrs.length };
    }),
    memoryBytes: d.meta.memorySize,
    pages,
    pagesNonZero: nonZero.popcount(),
    pagesIncluded: d.pages.size,
    rawBytes: envelope.rawBytes,
    compressedBytes: envelope.storedBytes,
    fileBytes,
    compressionRatio: envelope.rawBytes / envelope.storedBytes,
    fractionOfMemory: fileBytes / d.meta.memorySize,
  };
}
