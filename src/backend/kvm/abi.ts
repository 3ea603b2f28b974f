/**
 * The KVM ABI on x86-64: ioctl numbers, capability numbers, exit reasons and struct layouts.
 * Numbers and layouts only — no behaviour. Each ioctl carries its encoding as a comment; the unit
 * tests re-encode every one and compare numbers, sizes and offsets with <linux/kvm.h>.
 */
import { bytes, struct, u16, u32, u64, u8 } from "../../sys/layout.ts";

// ---- ioctls on /dev/kvm ----
export const KVM_GET_API_VERSION = 0xae00; // _IO(KVMIO, 0x00)
export const KVM_CREATE_VM = 0xae01; // _IO(KVMIO, 0x01)
export const KVM_GET_MSR_INDEX_LIST = 0xc004ae02; // _IOWR(KVMIO, 0x02, struct kvm_msr_list)
export const KVM_CHECK_EXTENSION = 0xae03; // _IO(KVMIO, 0x03)
export const KVM_GET_VCPU_MMAP_SIZE = 0xae04; // _IO(KVMIO, 0x04)
export const KVM_GET_SUPPORTED_CPUID = 0xc008ae05; // _IOWR(KVMIO, 0x05, struct kvm_cpuid2)

// ---- ioctls on a VM ----
export const KVM_CREATE_VCPU = 0xae41; // _IO(KVMIO, 0x41)
export const KVM_SET_USER_MEMORY_REGION = 0x4020ae46; // _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)
export const KVM_SET_TSS_ADDR = 0xae47; // _IO(KVMIO, 0x47)
export const KVM_SET_IDENTITY_MAP_ADDR = 0x4008ae48; // _IOW(KVMIO, 0x48, __u64)
export const KVM_CREATE_IRQCHIP = 0xae60; // _IO(KVMIO, 0x60)
export const KVM_IRQ_LINE = 0x4008ae61; // _IOW(KVMIO, 0x61, struct kvm_irq_level)
export const KVM_GET_IRQCHIP = 0xc208ae62; // _IOWR(KVMIO, 0x62, struct kvm_irqchip)
export const KVM_SET_IRQCHIP = 0x8208ae63; // _IOR(KVMIO, 0x63, struct kvm_irqchip)
export const KVM_CREATE_PIT2 = 0x4040ae77; // _IOW(KVMIO, 0x77, struct kvm_pit_config)
export const KVM_SET_CLOCK = 0x4030ae7b; // _IOW(KVMIO, 0x7b, struct kvm_clock_data)
export const KVM_GET_CLOCK = 0x8030ae7c; // _IOR(KVMIO, 0x7c, struct kvm_clock_data)
export const KVM_GET_PIT2 = 0x8070ae9f; // _IOR(KVMIO, 0x9f, struct kvm_pit_state2)
export const KVM_SET_PIT2 = 0x4070aea0; // _IOW(KVMIO, 0xa0, struct kvm_pit_state2)

