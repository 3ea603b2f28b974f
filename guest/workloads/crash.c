/* crash: an empty IDT plus ud2 -> #UD cannot be delivered -> #DF cannot -> triple fault. */
#include "console.h"
#include "kernel.h"
#include "workloads.h"

NORETURN void wl_crash(void) {
    kprintf("crashing on purpose\n");
    struct { uint16_t limit; uint64_t base; } PACKED empty = { 0, 0 };
    __asm__ volatile("cli; lidt %0; ud2" ::"m"(empty));
    __builtin_unreachable();
}
