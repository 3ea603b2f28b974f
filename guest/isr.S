/*
 * 256 interrupt stubs, 16 bytes apart, and the IDT pointing at them, prebuilt as
 * data (building it at run time costs ~3 ms where ring 0 is emulated). The stubs
 * are 4 KiB aligned, so stub n's address is isr_stubs + 16n with bits 16..63 shared
 * by all of them; link.ld provides isr_stubs' low and middle 16 bits. Each pushes
 * a dummy error code where the CPU does not, then the vector, saves the general
 * registers and calls trap_dispatch(struct trap_frame *).
 */
    .text
    .code64

.macro ISR n
    .balign 16
    .if (\n == 8) || (\n >= 10 && \n <= 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp isr_common
.endm

.altmacro
.macro ISR_AT n
    ISR %n
.endm

    .balign 4096
    .globl isr_stubs
isr_stubs:
    .set i, 0
    .rept 256
    ISR_AT %i
    .set i, i + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi          /* stack is 16-byte aligned here */
    cld
    call trap_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp           /* vector + error code */
    iretq

/* 64-bit interrupt gates: selector 0x08, IST 0, present, DPL 0. The kernel is
 * below 4 GiB, so offset bits 32..63 are 0. */
    .section .data
    .balign 16
    .globl idt_table, idt_table_end
idt_table:
    .set i, 0
    .rept 256
    .word isr_stubs_lo16 + 16 * i
    .word 0x08
    .byte 0, 0x8e
    .word isr_stubs_hi16
    .long 0, 0
    .set i, i + 1
    .endr
idt_table_end:

    .section .note.GNU-stack, "", @progbits