// ---- ioctls on a vCPU ----
export const KVM_RUN = 0xae80; // _IO(KVMIO, 0x80)
export const KVM_GET_REGS = 0x8090ae81; // _IOR(KVMIO, 0x81, struct kvm_regs)
export const KVM_SET_REGS = 0x4090ae82; // _IOW(KVMIO, 0x82, struct kvm_regs)
export const KVM_GET_SREGS = 0x8138ae83; // _IOR(KVMIO, 0x83, struct kvm_sregs)
export const KVM_SET_SREGS = 0x4138ae84; // _IOW(KVMIO, 0x84, struct kvm_sregs)
export const KVM_GET_MSRS = 0xc008ae88; // _IOWR(KVMIO, 0x88, struct kvm_msrs)
export const KVM_SET_MSRS = 0x4008ae89; // _IOW(KVMIO, 0x89, struct kvm_msrs)
export const KVM_GET_LAPIC = 0x8400ae8e; // _IOR(KVMIO, 0x8e, struct kvm_lapic_state)
export const KVM_SET_LAPIC = 0x4400ae8f; // _IOW(KVMIO, 0x8f, struct kvm_lapic_state)
export const KVM_SET_CPUID2 = 0x4008ae90; // _IOW(KVMIO, 0x90, struct kvm_cpuid2)
export const KVM_GET_CPUID2 = 0xc008ae91; // _IOWR(KVMIO, 0x91, struct kvm_cpuid2)
export const KVM_GET_MP_STATE = 0x8004ae98; // _IOR(KVMIO, 0x98, struct kvm_mp_state)
export const KVM_SET_MP_STATE = 0x4004ae99; // _IOW(KVMIO, 0x99, struct kvm_mp_state)
export const KVM_GET_VCPU_EVENTS = 0x8040ae9f; // _IOR(KVMIO, 0x9f, struct kvm_vcpu_events)
export const KVM_SET_VCPU_EVENTS = 0x4040aea0; // _IOW(KVMIO, 0xa0, struct kvm_vcpu_events)
export const KVM_GET_DEBUGREGS = 0x8080aea1; // _IOR(KVMIO, 0xa1, struct kvm_debugregs)
export const KVM_SET_DEBUGREGS = 0x4080aea2; // _IOW(KVMIO, 0xa2, struct kvm_debugregs)
export const KVM_GET_TSC_KHZ = 0xaea3; // _IO(KVMIO, 0xa3)
export const KVM_GET_XSAVE = 0x9000aea4; // _IOR(KVMIO, 0xa4, struct kvm_xsave)
export const KVM_SET_XSAVE = 0x5000aea5; // _IOW(KVMIO, 0xa5, struct kvm_xsave)
export const KVM_GET_XCRS = 0x8188aea6; // _IOR(KVMIO, 0xa6, struct kvm_xcrs)
export const KVM_SET_XCRS = 0x4188aea7; // _IOW(KVMIO, 0xa7, struct kvm_xcrs)

export const KVM_API_VERSION = 12;

// ---- capabilities (KVM_CHECK_EXTENSION) ----
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_MP_STATE = 14;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
export const KVM_CAP_ADJUST_CLOCK = 39;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_DEBUGREGS = 50;
export const KVM_CAP_XSAVE = 55;
export const KVM_CAP_XCRS = 56;
export const KVM_CAP_GET_TSC_KHZ = 61;
export const KVM_CAP_IMMEDIATE_EXIT = 136;

// ---- exit reasons (kvm_run.exit_reason) ----
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;

export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

export const KVM_VCPUEVENT_VALID_NMI_PENDING = 0x1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x2;
export const KVM_VCPUEVENT_VALID_SHADOW = 0x4;
export const KVM_VCPUEVENT_VALID_SMM = 0x8;

export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

export const KVM_CLOCK_TSC_STABLE = 2;

export const KVM_PIT_SPEAKER_DUMMY = 1;

// ---- struct layouts ----
export const kvm_userspace_memory_region = struct("struct kvm_userspace_memory_region", 32, {
  slot: u32(0),
  flags: u32(4),
  guest_phys_addr: u64(8),
  memory_size: u64(16),
  userspace_addr: u64(24),
});

export const kvm_run = struct("struct kvm_run", 2352, {
  request_interrupt_window: u8(0),
  immediate_exit: u8(1),
  exit_reason: u32(8),
  ready_for_interrupt_injection: u8(12),
  if_flag: u8(13),
  cr8: u64(16),
  apic_base: u64(24),
  "io.direction": u8(32),
  "io.size": u8(33),
  "io.port": u16(34),
  "io.count": u32(36),
  "io.data_offset": u64(40),
  "mmio.phys_addr": u64(32),
  "mmio.data": bytes(40, 8),
  "mmio.len": u32(48),
  "mmio.is_write": u8(52),
  "fail_entry.hardware_entry_failure_reason": u64(32),
  "internal.suberror": u32(32),
  "internal.ndata": u32(36),
  "internal.data": bytes(40, 128),
  "system_event.type": u32(32),
});

export const kvm_regs = struct("struct kvm_regs", 144, {
  rax: u64(0),
  rbx: u64(8),
  rcx: u64(16),
  rdx: u64(24),
  rsi: u64(32),
  rdi: u64(40),
  rsp: u64(48),
  rbp: u64(56),
  r8: u64(64),
  r9: u64(72),
  r10: u64(80),
  r11: u64(88),
  r12: u64(96),
  r13: u64(104),
  r14: u64(112),
  r15: u64(120),
  rip: u64(128),
  rflags: u64(136),
});

