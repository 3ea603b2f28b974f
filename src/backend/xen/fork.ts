/**
 * `snowflock fork` on Xen, for PVH domains, as one round of the clone pipeline (src/clone/pipeline.ts).
 * prepare: the clones' domain shells are built from the parent's own libxl configuration while the
 * parent still runs (shells.ts), or taken from the shells kept ready for it (ready-shells.ts).
 * pause: the parent suspends itself (the guest's Xen suspend path, as for `xl save`). capture: its
 * HVM context is read once; its memory is copied once per clone, straight between domains through
 * foreign mappings (eager), or once into a frozen image the clones' pagers serve (on demand,
 * ondemand.ts). resume: the parent carries on as after a checkpoint (the suspend was "cancelled").
 * restore: each clone gets the context and starts as a restored domain would.
 */
import { availableParallelism } from "node:os";
import { SnowflockError } from "../../errors.ts";
import type { CopyFigures, DomainRound, DomainRoundOptions, StartedDomain } from "../backend.ts";
import { HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN, XC_PAGE_SIZE } from "./abi.ts";
import { publishMember, readMember, takeShell } from "./family-keys.ts";
import type { XenHost } from "./host.ts";
import { workerError } from "./fork-helpers.ts";
import { captureState, type XenState, restoreState } from "./persist.ts";
import { buildShells, forkableParent, nextCloneId, startHelpers } from "./shells.ts";
import type { Keeper } from "./keeper.ts";
import { OnDemandMemory, ramPagesOf } from "./ondemand.ts";
import { readyRun, type ShellPagers } from "./ready-shells.ts";
import { ImageExport } from "./image-export.ts";

export const MAX_XEN_CLONES = 64;

export interface XenRoundRequest extends DomainRoundOptions {
  parent: number;
  clones: number;
  /** `ondemand`: paged-out shells, each served by its pager from a frozen image (a Xen built with paging; see ondemand.ts). */
  memory: "eager" | "ondemand";
  /** Where clones with memory on demand live on once the round is over (the agent's). */
  keeper?: Keeper;
  /** Helper threads for the shells and the copies (default: one per CPU, at most one per clone). */
  threads?: number;
  /** Called once the round is over, whatever its outcome (the backend closes a host it opened for it). */
  onRelease?: () => void;
  /** The pagers of on-demand shells kept ready (the agent's); without them only eager ready shells are taken. */
  shellPagers?: ShellPagers;
}

