/*
 * PVH entry. The VMM (or QEMU's pvh option ROM) enters pvh_start32 in 32-bit
 * protected mode, paging off, flat segments, %ebx = physical address of
 * struct hvm_start_info. There is no stack. We switch to the static
 * identity map of the first 4 GiB (2 MiB pages: enough to reach start_info,
 * cmdline and memmap wherever they are below 4 GiB), enter long mode and call
 * kmain(start_info_pa). kmain later replaces these tables with ones covering all RAM.
 * Every instruction here counts: on some hosts (kvm_pvm) ring-0 code is emulated
 * one instruction at a time, so the tables are prebuilt data, not a loop.
 */
#define MSR_EFER   0xc0000080
#define EFER_LME   (1 << 8)
#define CR0_PE     (1 << 0)
#define CR0_WP     (1 << 16)
#define CR0_PG     (1 << 31)
#define CR4_PAE    (1 << 5)
#define PTE_P      0x1
#define PTE_W      0x2
#define PTE_PS     0x80

/* Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY (18). The descriptor is 8 bytes like Linux's
 * (only the low 32 bits matter): QEMU 7.2 reads a full 64-bit word from it. */
    .section .note.Xen, "a"
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 8                 /* descsz */
    .long 18                /* type: XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.boot, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    rdtsc                   /* boot-latency reference, reported by hello verbose=1 */
    mov %eax, boot_tsc0
    mov %edx, boot_tsc0 + 4
    /* .bss is NOT zeroed here: the loader zero-fills p_memsz beyond p_filesz (QEMU
     * does; fresh VMM memory is zero). Clearing ~100 KiB here costs ~8 ms on a host
     * that emulates ring 0. */
    mov %ebx, boot_start_info_pa
    mov $boot_stack_top, %esp

    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    lgdt gdt_ptr
    mov %cr0, %eax
    or $(CR0_PE | CR0_WP | CR0_PG), %eax
    mov %eax, %cr0
    ljmp $0x08, $long_entry

    .code64
long_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov boot_start_info_pa, %edi
    call kmain
3:  cli
    hlt
    jmp 3b

/* One GDT for everything: the BSP here, the AP trampoline (32-bit code at 0x18).
 * Accessed bits preset so the CPU never writes to it. */
    .section .data
    .balign 16
    .globl gdt, gdt_ptr
gdt:
    .quad 0
    .quad 0x00af9b000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf93000000ffff    /* 0x10: flat data */
    .quad 0x00cf9b000000ffff    /* 0x18: flat 32-bit code (AP trampoline) */
gdt_end:
    .balign 8
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .globl boot_start_info_pa, boot_tsc0
boot_start_info_pa:
    .long 0
    .balign 8
boot_tsc0:
    .quad 0

/* Boot page tables: PML4[0] -> PDPT, PDPT[0..3] -> 4 PDs of 2 MiB pages = 0..4 GiB. */
    .balign 4096
boot_pml4:
    .quad boot_pdpt + (PTE_P | PTE_W)
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x0000 + (PTE_P | PTE_W)
    .quad boot_pd + 0x1000 + (PTE_P | PTE_W)
    .quad boot_pd + 0x2000 + (PTE_P | PTE_W)
    .quad boot_pd + 0x3000 + (PTE_P | PTE_W)
    .fill 508, 8, 0
boot_pd:
    .set pa, 0
    .rept 2048
    .quad pa + (PTE_P | PTE_W | PTE_PS)
    .set pa, pa + 0x200000
    .endr

    .section .bss
    .balign 4096
    .globl boot_stack_top
boot_stack: .skip 32768      /* BSP stack */
boot_stack_top:

    .section .note.GNU-stack, "", @progbits
