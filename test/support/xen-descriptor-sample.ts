/** A small, valid Xen descriptor (a 16 MiB PVH domU with two vCPUs, one page sent along) for tests to forge variants of. */
import type { XenState } from "../../src/backend/xen/persist.ts";
import { parseHvmContext } from "../../src/backend/xen/hvm-context.ts";
import type { Descriptor } from "../../src/descriptor/format.ts";
import { memoryLayout } from "../../src/guest-memory/layout.ts";
import { abi, blob, cpu, end, header } from "./hvm-context-sample.ts";

const MEMORY = 16 * 1024 * 1024;
/** libxl's JSON of a 16 MiB PVH domU, as much of it as a shell is built from. */
export const SAMPLE_XEN_CONFIG = JSON.stringify({
  c_info: { type: "pvh", name: "domu" },
  b_info: { max_memkb: MEMORY / 1024, target_memkb: MEMORY / 1024, kernel: "/boot/vmlinuz", cmdline: "console=hvc0" },
  nics: [{ mac: "00:16:3e:00:00:01", bridge: "sfbr0" }],
});

export function sampleXenDescriptor(context = blob([header(), cpu(0, 0x1000), cpu(1, 0x2000), end])): Descriptor & { state: XenState } {
  return {
    meta: {
      backend: "xen",
      name: "domu",
      cmdline: "pvh",
      memorySize: MEMORY,
      regions: memoryLayout(MEMORY).regions,
      createdAt: "2026-12-03T00:00:00.000Z",
    },
    state: { backend: "xen", release: "4.17", context: parseHvmContext(context, abi), memorySize: MEMORY, config: SAMPLE_XEN_CONFIG },
    nonZeroPages: new Uint8Array(MEMORY / 4096 / 8).fill(0x0f),
    pages: new Map([[2, new Uint8Array(4096).fill(9)]]),
  };
}
