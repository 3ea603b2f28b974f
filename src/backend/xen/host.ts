/**
 * This dom0's hypervisor through libxenctrl: opening it (with one clear line where there is no
 * Xen dom0 to drive), its version, capabilities and physical facts, its domains, pausing them, and
 * reading their vCPU and HVM state. Thin: each method is one or two libxenctrl calls.
 */
import { SnowflockError } from "../../errors.ts";
import { EACCES, EPERM, ESRCH } from "../../sys/constants.ts";
import { errnoName, SyscallError } from "../../sys/errno.ts";
import { StructView } from "../../sys/layout.ts";
import { lastErrno } from "../../sys/libc.ts";
import {
  DOMID_FIRST_RESERVED,
  DOMID_INVALID,
  XEN_CAPABILITIES_INFO_LEN,
  XEN_EXTRAVERSION_LEN,
  XEN_RELEASES,
  XEN_X86_FEATURE_SVM,
  XEN_X86_FEATURE_VMX,
  XENVER_capabilities,
  XENVER_extraversion,
  XENVER_version,
  XC_PAGE_SIZE,
  XTL_NUM_LEVELS,
  XTL_STDIOSTREAM_HIDE_PROGRESS,
  XTL_STDIOSTREAM_PROGRESS_NO_CR,
  xenReleaseAbi,
  type XenReleaseAbi,
} from "./abi.ts";
import { hypervisorType, PRIVCMD_PATHS, privcmdPath } from "./detect.ts";
import { isXenUnavailable, xenUnavailable } from "./errors.ts";
import { ForeignMemory } from "./foreign-memory.ts";
import { EventChannel } from "./event-channel.ts";
import { type HvmContext, parseHvmContext } from "./hvm-context.ts";
import { Libxl } from "./libxl.ts";
import { type NativePointer, xenLibrary, type XenSymbols } from "./libs.ts";
import { XenStore } from "./xenstore.ts";

export interface XenVersion {
  major: number;
  minor: number;
  /** XENVER_extraversion, e.g. ".7" or "-pre". */
  extra: string;
}

export interface XenPhysinfo {
  nrCpus: number;
  threadsPerCore: number;
  coresPerSocket: number;
  nrNodes: number;
  cpuKhz: number;
  pageSize: number;
  totalPages: number;
  freePages: number;
  scrubPages: number;
  /** xl info's virt_caps: what kinds of guest this hypervisor can run, and how. */
  virtCaps: {
    pv: boolean;
    hvm: boolean;
    hap: boolean;
    shadow: boolean;
    directio: boolean;
    iommuHapPtShare: boolean;
    vmtrace: boolean;
    vpmu: boolean;
    gnttabV1: boolean;
    gnttabV2: boolean;
  };
  /** The boot CPU's virtualization extension, from physinfo's featureset words. */
  cpu: { vmx: boolean; svm: boolean };
}

export interface XenDomain {
  domid: number;
  /** /local/domain/<domid>/name in XenStore; undefined when XenStore has none or is unreachable. */
  name: string | undefined;
  uuid: string;
  hvm: boolean;
  hap: boolean;
  paused: boolean;
  running: boolean;
  blocked: boolean;
  dying: boolean;
  shutdown: boolean;
  /** The guest's SHUTDOWN_* code when shutdown. */
  shutdownReason: number | undefined;
  debugged: boolean;
  xenstoreDomain: boolean;
  totPages: number;
  maxPages: number;
  maxMemKiB: number;
  sharedPages: number;
  pagedPages: number;
  onlineVcpus: number;
  /** Highest vCPU id; undefined for a domain without vCPUs. */
  maxVcpuId: number | undefined;
  cpuTimeNs: number;
  cpupool: number;
}

/** One batch of xc_domain_getinfolist. */
const DOMAIN_BATCH = 256;

export class XenHost {
  private store: XenStore | null | undefined;
  private toolstack: Libxl | undefined;

  private constructor(
    readonly abi: XenReleaseAbi,
    readonly version: XenVersion,
    /** XENVER_capabilities, e.g. "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64". */
    readonly capabilities: string,
    private readonly physical: XenPhysinfo,
    private xch: NativePointer | null,
    private readonly logger: NativePointer | null,
    private readonly xc: XenSymbols<"xenctrl">,
  ) {}

