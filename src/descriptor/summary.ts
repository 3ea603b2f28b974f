/** What `inspect` shows of a descriptor. */
import type { VcpuSummary } from "../backend/backend.ts";
import { statePersist } from "../backend/persist.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { PageBitmap } from "../wasm/page-bitmap.ts";
import type { EnvelopeInfo } from "./envelope.ts";
import type { Descriptor } from "./format.ts";

export interface DescriptorSummary {
  formatVersion: number;
  name: string;
  cmdline: string;
  createdAt: string;
  backend: string;
  vcpus: VcpuSummary[];
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
    backend: d.meta.backend,
    vcpus: statePersist(d.meta.backend).summary(d.state),
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
