/**
 * `snowflock fork` on Xen, for PVH domains, as one round of the clone pipeline (src/clone/pipeline.ts).
 * prepare: the clones' domain shells are built from the parent's own libxl configuration while the
 * parent still runs. pause: the parent suspends itself (the guest's Xen suspend path, as for
 * `xl save`). capture: its HVM context is read once and its memory copied once per clone, straight
 * between domains through foreign mappings. resume: the parent carries on as after a checkpoint (the
 * suspend was "cancelled"). restore: each clone gets the context and starts as a restored domain
 * would. This Xen has no memory sharing or paging, so clone memory is eager: copied in full before
 * a clone runs.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { SnowflockError } from "../../errors.ts";
import type { CloneRound, CopyFigures, DomainRoundOptions, DomainRoundResult, StartedDomain } from "../backend.ts";
import { HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN, HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN, XC_PAGE_SIZE } from "./abi.ts";
import { publishMember, readMember } from "./family-keys.ts";
import type { XenDomain, XenHost } from "./host.ts";
import { ForkHelpers, workerError } from "./fork-helpers.ts";
import { captureState, type XenState, restoreState } from "./persist.ts";
import { shellKernelPath } from "./shell-kernel.ts";
import type { Keeper } from "./keeper.ts";
import { OnDemandMemory, ramPagesOf } from "./ondemand.ts";

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
}

interface LibxlNic {
  mac?: string;
}
interface LibxlDisk {
  vdev?: string;
  pdev_path?: string;
  readwrite?: number | boolean;
}
export interface LibxlConfig {
  c_info: { name?: string; uuid?: string; type?: string };
  b_info: { kernel?: string; ramdisk?: string; cmdline?: string; max_memkb?: number; target_memkb?: number };
  nics?: LibxlNic[];
  disks?: LibxlDisk[];
}

/** A round of clones of domain `request.parent`; see the file comment. Refuses a parent that cannot be forked at once. */
export function xenRound(host: XenHost, request: XenRoundRequest): CloneRound<XenState, DomainRoundResult> {
  const say = request.progress ?? (() => {});
  const parent = host.domain(request.parent);
  if (parent === undefined || parent.domid === 0)
    throw new SnowflockError("NOT_FOUND", `no Xen domU ${request.parent}`, "`snowflock ls --backend xen` or `xl list` shows the domains");
  checkForkable(parent);
  const parentName = parent.name ?? `domain-${parent.domid}`;
  const libxl = host.libxl();
  const config = JSON.parse(libxl.configurationJson(parent.domid)) as LibxlConfig;
  if (config.c_info.type !== "pvh") {
    throw new SnowflockError(
      "VM_STATE",
      `domain ${parentName} is of type ${config.c_info.type ?? "unknown"}: snowflock forks PVH domains on Xen`,
      config.c_info.type === "hvm"
        ? 'an HVM domain\'s device model (QEMU) would have to be cloned too; run the guest as type = "pvh"'
        : 'run the guest as type = "pvh"',
    );
  }
  refuseWritableDisks(parentName, config);
  const onDemand = request.memory === "ondemand" ? new OnDemandMemory(parentName, ramPagesOf(parentName, config), request) : undefined;
  const kernel = shellKernelPath(request.workDirectory);
  const store = host.xenstore();
  const firstId = request.firstCloneId ?? nextCloneId(host, parent.domid);
  const specs = Array.from({ length: request.clones }, (_, i) => {
    const cloneId = firstId + i;
    const name = `${parentName}.${cloneId}`;
    return { cloneId, name, ...cloneConfig(config, name, kernel) };
  });
  // Each helper thread takes every k-th clone, for the shells and later for the copy.
  const helpers = ForkHelpers.start(Math.max(1, Math.min(request.clones, request.threads ?? availableParallelism())));
  const share = (w: number) => specs.map((_, i) => i).filter((i) => i % helpers.count === w);
  const clones: StartedDomain[] = [];
  let suspended = false;
  let state: XenState | undefined;
  let copy: CopyFigures | undefined;

  return {
    async prepare() {
      say(`building ${request.clones} domain shell(s) from ${parentName}'s configuration on ${helpers.count} thread(s)`);
      const built = await Promise.all(
        Array.from({ length: helpers.count }, (_, w) =>
          helpers.call(w, { kind: "shells", shells: share(w).map((i) => ({ name: specs[i]!.name, json: specs[i]!.json })) }),
        ),
      );
      const domids = new Map<number, number>();
      built.forEach((reply, w) => reply.domids.forEach((domid, k) => domids.set(share(w)[k]!, domid)));
      specs.forEach(
        (spec, i) => domids.has(i) && clones.push({ name: spec.name, domid: domids.get(i)!, cloneId: spec.cloneId, mac: spec.mac }),
      );
      const failed = built.find((reply) => reply.error);
      if (failed?.error) throw workerError(failed.error);
      for (const clone of clones) {
        publishMember(store, clone.domid, {
          cloneId: clone.cloneId,
          family: parent.domid,
          parentName,
          mac: clone.mac,
          memory: onDemand ? "ondemand" : undefined,
        });
        request.onCloneReady?.(clone);
      }
      if (onDemand) await onDemand.pageOut(clones, say);
    },
    async pause() {
      say(`suspending ${parentName}`);
      libxl.suspend(parent.domid);
      suspended = true;
    },
    async capture() {
      state = captureState(host, parent.domid, parent.totPages * XC_PAGE_SIZE);
      for (const clone of clones) checkSameRings(host, parent.domid, clone.domid);
      if (onDemand) return onDemand.capture(host, parent.domid, state);
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
      await onDemand?.distribute(request.workDirectory);
      return state;
    },
    async restore(captured) {
      for (const clone of clones) {
        restoreState(host, clone.domid, captured);
        await onDemand?.serve(clone.domid);
        // A PVH clone has no device model to resume: unpausing the domain is all libxl would do.
        host.unpause(clone.domid);
      }
      onDemand?.handOver();
      return { backend: "xen", parent: parentName, clones, copy, onDemand: onDemand?.figures() };
    },
    async abandon() {
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
      try {
        await helpers.close();
      } finally {
        request.onRelease?.();
      }
    },
  };
}

