/**
 * What this hypervisor build can do for cloning: Xen's native memory-sharing fork
 * (xc_memshr_fork) and memory paging (the vm_event pager that memory-on-demand needs). Both are
 * compile-time options (CONFIG_MEM_SHARING, CONFIG_MEM_PAGING; Debian builds neither), invisible
 * in physinfo or XENVER_capabilities, so each is probed:
 *
 *   the op is aimed at DOMID_INVALID, a domain id that never exists. Xen 4.17 dispatches
 *   XENMEM_sharing_op / XENMEM_paging_op only when built with the option (else the memory_op
 *   falls through to ENOSYS), and the first thing either handler does is look the domain up
 *   (rcu_lock_live_remote_domain_by_id → ESRCH). So ENOSYS = not built, ESRCH = built, and
 *   nothing is changed either way. Any other answer is reported as unknown, with the errno.
 *
 * Built is not enough: sharing also needs Intel VT-x and HAP (mem_sharing_control), paging HAP
 * and a PV dom0 (vm_event_domctl refuses paging under a PVH dom0). Those come from physinfo and
 * dom0's domain flags.
 */
import { errnoName } from "../../sys/errno.ts";
import { XEN_ENOSYS, XEN_ESRCH } from "./abi.ts";
import type { XenHost } from "./host.ts";

export type Availability =
  | { available: true; detail: string }
  | { available: false; reason: string }
  | { available: "unknown"; reason: string };

export interface XenFeatures {
  pv: boolean;
  hvm: boolean;
  hap: boolean;
  shadow: boolean;
  /** xc_memshr_fork: clones sharing the parent's pages copy-on-write inside Xen. */
  memSharingFork: Availability;
  /** vm_event memory paging: a pager in dom0 filling a clone's pages on first touch. */
  paging: Availability;
  /** How a clone's memory arrives on this host: "ondemand" needs paging. */
  cloneMemory: "ondemand" | "eager";
}

type Built = { built: true } | { built: false; availability: Availability };

/** The Kconfig lines that give Xen 4.17 memory paging (README: "Memory on demand on Xen"). */
export const PAGING_KCONFIG = ["CONFIG_UNSUPPORTED=y", "CONFIG_MEM_PAGING=y", "# CONFIG_TBOOT is not set"] as const;

/** Reads an op probe's errno as "built in" or the availability that ends the question. */
function built(errno: number, op: string, option: string): Built {
  if (errno === XEN_ESRCH) return { built: true };
  if (errno === XEN_ENOSYS)
    return { built: false, availability: { available: false, reason: `this Xen is built without ${option}: ${op} answers ENOSYS` } };
  return {
    built: false,
    availability: {
      available: "unknown",
      reason: `${op} on DOMID_INVALID answered ${errno === 0 ? "success" : errnoName(errno)}, neither ENOSYS nor ESRCH`,
    },
  };
}

/** The few host calls the probes need (a XenHost; tests hand in their own answers). */
export type FeatureSource = Pick<XenHost, "physinfo" | "probeMemSharingOp" | "probePagingOp" | "domain">;

export function xenFeatures(host: FeatureSource): XenFeatures {
  const { virtCaps, cpu } = host.physinfo();

  const sharing = built(host.probeMemSharingOp(), "XENMEM_sharing_op", "memory sharing (CONFIG_MEM_SHARING)");
  const memSharingFork: Availability = !sharing.built
    ? sharing.availability
    : !cpu.vmx
      ? { available: false, reason: `Xen's memory sharing needs Intel VT-x; this CPU has ${cpu.svm ? "AMD-V" : "neither VT-x nor AMD-V"}` }
      : !virtCaps.hap
        ? { available: false, reason: "Xen's memory sharing needs hardware-assisted paging (HAP), which this host lacks" }
        : { available: true, detail: "built in, Intel VT-x with HAP (HVM and PVH domains)" };

  const pagingOp = built(host.probePagingOp(), "XENMEM_paging_op", "memory paging (CONFIG_MEM_PAGING)");
  const dom0Hvm = host.domain(0)?.hvm ?? false;
  const notBuilt = (a: Availability): Availability =>
    a.available === false
      ? { available: false, reason: `${a.reason}; rebuild Xen with ${PAGING_KCONFIG.join(", ")} (README: "Memory on demand on Xen")` }
      : a;
  const paging: Availability = !pagingOp.built
    ? notBuilt(pagingOp.availability)
    : !virtCaps.hap
      ? { available: false, reason: "Xen's memory paging needs hardware-assisted paging (HAP), which this host lacks" }
      : dom0Hvm
        ? { available: false, reason: "Xen refuses memory paging under a PVH dom0 (vm_event: EOPNOTSUPP)" }
        : { available: true, detail: "built in, HAP, PV dom0 (HVM/PVH domains without passthrough or PoD)" };

  return {
    pv: virtCaps.pv,
    hvm: virtCaps.hvm,
    hap: virtCaps.hap,
    shadow: virtCaps.shadow,
    memSharingFork,
    paging,
    cloneMemory: paging.available === true ? "ondemand" : "eager",
  };
}