  static open(): XenHost {
    const privcmd = privcmdPath();
    if (privcmd === undefined) {
      throw hypervisorType() === "xen"
        ? xenUnavailable(
            `this Linux runs on Xen, but ${PRIVCMD_PATHS[0]} is missing`,
            "load the xen_privcmd module; snowflock's Xen backend runs in dom0",
          )
        : xenUnavailable(`no Xen hypervisor here: ${PRIVCMD_PATHS[0]} is missing`, "snowflock's Xen backend runs in a Xen dom0");
    }
    const { abi: libraryAbi, xc } = loadXenctrl();
    const toollog = xenLibrary("xentoollog", libraryAbi);
    // A logger that never prints (its FILE is never touched): failures come back as errno, and
    // libxc's default logger would add its own lines to stderr.
    const logger = toollog.xtl_createlogger_stdiostream(
      null,
      XTL_NUM_LEVELS,
      XTL_STDIOSTREAM_HIDE_PROGRESS | XTL_STDIOSTREAM_PROGRESS_NO_CR,
    );
    const xch = xc.xc_interface_open(logger, logger, 0);
    if (xch === null) {
      const errno = lastErrno();
      if (logger !== null) toollog.xtl_logger_destroy(logger);
      const hint =
        errno === EACCES || errno === EPERM ? "run snowflock as root in dom0" : "check that this is a Xen dom0 with the privcmd driver";
      throw xenUnavailable(`cannot open Xen's control interface (${privcmd}): ${errnoName(errno)}`, hint);
    }
    const close = () => {
      xc.xc_interface_close(xch);
      if (logger !== null) toollog.xtl_logger_destroy(logger);
    };
    try {
      const v = xc.xc_version(xch, XENVER_version, null);
      // The first hypercall: failing here means privcmd does not lead to a hypervisor.
      if (v < 0)
        throw xenUnavailable(
          `cannot reach the hypervisor through ${privcmd}: XENVER_version failed with ${errnoName(lastErrno())}`,
          "snowflock's Xen backend runs in a Xen dom0",
        );
      const version: XenVersion = {
        major: v >>> 16,
        minor: v & 0xffff,
        extra: versionString(xc, xch, XENVER_extraversion, XEN_EXTRAVERSION_LEN),
      };
      const abi = xenReleaseAbi(version.major, version.minor);
      if (abi !== libraryAbi) {
        throw xenUnavailable(
          `this hypervisor is Xen ${abi.release}, but the libxenctrl found is ${libraryAbi.sonames.xenctrl}`,
          `install Debian's libxenmisc${abi.release}`,
        );
      }
      const capabilities = versionString(xc, xch, XENVER_capabilities, XEN_CAPABILITIES_INFO_LEN).trim(); // Xen ends it with a space
      const physical = readPhysinfo(abi, xc, xch);
      return new XenHost(abi, version, capabilities, physical, xch, logger, xc);
    } catch (error) {
      close();
      throw error;
    }
  }

  close(): void {
    this.toolstack?.close();
    this.toolstack = undefined;
    this.store?.close();
    this.store = undefined;
    if (this.xch === null) return;
    this.xc.xc_interface_close(this.xch);
    if (this.logger !== null) xenLibrary("xentoollog", this.abi).xtl_logger_destroy(this.logger);
    this.xch = null;
  }

  physinfo(): XenPhysinfo {
    return this.physical;
  }

  /** Every domain, dom0 included, in domid order. */
  listDomains(): XenDomain[] {
    const layout = this.abi.layouts.getdomaininfo;
    const buffer = new Uint8Array(layout.size * DOMAIN_BATCH);
    const domains: XenDomain[] = [];
    for (let first = 0; first < DOMID_FIRST_RESERVED; ) {
      const count = this.xc.xc_domain_getinfolist(this.handle(), first, DOMAIN_BATCH, buffer);
      if (count < 0) throw new SyscallError("xc_domain_getinfolist", lastErrno());
      for (let i = 0; i < count; i++) domains.push(this.toDomain(new StructView(layout, buffer, i * layout.size)));
      if (count < DOMAIN_BATCH) break;
      first = domains[domains.length - 1]!.domid + 1;
    }
    return domains;
  }