export const kvm_segment = struct("struct kvm_segment", 24, {
  base: u64(0),
  limit: u32(8),
  selector: u16(12),
  type: u8(14),
  present: u8(15),
  dpl: u8(16),
  db: u8(17),
  s: u8(18),
  l: u8(19),
  g: u8(20),
  avl: u8(21),
  unusable: u8(22),
});

export const kvm_dtable = struct("struct kvm_dtable", 16, {
  base: u64(0),
  limit: u16(8),
});

export const kvm_sregs = struct("struct kvm_sregs", 312, {
  cs: bytes(0, 24),
  ds: bytes(24, 24),
  es: bytes(48, 24),
  fs: bytes(72, 24),
  gs: bytes(96, 24),
  ss: bytes(120, 24),
  tr: bytes(144, 24),
  ldt: bytes(168, 24),
  gdt: bytes(192, 16),
  idt: bytes(208, 16),
  cr0: u64(224),
  cr2: u64(232),
  cr3: u64(240),
  cr4: u64(248),
  cr8: u64(256),
  efer: u64(264),
  apic_base: u64(272),
  interrupt_bitmap: bytes(280, 32),
});

export const kvm_msr_entry = struct("struct kvm_msr_entry", 16, {
  index: u32(0),
  reserved: u32(4),
  data: u64(8),
});

/** Header of struct kvm_msrs; kvm_msr_entry entries[] follow at `entries`. */
export const kvm_msrs = struct("struct kvm_msrs", 8, {
  nmsrs: u32(0),
  pad: u32(4),
  entries: bytes(8, 0),
});

/** Header of struct kvm_msr_list; __u32 indices[] follow. */
export const kvm_msr_list = struct("struct kvm_msr_list", 4, {
  nmsrs: u32(0),
  indices: bytes(4, 0),
});

export const kvm_cpuid_entry2 = struct("struct kvm_cpuid_entry2", 40, {
  function: u32(0),
  index: u32(4),
  flags: u32(8),
  eax: u32(12),
  ebx: u32(16),
  ecx: u32(20),
  edx: u32(24),
});

/** Header of struct kvm_cpuid2; kvm_cpuid_entry2 entries[] follow. */
export const kvm_cpuid2 = struct("struct kvm_cpuid2", 8, {
  nent: u32(0),
  padding: u32(4),
  entries: bytes(8, 0),
});

export const kvm_lapic_state = struct("struct kvm_lapic_state", 1024, {
  regs: bytes(0, 1024),
});

export const kvm_vcpu_events = struct("struct kvm_vcpu_events", 64, {
  "exception.injected": u8(0),
  "exception.nr": u8(1),
  "exception.has_error_code": u8(2),
  "exception.pending": u8(3),
  "exception.error_code": u32(4),
  "interrupt.injected": u8(8),
  "interrupt.nr": u8(9),
  "interrupt.soft": u8(10),
  "interrupt.shadow": u8(11),
  "nmi.injected": u8(12),
  "nmi.pending": u8(13),
  "nmi.masked": u8(14),
  sipi_vector: u32(16),
  flags: u32(20),
});

export const kvm_mp_state = struct("struct kvm_mp_state", 4, {
  mp_state: u32(0),
});

export const kvm_debugregs = struct("struct kvm_debugregs", 128, {
  db: bytes(0, 32),
  dr6: u64(32),
  dr7: u64(40),
  flags: u64(48),
});

export const kvm_xsave = struct("struct kvm_xsave", 4096, {
  region: bytes(0, 4096),
});

export const kvm_xcrs = struct("struct kvm_xcrs", 392, {
  nr_xcrs: u32(0),
  flags: u32(4),
  xcrs: bytes(8, 256),
});

export const kvm_irqchip = struct("struct kvm_irqchip", 520, {
  chip_id: u32(0),
  pad: u32(4),
  chip: bytes(8, 512),
});

export const kvm_irq_level = struct("struct kvm_irq_level", 8, {
  irq: u32(0),
  level: u32(4),
});

export const kvm_pit_config = struct("struct kvm_pit_config", 64, {
  flags: u32(0),
});

export const kvm_pit_state2 = struct("struct kvm_pit_state2", 112, {
  channels: bytes(0, 72),
  flags: u32(72),
});

export const kvm_clock_data = struct("struct kvm_clock_data", 48, {
  clock: u64(0),
  flags: u32(8),
  realtime: u64(16),
  host_tsc: u64(24),
});