/** PV and HVM domains are refused by their libxl type (below); this is about their state. */
function checkForkable(domain: XenDomain): void {
  if (domain.dying || domain.shutdown)
    throw new SnowflockError(
      "VM_STATE",
      `domain ${domain.name ?? domain.domid} is ${domain.dying ? "dying" : "shut down"}: only a running domain can be forked`,
    );
}

/** A clone must never write its parent's disk; without copy-on-write overlays, refuse. */
export function refuseWritableDisks(name: string, config: LibxlConfig): void {
  const writable = (config.disks ?? []).filter((d) => d.readwrite !== undefined && d.readwrite !== 0 && d.readwrite !== false);
  if (writable.length > 0) {
    const which = writable.map((d) => `${d.vdev ?? "?"} (${d.pdev_path ?? "?"})`).join(", ");
    throw new SnowflockError(
      "VM_STATE",
      `domain ${name} has a writable disk: ${which}; its clones would write it too`,
      "give the parent its disks read-only (e.g. 'file:/img,xvda,r') or keep writable state in memory",
    );
  }
}

/**
 * The parent's configuration for one clone: its own name, UUID and MAC addresses, and the
 * shell kernel instead of the parent's kernel and initramfs (the clone never boots).
 */
export function cloneConfig(parent: LibxlConfig, name: string, kernel: string): { json: string; mac: string } {
  const config = structuredClone(parent);
  config.c_info.name = name;
  config.c_info.uuid = randomUUID();
  config.b_info.kernel = kernel;
  delete config.b_info.ramdisk;
  delete config.b_info.cmdline;
  // Every clone has its own MAC (published in XenStore); its first NIC, if any, carries it.
  const mac = xenMac();
  (config.nics ?? []).forEach((nic, i) => (nic.mac = i === 0 ? mac : xenMac()));
  return { json: JSON.stringify(config), mac };
}

/** A random address in Xen's OUI (00:16:3e), as xl gives a NIC without one. */
function xenMac(): string {
  const tail = [...randomBytes(3)];
  tail[0]! &= 0x7f;
  return ["00", "16", "3e", ...tail.map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

/** The next free clone ID in the parent's family: clones of earlier forks keep theirs. */
export function nextCloneId(host: XenHost, parent: number): number {
  const store = host.xenstore();
  let highest = 0;
  for (const domain of host.listDomains()) {
    const member = domain.domid === 0 ? undefined : readMember(store, domain.domid);
    if (member && member.family === parent && member.cloneId > highest) highest = member.cloneId;
  }
  return highest + 1;
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