  /** One domain, or undefined when there is no domain with this id. */
  domain(domid: number): XenDomain | undefined {
    const layout = this.abi.layouts.getdomaininfo;
    const buffer = new Uint8Array(layout.size);
    const count = this.xc.xc_domain_getinfolist(this.handle(), domid, 1, buffer);
    if (count < 0) throw new SyscallError("xc_domain_getinfolist", lastErrno(), `domain ${domid}`);
    // getinfolist answers with the first domain from `domid` on, which may be a later one.
    const view = new StructView(layout, buffer);
    return count === 1 && view.get("domain") === domid ? this.toDomain(view) : undefined;
  }

  pause(domid: number): void {
    this.domainCall("xc_domain_pause", domid, this.xc.xc_domain_pause(this.handle(), domid));
  }

  unpause(domid: number): void {
    this.domainCall("xc_domain_unpause", domid, this.xc.xc_domain_unpause(this.handle(), domid));
  }

  /**
   * The domain's whole HVM save blob and its records. Xen pauses the domain while it writes the
   * blob, so the blob is one consistent instant. PV domains have none.
   */
  hvmContext(domid: number): HvmContext {
    const domain = this.domain(domid);
    if (domain === undefined) throw noDomain(domid);
    if (!domain.hvm) throw new SnowflockError("VM_STATE", `Xen domain ${domid} is a PV domain: it has no HVM context`);
    // A NULL buffer asks for the size; the second call fills the buffer and returns what it used.
    const size = this.domainCall("xc_domain_hvm_getcontext", domid, this.xc.xc_domain_hvm_getcontext(this.handle(), domid, null, 0));
    const buffer = new Uint8Array(size);
    const used = this.domainCall("xc_domain_hvm_getcontext", domid, this.xc.xc_domain_hvm_getcontext(this.handle(), domid, buffer, size));
    return parseHvmContext(buffer.subarray(0, used), this.abi);
  }

  /**
   * One vCPU's context (xc_vcpu_getcontext) in x86-64's native layout, which is what Xen writes
   * for HVM/PVH domains and 64-bit PV ones (a 32-bit PV domain gets the x86_32 layout instead).
   */
  vcpuContext(domid: number, vcpu: number): StructView<keyof XenReleaseAbi["layouts"]["vcpu_guest_context"]["fields"]> {
    const buffer = new Uint8Array(this.abi.layouts.vcpu_guest_context_any.size);
    this.domainCall("xc_vcpu_getcontext", domid, this.xc.xc_vcpu_getcontext(this.handle(), domid, vcpu, buffer), `vCPU ${vcpu}`);
    return new StructView(this.abi.layouts.vcpu_guest_context, buffer);
  }

  /** Sets a domain's whole HVM state from a blob hvmContext() read (of it or of another domain). */
  setHvmContext(domid: number, blob: Uint8Array): void {
    this.domainCall("xc_domain_hvm_setcontext", domid, this.xc.xc_domain_hvm_setcontext(this.handle(), domid, blob, blob.byteLength));
  }

  /** One HVM_PARAM_* of a PVH/HVM domain. */
  hvmParam(domid: number, param: number): bigint {
    const value = new BigUint64Array(1);
    this.domainCall("xc_hvm_param_get", domid, this.xc.xc_hvm_param_get(this.handle(), domid, param, value), `param ${param}`);
    return value[0]!;
  }

  /** The highest guest frame number the domain's physmap has ever had. */
  maximumGpfn(domid: number): number {
    const value = new BigUint64Array(1);
    this.domainCall("xc_domain_maximum_gpfn", domid, this.xc.xc_domain_maximum_gpfn(this.handle(), domid, value));
    return Number(value[0]!);
  }

  // ---- memory paging (a Xen built with CONFIG_MEM_PAGING; features.ts probes for it) ----

  /** Attaches this process as the domain's pager (its ring page must be mapped first); the port Xen notifies on. */
  pagingEnable(domid: number): number {
    const port = new Uint32Array(1);
    this.domainCall("xc_mem_paging_enable", domid, this.xc.xc_mem_paging_enable(this.handle(), domid, port));
    return port[0]!;
  }

  /** Nominates, then evicts one page (it becomes "paged out"): 0, or the errno of the step that refused (EBUSY: in use by Xen or a mapping). */
  pagingEvict(domid: number, gfn: number): number {
    if (this.xc.xc_mem_paging_nominate(this.handle(), domid, gfn) < 0) return lastErrno();
    return this.xc.xc_mem_paging_evict(this.handle(), domid, gfn) < 0 ? lastErrno() : 0;
  }