/** A round of clones of domain `request.parent`; see the file comment. Refuses a parent that cannot be forked at once. */
export function xenRound(host: XenHost, request: XenRoundRequest): DomainRound {
  const say = request.progress ?? (() => {});
  const { parent, parentName, config } = forkableParent(host, request.parent);
  const libxl = host.libxl();
  const onDemand = request.memory === "ondemand" ? new OnDemandMemory(parentName, ramPagesOf(parentName, config), request) : undefined;
  const store = host.xenstore();
  // Shells built ahead of the fork (ready-shells.ts), if enough are there for this round (and its IDs are not given).
  const ready =
    request.cloneIds === undefined && request.clones > 0
      ? readyRun(host, parent.domid, request.memory, request.clones, request.shellPagers)
      : undefined;
  const firstId = ready?.[0]?.cloneId ?? request.firstCloneId ?? nextCloneId(host, parent.domid);
  if (request.firstCloneId !== undefined && firstId !== request.firstCloneId)
    throw new SnowflockError("INTERNAL", `the round of ${parentName} was to start at clone ID ${request.firstCloneId}, not ${firstId}`);
  const cloneIds = request.cloneIds ?? Array.from({ length: request.clones }, (_, i) => firstId + i);
  if (cloneIds.length !== request.clones)
    throw new SnowflockError("INTERNAL", `the round of ${parentName} has ${cloneIds.length} clone IDs for ${request.clones} clones`);
  // Clones on other hosts start from an image of the parent (image-export.ts).
  const exported = request.exportImage ? new ImageExport(parentName, ramPagesOf(parentName, config)) : undefined;
  // Each helper thread takes every k-th clone, for the shells and later for the copy; on demand,
  // each takes a part of the parent's frozen image (one per CPU, however few the clones).
  const helpers = startHelpers(onDemand ? Math.max(request.clones, availableParallelism()) : request.clones, request.threads);
  const share = (w: number) => cloneIds.map((_, i) => i).filter((i) => i % helpers.count === w);
  const clones: StartedDomain[] = [];
  let suspended = false;
  let state: XenState | undefined;
  let copy: CopyFigures | undefined;

  return {
    async prepare() {
      exported?.prepare();
      onDemand?.prepareImage(ready ? request.shellPagers?.takeImage(parent.domid) : undefined);
      if (ready) {
        say(`taking ${ready.length} ready shell(s) of ${parentName}`);
        for (const shell of ready) {
          takeShell(store, shell.domid);
          clones.push(shell);
          request.onCloneReady?.(shell);
        }
        if (onDemand) onDemand.adopt(ready.map((shell) => request.shellPagers!.take(shell.domid)!));
        return;
      }
      say(`building ${request.clones} domain shell(s) from ${parentName}'s configuration on ${helpers.count} thread(s)`);
      await buildShells(
        host,
        helpers,
        { parent: parent.domid, parentName, config, workDirectory: request.workDirectory },
        cloneIds,
        { memory: onDemand ? "ondemand" : undefined },
        clones,
      );
      for (const clone of clones) request.onCloneReady?.(clone);
      if (onDemand) await onDemand.pageOut(clones, say);
    },
    async pause() {
      say(`suspending ${parentName}`);
      libxl.suspend(parent.domid);
      suspended = true;
    },
    async capture() {
      state = captureState(host, parent.domid, parent.totPages * XC_PAGE_SIZE, JSON.stringify(config));
      for (const clone of clones) checkSameRings(host, parent.domid, clone.domid);
      await exported?.capture(helpers, parent.domid, state, config.b_info.cmdline ?? "");
      if (onDemand) return onDemand.capture(helpers, parent.domid, state);
      if (clones.length === 0) return;
      const maximumGpfn = host.maximumGpfn(parent.domid);
      const copies = await Promise.all(
        Array.from({ length: helpers.count }, (_, w) =>
          helpers.call(w, { kind: "copy", parent: parent.domid, clones: share(w).map((i) => clones[i]!.domid), maximumGpfn }),
        ),
      );
      const copyFailed = copies.find((reply) => reply.error);
      if (copyFailed?.error) throw workerError(copyFailed.error);
      const copied = copies[0]!.result!;
      copy = {
        threads: helpers.count,
        pagesCopied: copied.pages,
        pagesZero: copied.zeroPages,
        bytesCopied: (copied.pages - copied.zeroPages) * XC_PAGE_SIZE * clones.length,
      };
    },
    async resume() {
      if (!suspended) return;
      libxl.resume(parent.domid, true);
      suspended = false;
      if (readMember(store, parent.domid) === undefined)
        publishMember(store, parent.domid, { cloneId: 0, family: parent.domid, parentName });
      request.onParentResumed?.();
    },
    async distribute() {
      if (!state) throw new SnowflockError("INTERNAL", `the round of ${parentName} distributed before it captured`);
      return state;
    },
    async restore(captured) {
      for (const clone of clones) restoreState(host, clone.domid, captured as XenState);
      // Each pager (a Worker of its own) loads its clone's eager frames beside the others, and no
      // clone runs before all are served: a running clone would take the CPU its siblings' wait for.
      if (onDemand) await Promise.all(clones.map((clone) => onDemand.serve(clone.domid)));
      // A PVH clone has no device model to resume: unpausing the domain is all libxl would do.
      for (const clone of clones) host.unpause(clone.domid);
      onDemand?.handOver();
      return { backend: "xen", parent: parentName, clones, copy, onDemand: onDemand?.figures(), shellsReady: ready?.length ?? 0 };
    },
    exported: () => exported?.exported(),
    async abandon() {
      exported?.exported()?.close();
      exported?.discard();
      await onDemand?.abandon();
      for (const clone of clones) {
        try {
          libxl.destroy(clone.domid);
        } catch {
          // already gone
        }
      }
    },
    async release() {
      exported?.discard();
      try {
        await helpers.close();
      } finally {
        request.onRelease?.();
      }
    },
  };
}

/**
 * The guest keeps its XenStore and console ports and frames across the resume; a clone built
 * from the same configuration gets the same ones, which is what lets it resume at all.
 */
function checkSameRings(host: XenHost, parent: number, clone: number): void {
  for (const [param, what] of [
    [HVM_PARAM_STORE_PFN, "XenStore frame"],
    [HVM_PARAM_STORE_EVTCHN, "XenStore event channel"],
    [HVM_PARAM_CONSOLE_PFN, "console frame"],
    [HVM_PARAM_CONSOLE_EVTCHN, "console event channel"],
  ] as const) {
    const [a, b] = [host.hvmParam(parent, param), host.hvmParam(clone, param)];
    if (a !== b)
      throw new SnowflockError(
        "VM_STATE",
        `clone domain ${clone} got ${what} ${b}, its parent ${parent} has ${a}`,
        "the parent's configuration changed since it was built; a clone cannot take over its rings",
      );
  }
}
