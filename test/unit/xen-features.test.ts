/**
 * How xenFeatures reads its probes: the errno of each op aimed at DOMID_INVALID (ENOSYS = not
 * built, ESRCH = built), then the hardware and dom0 conditions Xen adds. The host's answers are
 * given here; a real dom0 gives them in test/xen.
 */
import { describe, expect, test } from "bun:test";
import { XEN_ENOSYS, XEN_ESRCH } from "../../src/backend/xen/abi.ts";
import { type FeatureSource, xenFeatures } from "../../src/backend/xen/features.ts";
import type { XenDomain, XenPhysinfo } from "../../src/backend/xen/host.ts";

interface Answers {
  sharing: number;
  paging: number;
  vmx?: boolean;
  svm?: boolean;
  hap?: boolean;
  dom0Hvm?: boolean;
}

function host(a: Answers): FeatureSource {
  const physinfo = {
    virtCaps: {
      pv: true,
      hvm: true,
      hap: a.hap ?? true,
      shadow: false,
      directio: false,
      iommuHapPtShare: false,
      vmtrace: false,
      vpmu: false,
      gnttabV1: true,
      gnttabV2: true,
    },
    cpu: { vmx: a.vmx ?? false, svm: a.svm ?? !(a.vmx ?? false) },
  } as XenPhysinfo;
  return {
    physinfo: () => physinfo,
    probeMemSharingOp: () => a.sharing,
    probePagingOp: () => a.paging,
    domain: (domid: number) => (domid === 0 ? ({ domid: 0, hvm: a.dom0Hvm ?? false } as XenDomain) : undefined),
  };
}

describe("xenFeatures", () => {
  test("Debian's build (neither option): both unavailable, eager clone memory", () => {
    const f = xenFeatures(host({ sharing: XEN_ENOSYS, paging: XEN_ENOSYS }));
    expect(f.memSharingFork).toEqual({
      available: false,
      reason: "this Xen is built without memory sharing (CONFIG_MEM_SHARING): XENMEM_sharing_op answers ENOSYS",
    });
    expect(f.paging).toEqual({
      available: false,
      reason:
        "this Xen is built without memory paging (CONFIG_MEM_PAGING): XENMEM_paging_op answers ENOSYS; rebuild Xen with " +
        'CONFIG_UNSUPPORTED=y, CONFIG_MEM_PAGING=y, # CONFIG_TBOOT is not set (README: "Memory on demand on Xen")',
    });
    expect(f.cloneMemory).toBe("eager");
    expect([f.pv, f.hvm, f.hap, f.shadow]).toEqual([true, true, true, false]);
  });

  test("built with both, Intel VT-x, HAP, PV dom0: both available, on-demand clone memory", () => {
    const f = xenFeatures(host({ sharing: XEN_ESRCH, paging: XEN_ESRCH, vmx: true }));
    expect(f.memSharingFork.available).toBe(true);
    expect(f.paging.available).toBe(true);
    expect(f.cloneMemory).toBe("ondemand");
  });

  test("memory sharing built in but on AMD: unavailable, says why", () => {
    const f = xenFeatures(host({ sharing: XEN_ESRCH, paging: XEN_ENOSYS, svm: true }));
    expect(f.memSharingFork).toEqual({ available: false, reason: "Xen's memory sharing needs Intel VT-x; this CPU has AMD-V" });
  });

  test("without HAP neither works", () => {
    const f = xenFeatures(host({ sharing: XEN_ESRCH, paging: XEN_ESRCH, vmx: true, hap: false }));
    expect(f.memSharingFork.available).toBe(false);
    expect(f.paging.available).toBe(false);
    expect(f.cloneMemory).toBe("eager");
  });

  test("paging under a PVH dom0 is refused", () => {
    const f = xenFeatures(host({ sharing: XEN_ENOSYS, paging: XEN_ESRCH, dom0Hvm: true }));
    expect(f.paging).toEqual({ available: false, reason: "Xen refuses memory paging under a PVH dom0 (vm_event: EOPNOTSUPP)" });
  });

  test("an unexpected answer is unknown, with the errno, never a guess", () => {
    const f = xenFeatures(host({ sharing: 13, paging: 0 }));
    expect(f.memSharingFork).toEqual({
      available: "unknown",
      reason: "XENMEM_sharing_op on DOMID_INVALID answered EACCES, neither ENOSYS nor ESRCH",
    });
    expect(f.paging).toEqual({
      available: "unknown",
      reason: "XENMEM_paging_op on DOMID_INVALID answered success, neither ENOSYS nor ESRCH",
    });
    expect(f.cloneMemory).toBe("eager");
  });
});
