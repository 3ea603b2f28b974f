/**
 * Shells kept ready for a domain's forks (`snowflock pool DOMU --clones N`): paused domains built
 * from the parent's configuration under its next clone IDs and published in XenStore as the
 * family's ready shells (`ready-shell`); with memory on demand each one already paged out by its
 * pager, which the agent holds (ShellPagers). A fork of N clones takes N ready shells with
 * consecutive IDs from the lowest, so all it does is suspend the parent, set each clone's context,
 * fill the pages that must be present and unpause: the shells' build and page-out, which cost
 * about as much as an eager copy, happened before. Eager shells any process may take; on-demand
 * ones only the agent that holds their pagers.
 */
import { SnowflockError } from "../../errors.ts";
import { scaledTimeout } from "../../timeouts.ts";
import type { PoolResult, StartedDomain } from "../backend.ts";
import { clonesOf, destroyDomains, listMembers } from "./family.ts";
import { buildShells, forkableParent, nextCloneId, startHelpers } from "./shells.ts";
import type { XenHost } from "./host.ts";
import { pageOutShells, ramPagesOf } from "./ondemand.ts";
import { createImageFile, discardImageFile, type ImageFile } from "./memory-image.ts";
import type { XenPager } from "./pager.ts";

type Memory = "eager" | "ondemand";

/** The entry under `key`, out of `map`. */
function takeFrom<V>(map: Map<number, V>, key: number): V | undefined {
  const value = map.get(key);
  map.delete(key);
  return value;
}

/**
 * The pagers of the on-demand ready shells (the agent's), until a fork takes them; and per parent
 * an image file made ready for its next fork's frozen image (allocating it takes a second).
 */
export class ShellPagers {
  private readonly pagers = new Map<number, XenPager>();
  private readonly images = new Map<number, ImageFile>();

  add(pagers: XenPager[]): void {
    for (const pager of pagers) this.pagers.set(pager.domid, pager);
  }
  has(domid: number): boolean {
    return this.pagers.has(domid);
  }
  /** The shell's pager, now the fork's. */
  take(domid: number): XenPager | undefined {
    return takeFrom(this.pagers, domid);
  }
  domids(): number[] {
    return [...this.pagers.keys()];
  }
  /** Keeps `file` ready for the next on-demand fork of domain `parent`. */
  holdImage(parent: number, file: ImageFile): void {
    this.dropImage(parent);
    this.images.set(parent, file);
  }
  hasImage(parent: number): boolean {
    return this.images.has(parent);
  }
  /** The parent's ready image file, now the fork's. */
  takeImage(parent: number): ImageFile | undefined {
    return takeFrom(this.images, parent);
  }
  dropImage(parent: number): void {
    const file = this.takeImage(parent);
    if (file) discardImageFile(file);
  }
  /** Stops the pagers of shells that are gone (a kill or `xl destroy`): a dying domain waits for its pager to let go. */
  async sweep(alive: (domid: number) => boolean): Promise<void> {
    for (const [domid, pager] of this.pagers) {
      if (alive(domid)) continue;
      this.pagers.delete(domid);
      await pager.stop();
    }
    for (const parent of this.images.keys()) if (!alive(parent)) this.dropImage(parent);
  }
  async stop(domids: number[]): Promise<void> {
    for (const domid of domids) await this.take(domid)?.stop();
  }
}

/** The parent's ready shells for `memory`, by clone ID. */
export function readyShells(host: XenHost, parent: number, memory: Memory): StartedDomain[] {
  return clonesOf(listMembers(host), parent, { readyShells: true })
    .filter((m) => m.member!.readyShell && (m.member!.memory === "ondemand") === (memory === "ondemand"))
    .map((m) => ({ name: m.name, domid: m.domain.domid, cloneId: m.member!.cloneId, mac: m.member!.mac ?? "" }))
    .sort((a, b) => a.cloneId - b.cloneId);
}

