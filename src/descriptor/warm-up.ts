/**
 * Runs the descriptor's code once over a small descriptor of `state`: a ready VMM (pool/) does this
 * ahead, so its clone's descriptor is decoded by code already compiled, not interpreted cold.
 */
import type { BackendState } from "../backend/backend.ts";
import { memoryLayout, PAGE_SIZE } from "../guest-memory/layout.ts";
import { decodeDescriptor, encodeDescriptor } from "./format.ts";

export function warmUpDescriptorCode(state: BackendState, memorySize: number): void {
  const nonZeroPages = new Uint8Array(memorySize / PAGE_SIZE / 8).fill(0x11);
  const page = new Uint8Array(PAGE_SIZE).fill(1);
  for (let round = 0; round < 3; round++)
    decodeDescriptor(
      encodeDescriptor({
        meta: {
          backend: state.backend,
          name: "warm-up",
          cmdline: "",
          memorySize,
          regions: memoryLayout(memorySize).regions,
          createdAt: new Date().toISOString(),
        },
        state,
        nonZeroPages,
        freePages: nonZeroPages,
        pages: new Map([
          [0, page],
          [4, page],
        ]),
      }),
    );
}
