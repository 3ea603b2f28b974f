/* IDT setup and the C side of interrupt dispatch. */
#include "idt.h"
#include "apic.h"
#include "console.h"
#include "kernel.h"
#include "user.h"
#include "x86.h"

/* The table itself is prebuilt data in isr.S. */
extern char idt_table[], idt_table_end[];

void idt_load(void) {
    struct { uint16_t limit; uint64_t base; } PACKED ptr = {
        (uint16_t)(idt_table_end - idt_table - 1), (uint64_t)(uintptr_t)idt_table };
    __asm__ volatile("lidt %0" ::"m"(ptr));
}

void trap_dispatch(struct trap_frame *f) {
    uint64_t v = f->vector;
    if ((f->cs & 3) == 3 && user_trap(f))
        return;
    if (v < 32) {
        kprintf("guest panic: exception %lu error 0x%lx rip 0x%lx\n", v, f->error, f->rip);
        if ((f->cs & 3) == 3) kprintf("guest panic: (in ring 3, rsp 0x%lx)\n", f->rsp);
        if (v == 14)
            kprintf("guest panic: page fault address 0x%lx\n", read_cr2());
        machine_exit(128 + (int)v);
    }
    if (v == VEC_TIMER || v == VEC_WAKE) {
        /* Nothing to do: waking the hlt is the point; the sleeper re-checks its condition. */
        lapic_eoi();
        return;
    }
    if (v == VEC_SPURIOUS || (v >= VEC_PIC_BASE && v < VEC_PIC_BASE + 16))
        return; /* spurious LAPIC / masked-PIC interrupts: no EOI */
    kprintf("guest: unexpected interrupt %lu\n", v);
    lapic_eoi();
}
