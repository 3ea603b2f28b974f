/* Interrupt descriptor table and the vectors the kernel uses. */
#pragma once
#include "types.h"

#define VEC_PIC_BASE   0x20 /* legacy PIC remapped here, then fully masked */
#define VEC_TIMER      0x40 /* LAPIC timer (sleep_ms) */
#define VEC_WAKE       0x41 /* IPI that wakes an AP to look at its work slot */
#define VEC_SPURIOUS   0xff /* LAPIC spurious vector */

struct trap_frame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
    uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error;
    uint64_t rip, cs, rflags, rsp, ss;
};

void idt_load(void); /* lidt of the prebuilt table (isr.S) on this CPU */