  /** Fills a paged-out page with `data` (one page): 0, or the errno (ENOENT: the page is not paged out). */
  pagingLoad(domid: number, gfn: number, data: Uint8Array): number {
    return this.xc.xc_mem_paging_load(this.handle(), domid, gfn, data) < 0 ? lastErrno() : 0;
  }

  /** Removes pages from the domain's physmap (the paging ring's page, once mapped). */
  decreaseReservation(domid: number, gfns: number[]): void {
    const frames = new BigUint64Array(gfns.map(BigInt));
    this.domainCall(
      "xc_domain_decrease_reservation_exact",
      domid,
      this.xc.xc_domain_decrease_reservation_exact(this.handle(), domid, frames.length, 0, frames),
    );
  }

  /** libxl over this host's logger, opened on first use. */
  libxl(): Libxl {
    if (!this.toolstack) this.toolstack = Libxl.open(this.abi, this.logger!);
    return this.toolstack;
  }

  /** A libxenforeignmemory handle that logs as quietly as this host; the caller closes it. */
  foreignMemory(): ForeignMemory {
    return ForeignMemory.open(this.abi, this.logger);
  }

  /** Binds domain `domid`'s event channel `remotePort` here, logging as quietly as this host; the caller closes it. */
  eventChannel(domid: number, remotePort: number): EventChannel {
    return EventChannel.bind(this.abi, this.logger, domid, remotePort);
  }

  /** XenStore, opened on first use. */
  xenstore(): XenStore {
    if (!this.store) this.store = XenStore.open(this.abi);
    return this.store;
  }

  /**
   * errno of a memory-sharing op (xc_memshr_fork) aimed at DOMID_INVALID, for features.ts. Xen
   * looks the domain up before anything else, so this changes nothing: ESRCH means the op exists,
   * ENOSYS that this hypervisor was built without it. 0 would mean it succeeded (it cannot).
   */
  probeMemSharingOp(): number {
    return this.xc.xc_memshr_fork(this.handle(), DOMID_INVALID, DOMID_INVALID, false, false) === 0 ? 0 : lastErrno();
  }

  /** The same for a memory-paging op (xc_mem_paging_nominate of gfn 0 in DOMID_INVALID). */
  probePagingOp(): number {
    return this.xc.xc_mem_paging_nominate(this.handle(), DOMID_INVALID, 0) === 0 ? 0 : lastErrno();
  }

  private handle(): NativePointer {
    if (this.xch === null) throw new Error("XenHost used after close()");
    return this.xch;
  }

  private domainCall(call: string, domid: number, result: number, detail?: string): number {
    if (result >= 0) return result;
    const errno = lastErrno();
    if (errno === ESRCH) throw noDomain(domid);
    throw new SyscallError(call, errno, `domain ${domid}${detail ? ` ${detail}` : ""}`);
  }

  private domainName(domid: number): string | undefined {
    if (this.store === undefined) {
      try {
        this.store = XenStore.open(this.abi);
      } catch {
        this.store = null; // no xenstored: domains go unnamed rather than unlisted
      }
    }
    return this.store?.readString(`/local/domain/${domid}/name`);
  }

  private toDomain(view: StructView<keyof XenReleaseAbi["layouts"]["getdomaininfo"]["fields"]>): XenDomain {
    const c = this.abi.constants;
    const flags = view.get("flags");
    const has = (bit: number) => (flags & bit) !== 0;
    const domid = view.get("domain");
    const maxVcpuId = view.get("max_vcpu_id");
    return {
      domid,
      name: this.domainName(domid),
      uuid: uuid(view.slice("handle")),
      hvm: has(c.XEN_DOMINF_hvm_guest),
      hap: has(c.XEN_DOMINF_hap),
      paused: has(c.XEN_DOMINF_paused),
      running: has(c.XEN_DOMINF_running),
      blocked: has(c.XEN_DOMINF_blocked),
      dying: has(c.XEN_DOMINF_dying),
      shutdown: has(c.XEN_DOMINF_shutdown),
      shutdownReason: has(c.XEN_DOMINF_shutdown) ? (flags >>> c.XEN_DOMINF_shutdownshift) & c.XEN_DOMINF_shutdownmask : undefined,
      debugged: has(c.XEN_DOMINF_debugged),
      xenstoreDomain: has(c.XEN_DOMINF_xs_domain),
      totPages: view.get("tot_pages"),
      maxPages: view.get("max_pages"),
      maxMemKiB: view.get("max_pages") * (XC_PAGE_SIZE / 1024),
      sharedPages: view.get("shr_pages"),
      pagedPages: view.get("paged_pages"),
      onlineVcpus: view.get("nr_online_vcpus"),
      maxVcpuId: maxVcpuId === c.XEN_INVALID_MAX_VCPU_ID ? undefined : maxVcpuId,
      cpuTimeNs: view.get("cpu_time"),
      cpupool: view.get("cpupool"),
    };
  }
}

