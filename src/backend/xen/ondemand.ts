/**
 * Memory on demand for a Xen fork round (a Xen built with paging): each clone shell gets its own
 * pager (pager.ts), which pages the shell's RAM out while the parent still runs; the suspended
 * parent's RAM is copied once into a memfd image; at restore each pager starts serving before its
 * clone is unpaused, copying each page it brings in from that image (the pagers are Workers of
 * this process: no server between them and it). Afterwards the keeper (keeper.ts) holds the pagers
 * and the image for as long as the clones live.
 */
import { SnowflockError } from "../../errors.ts";
import { formatPageServer } from "../../memory/page-server-address.ts";
import { ownFdPath } from "../../sys/process.ts";
import { scaledTimeout } from "../../timeouts.ts";
import type { OnDemandFigures, StartedDomain } from "../backend.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import type { Keeper } from "./keeper.ts";
import type { ForkHelpers } from "./fork-helpers.ts";
import { captureOnHelpers } from "./image-export.ts";
import { createImageFile, discardImageFile, type ImageFile, type MemoryImage, trimImageFile } from "./memory-image.ts";
import type { XenState } from "./persist.ts";
import { attachPager, type XenPager } from "./pager.ts";

export const PAGE_OUT_TIMEOUT_MS = scaledTimeout(600_000);
const SERVE_TIMEOUT_MS = scaledTimeout(60_000);
const FETCH_TIMEOUT_MS = scaledTimeout(30_000);

/** A PVH domain's RAM frames: [0, memory), which must equal maxmem (Xen refuses paging with populate-on-demand). */
export function ramPagesOf(name: string, config: { b_info: { max_memkb?: number; target_memkb?: number } }): number {
  const { max_memkb: max, target_memkb: target } = config.b_info;
  if (!target || !max) throw new SnowflockError("VM_STATE", `domain ${name}'s configuration gives no memory size`);
  if (max !== target)
    throw new SnowflockError(
      "VM_STATE",
      `domain ${name} has maxmem ${max / 1024} MiB above its memory ${target / 1024} MiB (populate on demand)`,
      "memory on demand needs memory = maxmem: Xen refuses paging for a domain with populate on demand",
    );
  return (target * 1024) / XC_PAGE_SIZE;
}

/** Attaches a pager to each shell, paging them out side by side (one Worker each); on a failure the others are stopped too. */
export async function pageOutShells(
  shells: StartedDomain[],
  ramPages: number,
  timeoutMs: number,
  say: (line: string) => void,
): Promise<{ pagers: XenPager[]; pageOutMs: number }> {
  say(`paging out ${shells.length} shell(s) of ${ramPages} frames each`);
  const started = performance.now();
  const attached = await Promise.allSettled(shells.map((c) => attachPager(c.domid, ramPages, timeoutMs)));
  const pagers = attached.flatMap((a) => (a.status === "fulfilled" ? [a.value] : []));
  const failed = attached.find((a) => a.status === "rejected");
  if (failed) {
    for (const pager of pagers) await pager.stop();
    throw (failed as PromiseRejectedResult).reason;
  }
  return { pagers, pageOutMs: performance.now() - started };
}

export class OnDemandMemory {
  private pagers: XenPager[] = [];
  private file: ImageFile | undefined;
  private image: MemoryImage | undefined;
  private pageOutMs = 0;
  private eager: number[] = [];
  private handedOver = false;

  constructor(
    private readonly parentName: string,
    private readonly ramPages: number,
    private readonly request: { keeper?: Keeper },
  ) {
    if (!request.keeper)
      throw new SnowflockError(
        "USAGE",
        "clones with memory on demand need a process that stays: the agent",
        "run `snowflock agent --backend xen` in this dom0 and fork from there (sf clone inside the domU)",
      );
  }

  /** Attaches a pager to each shell; they page out side by side (one Worker each). */
  async pageOut(clones: StartedDomain[], say: (line: string) => void): Promise<void> {
    const paged = await pageOutShells(clones, this.ramPages, PAGE_OUT_TIMEOUT_MS, say);
    this.pagers = paged.pagers;
    this.pageOutMs = paged.pageOutMs;
  }

  /** The round's shells were paged out before the fork (ready shells): their pagers serve this round. */
  adopt(pagers: XenPager[]): void {
    this.pagers = pagers;
    this.pageOutMs = 0;
  }

  /** The image's file, its pages allocated while the parent still runs (a second under emulation): `ready` if the pool made one. */
  prepareImage(ready?: ImageFile): void {
    if (ready?.pages === this.ramPages) this.file = ready;
    else if (ready) discardImageFile(ready);
    this.file ??= createImageFile(`${this.parentName}.image`, this.ramPages);
  }

  /** With the parent suspended: its RAM into the image (a part per helper thread), and the frames each clone needs before it runs. */
  async capture(helpers: ForkHelpers, parent: number, state: XenState): Promise<void> {
    this.prepareImage();
    ({ image: this.image, eager: this.eager } = await captureOnHelpers(helpers, parent, this.file!, state));
  }

  /** The pager of `domid` serves from now on; its domain may run once this resolves. */
  async serve(domid: number): Promise<void> {
    const pager = this.pagers.find((p) => p.domid === domid);
    if (!pager || !this.image) throw new SnowflockError("INTERNAL", `no pager for clone domain ${domid}`);
    await pager.serve(
      {
        server: formatPageServer({ kind: "image", path: ownFdPath(this.image.fd) }),
        nonZeroPages: this.image.nonZeroPages,
        freePages: new Uint8Array(this.image.nonZeroPages.byteLength),
        prefetch: true,
        eagerFrames: this.eager,
        timeoutMs: FETCH_TIMEOUT_MS,
      },
      SERVE_TIMEOUT_MS,
    );
  }

  /** The clones run: the keeper holds their pagers and the image from now on. */
  handOver(): void {
    this.request.keeper!.keep({ parent: this.parentName, imageFd: this.image!.fd, pagers: this.pagers });
    this.handedOver = true;
    // The zero pages' memory goes back just after, off the fork's path; the round cannot have
    // ended (and closed the file) before then.
    const file = this.file!;
    const nonZeroPages = this.image!.nonZeroPages;
    this.file = undefined;
    setTimeout(() => {
      try {
        trimImageFile(file, nonZeroPages);
      } catch {
        // Holes only give memory back: the image reads the same without them.
      }
    }, 0);
  }

  figures(): OnDemandFigures {
    return {
      pagesPagedOut: Math.min(...this.pagers.map((p) => p.attached.pagedOut)),
      pageOutMs: this.pageOutMs,
      imagePages: this.ramPages,
      zeroPages: this.image?.zeroPages ?? 0,
      eagerFrames: this.eager.length,
    };
  }

  async abandon(): Promise<void> {
    if (this.handedOver) return;
    for (const pager of this.pagers) await pager.stop();
    if (this.file) discardImageFile(this.file);
  }
}