/** `count` ready shells with consecutive IDs from the lowest, that this process can start; undefined when there are not. */
export function readyRun(host: XenHost, parent: number, memory: Memory, count: number, pagers?: ShellPagers): StartedDomain[] | undefined {
  const usable = readyShells(host, parent, memory).filter((s) => memory === "eager" || pagers?.has(s.domid));
  const run = usable.slice(0, count);
  if (run.length < count || run.some((s, i) => s.cloneId !== run[0]!.cloneId + i)) return undefined;
  return run;
}

export interface PoolRequest {
  parent: number;
  /** Shells to have ready after the call; 0 ends them all. */
  clones: number;
  memory: Memory;
  workDirectory: string;
  /** The agent's: where on-demand shells' pagers stay (without it, on demand is refused). */
  pagers?: ShellPagers;
  progress?: (line: string) => void;
}

const PAGE_OUT_TIMEOUT_MS = scaledTimeout(600_000);

/** Brings the parent's ready shells to `request.clones` (building or ending shells); see the file comment. */
export async function fillPool(host: XenHost, request: PoolRequest): Promise<PoolResult> {
  const say = request.progress ?? (() => {});
  const { parent, parentName, config } = forkableParent(host, request.parent);
  if (request.memory === "ondemand" && !request.pagers)
    throw new SnowflockError(
      "USAGE",
      "on-demand shells need a process that stays: the agent",
      "run `snowflock agent --backend xen` in this dom0; `snowflock pool --memory ondemand` goes through it",
    );
  const ramPages = request.memory === "ondemand" ? ramPagesOf(parentName, config) : 0;
  const other = readyShells(host, parent.domid, request.memory === "eager" ? "ondemand" : "eager");
  const same = readyShells(host, parent.domid, request.memory);
  const extra = [...other, ...same.slice(request.clones)];
  if (extra.length > 0) {
    say(`ending ${extra.length} ready shell(s) of ${parentName}`);
    destroyDomains(
      host,
      extra.map((s) => s.domid),
    );
    await request.pagers?.stop(extra.map((s) => s.domid));
  }
  const missing = Math.max(0, request.clones - same.length);
  const built: StartedDomain[] = [];
  let shellsMs = 0;
  let pageOutMs = 0;
  let framesPagedOut = 0;
  if (missing > 0) {
    const first = nextCloneId(host, parent.domid);
    const helpers = startHelpers(missing);
    let pagers: XenPager[] = [];
    try {
      say(`building ${missing} ready shell(s) of ${parentName} on ${helpers.count} thread(s)`);
      const started = performance.now();
      await buildShells(
        host,
        helpers,
        { parent: parent.domid, parentName, config, workDirectory: request.workDirectory },
        Array.from({ length: missing }, (_, i) => first + i),
        { memory: request.memory === "ondemand" ? "ondemand" : undefined, readyShell: true },
        built,
      );
      shellsMs = performance.now() - started;
      if (request.memory === "ondemand") {
        const paged = await pageOutShells(built, ramPages, PAGE_OUT_TIMEOUT_MS, say);
        pagers = paged.pagers;
        pageOutMs = paged.pageOutMs;
        framesPagedOut = Math.min(...pagers.map((p) => p.attached.pagedOut));
        request.pagers!.add(pagers);
      }
    } catch (error) {
      destroyDomains(
        host,
        built.map((s) => s.domid),
      );
      await request.pagers?.stop(built.map((s) => s.domid));
      throw error;
    } finally {
      await helpers.close();
    }
  }
  // The next fork's image file, while the parent runs (none once the pool is emptied).
  if (request.memory === "ondemand" && request.clones > 0 && !request.pagers!.hasImage(parent.domid))
    request.pagers!.holdImage(parent.domid, createImageFile(`${parentName}.image`, ramPages));
  if (request.clones === 0) request.pagers?.dropImage(parent.domid);
  return {
    parent: parentName,
    memory: request.memory,
    shells: readyShells(host, parent.domid, request.memory).map(({ name, domid, cloneId }) => ({ name, domid, cloneId })),
    built: built.length,
    ended: extra.length,
    shellsMs,
    pageOutMs,
    framesPagedOut,
  };
}