/** Opens the Xen dom0 interface, or throws the one XEN_UNAVAILABLE line saying what is missing. */
export function openXen(): XenHost {
  return XenHost.open();
}

/** libxenctrl of the first release whose library is installed. */
function loadXenctrl(): { abi: XenReleaseAbi; xc: XenSymbols<"xenctrl"> } {
  let firstError: unknown;
  for (const abi of Object.values(XEN_RELEASES)) {
    try {
      return { abi, xc: xenLibrary("xenctrl", abi) };
    } catch (error) {
      if (!isXenUnavailable(error)) throw error;
      firstError ??= error;
    }
  }
  throw firstError;
}

function versionString(xc: XenSymbols<"xenctrl">, xch: NativePointer, command: number, length: number): string {
  const buffer = new Uint8Array(length);
  if (xc.xc_version(xch, command, buffer) < 0) throw xenUnavailable(`Xen refused xc_version(${command}): ${errnoName(lastErrno())}`);
  const end = buffer.indexOf(0);
  return new TextDecoder().decode(buffer.subarray(0, end < 0 ? length : end));
}

function readPhysinfo(abi: XenReleaseAbi, xc: XenSymbols<"xenctrl">, xch: NativePointer): XenPhysinfo {
  const view = new StructView(abi.layouts.physinfo);
  if (xc.xc_physinfo(xch, view.bytes) < 0) {
    const errno = lastErrno();
    // Only the control domain may ask: a domU with a privcmd device ends here.
    throw errno === EPERM || errno === EACCES
      ? xenUnavailable(
          `this is a Xen guest, not dom0: the hypervisor refused XEN_SYSCTL_physinfo (${errnoName(errno)})`,
          "snowflock's Xen backend runs in dom0",
        )
      : new SyscallError("xc_physinfo", errno);
  }
  const c = abi.constants;
  const caps = view.get("capabilities");
  const has = (bit: number) => (caps & bit) !== 0;
  const hwCap = new DataView(view.slice("hw_cap").slice().buffer);
  const feature = (bit: number) => bit >>> 5 < hwCap.byteLength / 4 && ((hwCap.getUint32((bit >>> 5) * 4, true) >>> (bit & 31)) & 1) === 1;
  return {
    nrCpus: view.get("nr_cpus"),
    threadsPerCore: view.get("threads_per_core"),
    coresPerSocket: view.get("cores_per_socket"),
    nrNodes: view.get("nr_nodes"),
    cpuKhz: view.get("cpu_khz"),
    pageSize: XC_PAGE_SIZE,
    totalPages: view.get("total_pages"),
    freePages: view.get("free_pages"),
    scrubPages: view.get("scrub_pages"),
    virtCaps: {
      pv: has(c.XEN_SYSCTL_PHYSCAP_pv),
      hvm: has(c.XEN_SYSCTL_PHYSCAP_hvm),
      hap: has(c.XEN_SYSCTL_PHYSCAP_hap),
      shadow: has(c.XEN_SYSCTL_PHYSCAP_shadow),
      directio: has(c.XEN_SYSCTL_PHYSCAP_directio),
      iommuHapPtShare: has(c.XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share),
      vmtrace: has(c.XEN_SYSCTL_PHYSCAP_vmtrace),
      vpmu: has(c.XEN_SYSCTL_PHYSCAP_vpmu),
      gnttabV1: has(c.XEN_SYSCTL_PHYSCAP_gnttab_v1),
      gnttabV2: has(c.XEN_SYSCTL_PHYSCAP_gnttab_v2),
    },
    cpu: { vmx: feature(XEN_X86_FEATURE_VMX), svm: feature(XEN_X86_FEATURE_SVM) },
  };
}

function noDomain(domid: number): SnowflockError {
  return new SnowflockError("NOT_FOUND", `no Xen domain ${domid}`, "`xl list` shows the domains");
}

function uuid(handle: Uint8Array): string {
  const hex = [...handle].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
