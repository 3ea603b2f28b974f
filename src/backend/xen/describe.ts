/**
 * `snowflock descriptor DOMU` on Xen: what a PVH domU's descriptor is made of. The domain suspends itself (as for a
 * fork), its HVM context and RAM are read once, and it resumes as after a checkpoint; from the
 * frozen copy come the non-zero page bitmap and the pages a clone needs before it runs (page
 * tables, the pages under each vCPU's RIP and RSP, its per-CPU area: persist.ts's eagerFrames).
 * Its state carries the domain's libxl configuration, from which any host builds clone shells.
 */
import type { DomainSnapshot } from "../backend.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import type { XenHost } from "./host.ts";
import { captureImagePart, createImageFile, discardImageFile, imagePages, imageView } from "./memory-image.ts";
import { ramPagesOf } from "./ondemand.ts";
import { captureState, eagerFrames } from "./persist.ts";
import { forkableParent } from "./shells.ts";

/** What the descriptor of domain `domid` is made of, and how long it stood still for it. */
export function snapshotDomain(host: XenHost, domid: number): DomainSnapshot {
  const { parent, parentName, config } = forkableParent(host, domid);
  const pages = ramPagesOf(parentName, config);
  const memorySize = pages * XC_PAGE_SIZE;
  // Allocated before the domain stops, as for a fork's image.
  const file = createImageFile(`${parentName}.descriptor`, pages);
  try {
    const libxl = host.libxl();
    const started = performance.now();
    libxl.suspend(parent.domid);
    let state: ReturnType<typeof captureState>;
    let nonZeroPages: Uint8Array;
    try {
      state = captureState(host, parent.domid, memorySize, JSON.stringify(config));
      nonZeroPages = captureImagePart(host.foreignMemory(), parent.domid, file, 0, pages).nonZeroPages;
    } finally {
      libxl.resume(parent.domid, true);
    }
    const pausedMs = performance.now() - started;
    const included = imagePages(file, eagerFrames(state, imageView(file)));
    return { name: parentName, cmdline: config.b_info.cmdline ?? "", state, nonZeroPages, pages: included, pausedMs };
  } finally {
    discardImageFile(file);
  }
}
