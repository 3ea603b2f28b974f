/**
 * The Xen ABI snowflock uses on x86-64: constants and struct layouts from the headers of Xen's
 * tools (Debian's libxen-dev). Numbers and layouts only — no behaviour.
 *
 * Two kinds. The stable public interface (XENVER_*, DOMID_*, XenStore, libxentoollog, errno
 * values, CPU feature bits) is exported flat. What comes from domctl.h, sysctl.h and the HVM save
 * format changes between Xen releases, and libxenctrl passes those structs through as they are:
 * it lives in one object per release, which names the XEN_DOMCTL/SYSCTL_INTERFACE_VERSION it was
 * written from. xenReleaseAbi() hands out the object for the running hypervisor's release and
 * refuses any other. test/unit/xen-abi.test.ts compares all of it with the installed headers.
 */
import { bytes, struct, u16, u32, u64, u8 } from "../../sys/layout.ts";
import { xenUnavailable } from "./errors.ts";

// ---- xen/version.h: xc_version(xch, cmd, arg) ----
export const XENVER_version = 0; // returns major << 16 | minor
export const XENVER_extraversion = 1; // arg: xen_extraversion_t
export const XENVER_capabilities = 3; // arg: xen_capabilities_info_t
export const XEN_EXTRAVERSION_LEN = 16; // sizeof(xen_extraversion_t)
export const XEN_CAPABILITIES_INFO_LEN = 1024; // sizeof(xen_capabilities_info_t)

// ---- xen/xen.h ----
export const DOMID_FIRST_RESERVED = 0x7ff0;
export const DOMID_SELF = 0x7ff0;
/** Never a domain: the probes in features.ts aim at it so they cannot touch one. */
export const DOMID_INVALID = 0x7ff4;

// ---- xen/sched.h: the guest's reason in XEN_DOMINF_shutdown ----
export const SHUTDOWN_poweroff = 0;
export const SHUTDOWN_reboot = 1;
export const SHUTDOWN_suspend = 2;
export const SHUTDOWN_crash = 3;
export const SHUTDOWN_watchdog = 4;
export const SHUTDOWN_soft_reset = 5;

// ---- xen/errno.h: what hypercalls return (the same numbers as Linux's on x86) ----
export const XEN_EPERM = 1;
export const XEN_ESRCH = 3;
export const XEN_EACCES = 13;
export const XEN_ENOSYS = 38;
export const XEN_EOPNOTSUPP = 95;

// ---- xen/arch-x86/cpufeatureset.h: bit numbers in xen_sysctl_physinfo.hw_cap ----
export const XEN_X86_FEATURE_VMX = 37; // 1*32+ 5: Intel VT-x (memory sharing needs it)
export const XEN_X86_FEATURE_SVM = 98; // 3*32+ 2: AMD-V

// ---- xenctrl.h ----
// xen/hvm/params.h: where a PVH/HVM domain's XenStore and console rings are, and their ports.
export const HVM_PARAM_STORE_PFN = 1;
export const HVM_PARAM_STORE_EVTCHN = 2;
export const HVM_PARAM_CONSOLE_PFN = 17;
export const HVM_PARAM_CONSOLE_EVTCHN = 18;
/** The gfn of the page that becomes the paging ring (libxl reserves one for every HVM/PVH domain). */
export const HVM_PARAM_PAGING_RING_PFN = 27;

// xen/vm_event.h: the paging ring's requests and responses (layouts and version per release, below).
export const VM_EVENT_FLAG_VCPU_PAUSED = 1 << 0; // in a request: the vCPU waits; in a response: unpause it
export const VM_EVENT_FLAG_FOREIGN = 1 << 1; // a request from another domain's mapping (no vCPU waits)
export const VM_EVENT_REASON_MEM_PAGING = 3;
export const MEM_PAGING_DROP_PAGE = 1 << 0; // the guest gave the page up: nothing to fill
export const MEM_PAGING_EVICT_FAIL = 1 << 1;

