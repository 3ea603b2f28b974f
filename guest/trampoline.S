/*
 * AP start-up. trampoline_start..trampoline_end is copied to TRAMPOLINE_BASE (below
 * 1 MiB, page-aligned: the SIPI vector is its page number). An AP starts there in
 * real mode with CS = base >> 4, goes through 32-bit protected mode into long mode
 * with the BSP's page tables (CR3 patched into tr_cr3 by smp.c), then jumps to
 * ap_long_entry in the kernel image, which picks its stack by APIC ID.
 */
#define TRAMPOLINE_BASE 0x8000
#define REL(x)  (TRAMPOLINE_BASE + (x) - trampoline_start)

    .section .text.trampoline, "ax"
    .globl trampoline_start, trampoline_end, tr_cr3
    .code16
trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tr_gdt_ptr - trampoline_start
    mov %cr0, %eax
    or $1, %eax                     /* CR0.PE */
    mov %eax, %cr0
    ljmpl $0x18, $REL(tr32)

    .code32
tr32:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax              /* CR4.PAE */
    mov %eax, %cr4
    mov REL(tr_cr3), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER.LME */
    rdmsr
    or $(1 << 8), %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010000, %eax            /* CR0.PG | CR0.WP */
    mov %eax, %cr0
    ljmp $0x08, $REL(tr64)

    .code64
tr64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    movabs $ap_long_entry, %rax
    jmp *%rax

    .balign 8
tr_gdt_ptr:                          /* 16-bit lgdtl form: limit + 32-bit base */
    .word 31
    .long gdt
tr_cr3:
    .long 0
trampoline_end:

    .text
    .code64
ap_long_entry:
    /* Initial APIC ID (CPUID.1:EBX[31:24]) selects this CPU's stack. */
    mov $1, %eax
    cpuid
    shr $24, %ebx
    mov ap_stack_tops(,%rbx,8), %rsp
    xor %ebp, %ebp
    mov %ebx, %edi
    call ap_main
1:  cli
    hlt
    jmp 1b

    .section .note.GNU-stack, "", @progbits