export const XC_PAGE_SHIFT = 12;
export const XC_PAGE_SIZE = 4096;

// ---- xentoollog.h: a logger that never prints (libxc logs failures to stderr by default) ----
export const XTL_NUM_LEVELS = 10;
export const XTL_STDIOSTREAM_HIDE_PROGRESS = 0o4;
export const XTL_STDIOSTREAM_PROGRESS_NO_CR = 0o20; // also spares the logger isatty(fileno(f))

// ---- xenstore.h / xenstore_lib.h ----
export const XBT_NULL = 0;
export const XS_OPEN_READONLY = 1;
export const XS_OPEN_SOCKETONLY = 2;
export const XS_PERM_NONE = 0x00;
export const XS_PERM_READ = 0x01;
export const XS_PERM_WRITE = 0x02;
export const XS_WATCH_PATH = 0; // index into xs_read_watch()'s vector
export const XS_WATCH_TOKEN = 1;

export const xs_permissions = struct("struct xs_permissions", 8, {
  id: u32(0),
  perms: u32(4),
});

// ---- libxl.h ----
export const LIBXL_VERSION = 0; // libxl_ctx_alloc's version argument

// ---- per release: domctl.h, sysctl.h, hvm/save.h ----

const XEN_4_17 = {
  release: "4.17",
  /** libxenctrl and libxenlight are built for one release; the other libraries are stable. */
  sonames: { xenctrl: "libxenctrl.so.4.17", xenlight: "libxenlight.so.4.17" },
  constants: {
    XEN_DOMCTL_INTERFACE_VERSION: 0x15,
    XEN_SYSCTL_INTERFACE_VERSION: 0x15,
    /** A paging response with any other version is dropped by Xen, and its vCPU stays paused. */
    VM_EVENT_INTERFACE_VERSION: 7,

    // xen_domctl_getdomaininfo.flags
    XEN_DOMINF_dying: 1 << 0,
    XEN_DOMINF_hvm_guest: 1 << 1,
    XEN_DOMINF_shutdown: 1 << 2,
    XEN_DOMINF_paused: 1 << 3,
    XEN_DOMINF_blocked: 1 << 4,
    XEN_DOMINF_running: 1 << 5,
    XEN_DOMINF_debugged: 1 << 6,
    XEN_DOMINF_xs_domain: 1 << 7,
    XEN_DOMINF_hap: 1 << 8,
    XEN_DOMINF_shutdownmask: 255,
    XEN_DOMINF_shutdownshift: 16,
    XEN_INVALID_MAX_VCPU_ID: 0xffffffff,

    // xen_sysctl_physinfo.capabilities
    XEN_SYSCTL_PHYSCAP_hvm: 1 << 0,
    XEN_SYSCTL_PHYSCAP_pv: 1 << 1,
    XEN_SYSCTL_PHYSCAP_directio: 1 << 2,
    XEN_SYSCTL_PHYSCAP_hap: 1 << 3,
    XEN_SYSCTL_PHYSCAP_shadow: 1 << 4,
    XEN_SYSCTL_PHYSCAP_iommu_hap_pt_share: 1 << 5,
    XEN_SYSCTL_PHYSCAP_vmtrace: 1 << 6,
    XEN_SYSCTL_PHYSCAP_vpmu: 1 << 7,
    XEN_SYSCTL_PHYSCAP_gnttab_v1: 1 << 8,
    XEN_SYSCTL_PHYSCAP_gnttab_v2: 1 << 9,

    // xen_domctl_createdomain.flags
    XEN_DOMCTL_CDF_hvm: 1 << 0,
    XEN_DOMCTL_CDF_hap: 1 << 1,
    XEN_DOMCTL_CDF_s3_integrity: 1 << 2,
    XEN_DOMCTL_CDF_oos_off: 1 << 3,
    XEN_DOMCTL_CDF_xs_domain: 1 << 4,
    XEN_DOMCTL_CDF_iommu: 1 << 5,
    XEN_DOMCTL_CDF_nested_virt: 1 << 6,
    XEN_DOMCTL_CDF_vpmu: 1 << 7,

    // xen_arch_domainconfig (x86)
    XEN_X86_EMU_LAPIC: 1 << 0,
    XEN_X86_EMU_HPET: 1 << 1,
    XEN_X86_EMU_PM: 1 << 2,
    XEN_X86_EMU_RTC: 1 << 3,
    XEN_X86_EMU_IOAPIC: 1 << 4,
    XEN_X86_EMU_PIC: 1 << 5,
    XEN_X86_EMU_VGA: 1 << 6,
    XEN_X86_EMU_IOMMU: 1 << 7,
    XEN_X86_EMU_PIT: 1 << 8,
    XEN_X86_EMU_USE_PIRQ: 1 << 9,
    XEN_X86_EMU_VPCI: 1 << 10,
    XEN_X86_EMU_ALL: 0x7ff,
    XEN_X86_MSR_RELAXED: 1 << 0,

    // the HVM save blob (xc_domain_hvm_getcontext)
    HVM_FILE_MAGIC: 0x54381286,
    HVM_FILE_VERSION: 1,
  },
  /**
   * HVM save record typecodes by name: HVM_SAVE_CODE(name) in <xen/hvm/save.h>, or name_CODE
   * for the variable-length CPU_XSAVE and CPU_MSR records.
   */
  hvmSaveTypes: {
    END: 0,
    HEADER: 1,
    CPU: 2,
    PIC: 3,
    IOAPIC: 4,
    LAPIC: 5,
    LAPIC_REGS: 6,
    PCI_IRQ: 7,
    ISA_IRQ: 8,
    PCI_LINK: 9,
    PIT: 10,
    RTC: 11,
    HPET: 12,
    PMTIMER: 13,
    MTRR: 14,
    VIRIDIAN_DOMAIN: 15,
    CPU_XSAVE: 16,
    VIRIDIAN_VCPU: 17,
    VMCE_VCPU: 18,
    TSC_ADJUST: 19,
    CPU_MSR: 20,
  },
  layouts: {
    /** One slot of the paging ring; a response has the same layout. */
    vm_event_request: struct("vm_event_request_t", 400, {
      version: u32(0),
      flags: u32(4),
      reason: u32(8),
      vcpu_id: u32(12),
      "u.mem_paging.gfn": u64(24),
      "u.mem_paging.p2mt": u32(32),
      "u.mem_paging.flags": u32(36),
    }),
    /** The ring page: producer and consumer indexes, then the slots (as many as fit, a power of two). */
    vm_event_sring: struct("vm_event_sring_t", 464, {
      req_prod: u32(0),
      req_event: u32(4),
      rsp_prod: u32(8),
      rsp_event: u32(12),
      ring: bytes(64, 400),
    }),
    /** xc_domaininfo_t: what xc_domain_getinfolist fills, one per domain. */
    getdomaininfo: struct("struct xen_domctl_getdomaininfo", 112, {
      domain: u16(0),
      flags: u32(4),
      tot_pages: u64(8),
      max_pages: u64(16),
      outstanding_pages: u64(24),
      shr_pages: u64(32),
      paged_pages: u64(40),
      shared_info_frame: u64(48),
      cpu_time: u64(56),
      nr_online_vcpus: u32(64),
      max_vcpu_id: u32(68),
      ssidref: u32(72),
      handle: bytes(76, 16),
      cpupool: u32(92),
      gpaddr_bits: u8(96),
      arch_config: bytes(104, 8),
      "arch_config.emulation_flags": u32(104),
      "arch_config.misc_flags": u32(108),
    }),
    /** xc_physinfo_t. */
    physinfo: struct("struct xen_sysctl_physinfo", 112, {
      threads_per_core: u32(0),
      cores_per_socket: u32(4),
      nr_cpus: u32(8),
      max_cpu_id: u32(12),
      nr_nodes: u32(16),
      max_node_id: u32(20),
      cpu_khz: u32(24),
      capabilities: u32(28),
      arch_capabilities: u32(32),
      total_pages: u64(40),
      free_pages: u64(48),
      scrub_pages: u64(56),
      outstanding_pages: u64(64),
      max_mfn: u64(72),
      hw_cap: bytes(80, 32), // 8 words of the boot CPU's featureset (cpufeatureset.h numbering)
    }),
    /** For creating clone domains later (xc_domain_create). */
    createdomain: struct("struct xen_domctl_createdomain", 64, {
      ssidref: u32(0),
      handle: bytes(4, 16),
      flags: u32(20),
      iommu_opts: u32(24),
      max_vcpus: u32(28),
      max_evtchn_port: u32(32),
      max_grant_frames: u32(36),
      max_maptrack_frames: u32(40),
      grant_opts: u32(44),
      vmtrace_size: u32(48),
      cpupool_id: u32(52),
      arch: bytes(56, 8),
      "arch.emulation_flags": u32(56),
      "arch.misc_flags": u32(60),
    }),
    /** Before every record of the HVM save blob. */
    hvm_save_descriptor: struct("struct hvm_save_descriptor", 8, {
      typecode: u16(0),
      instance: u16(2),
      length: u32(4), // of the record after this descriptor
    }),
    hvm_save_header: struct("struct hvm_save_header", 24, {
      magic: u32(0),
      version: u32(4),
      changeset: u64(8),
      cpuid: u32(16),
      gtsc_khz: u32(20),
    }),
    /** The CPU record, one per vCPU (instance = vCPU id). */
    hvm_hw_cpu: struct("struct hvm_hw_cpu", 1032, {
      fpu_regs: bytes(0, 512),
      rax: u64(512),
      rbx: u64(520),
      rcx: u64(528),
      rdx: u64(536),
      rbp: u64(544),
      rsi: u64(552),
      rdi: u64(560),
      rsp: u64(568),
      r8: u64(576),
      r9: u64(584),
      r10: u64(592),
      r11: u64(600),
      r12: u64(608),
      r13: u64(616),
      r14: u64(624),
      r15: u64(632),
      rip: u64(640),
      rflags: u64(648),
      cr0: u64(656),
      cr2: u64(664),
      cr3: u64(672),
      cr4: u64(680),
      dr0: u64(688),
      dr1: u64(696),
      dr2: u64(704),
      dr3: u64(712),
      dr6: u64(720),
      dr7: u64(728),
      cs_sel: u32(736),
      ds_sel: u32(740),
      es_sel: u32(744),
      fs_sel: u32(748),
      gs_sel: u32(752),
      ss_sel: u32(756),
      tr_sel: u32(760),
      ldtr_sel: u32(764),
      cs_limit: u32(768),
      ds_limit: u32(772),
      es_limit: u32(776),
      fs_limit: u32(780),
      gs_limit: u32(784),
      ss_limit: u32(788),
      tr_limit: u32(792),
      ldtr_limit: u32(796),
      idtr_limit: u32(800),
      gdtr_limit: u32(804),
      cs_base: u64(808),
      ds_base: u64(816),
      es_base: u64(824),
      fs_base: u64(832),
      gs_base: u64(840),
      ss_base: u64(848),
      tr_base: u64(856),
      ldtr_base: u64(864),
      idtr_base: u64(872),
      gdtr_base: u64(880),
      cs_arbytes: u32(888),
      ds_arbytes: u32(892),
      es_arbytes: u32(896),
      fs_arbytes: u32(900),
      gs_arbytes: u32(904),
      ss_arbytes: u32(908),
      tr_arbytes: u32(912),
      ldtr_arbytes: u32(916),
      sysenter_cs: u64(920),
      sysenter_esp: u64(928),
      sysenter_eip: u64(936),
      shadow_gs: u64(944),
      msr_flags: u64(952),
      msr_lstar: u64(960),
      msr_star: u64(968),
      msr_cstar: u64(976),
      msr_syscall_mask: u64(984),
      msr_efer: u64(992),
      msr_tsc_aux: u64(1000),
      tsc: u64(1008),
      pending_event: u32(1016),
      error_code: u32(1020),
      flags: u32(1024),
      pad0: u32(1028),
    }),
    /** What xc_vcpu_getcontext writes for a 64-bit guest (x86-64's native layout). */
    vcpu_guest_context: struct("struct vcpu_guest_context", 5168, {
      fpu_ctxt: bytes(0, 512),
      flags: u64(512),
      user_regs: bytes(520, 200),
      "user_regs.r15": u64(520),
      "user_regs.r14": u64(528),
      "user_regs.r13": u64(536),
      "user_regs.r12": u64(544),
      "user_regs.rbp": u64(552),
      "user_regs.rbx": u64(560),
      "user_regs.r11": u64(568),
      "user_regs.r10": u64(576),
      "user_regs.r9": u64(584),
      "user_regs.r8": u64(592),
      "user_regs.rax": u64(600),
      "user_regs.rcx": u64(608),
      "user_regs.rdx": u64(616),
      "user_regs.rsi": u64(624),
      "user_regs.rdi": u64(632),
      "user_regs.error_code": u32(640),
      "user_regs.entry_vector": u32(644),
      "user_regs.rip": u64(648),
      "user_regs.cs": u16(656),
      "user_regs.saved_upcall_mask": u8(660),
      "user_regs.rflags": u64(664),
      "user_regs.rsp": u64(672),
      "user_regs.ss": u16(680),
      "user_regs.es": u16(688),
      "user_regs.ds": u16(696),
      "user_regs.fs": u16(704),
      "user_regs.gs": u16(712),
      trap_ctxt: bytes(720, 4096),
      ldt_base: u64(4816),
      ctrlreg: bytes(4984, 64),
      "ctrlreg[0]": u64(4984),
      "ctrlreg[3]": u64(5008),
      "ctrlreg[4]": u64(5016),
      debugreg: bytes(5048, 64),
      event_callback_eip: u64(5112),
      vm_assist: u64(5136),
      fs_base: u64(5144),
      gs_base_kernel: u64(5152),
      gs_base_user: u64(5160),
    }),
    /** The buffer xc_vcpu_getcontext fills is this union (x86-32, x86-64, native). */
    vcpu_guest_context_any: struct("vcpu_guest_context_any_t", 5168, {}),
    /** libxl's whole domain configuration: only ever filled and read by libxl (through JSON). */
    libxl_domain_config: struct("libxl_domain_config", 1288, {}),
  },
};

export type XenReleaseAbi = typeof XEN_4_17;

/** Every release snowflock's Xen bindings know, keyed by "major.minor". */
export const XEN_RELEASES: Readonly<Record<string, XenReleaseAbi>> = { "4.17": XEN_4_17 };

/** The ABI for a hypervisor of this version; any other release is refused with one clear line. */
export function xenReleaseAbi(major: number, minor: number): XenReleaseAbi {
  const abi = XEN_RELEASES[`${major}.${minor}`];
  if (abi) return abi;
  const known = Object.values(XEN_RELEASES)
    .map((r) => `Xen ${r.release} (domctl interface 0x${r.constants.XEN_DOMCTL_INTERFACE_VERSION.toString(16)})`)
    .join(", ");
  throw xenUnavailable(
    `this hypervisor is Xen ${major}.${minor}, but snowflock's Xen bindings know only ${known}`,
    "run snowflock in a dom0 of a Xen release it supports",
  );
}
