/* Ending the VM and panics. */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "x86.h"

#define QEMU_DEBUG_EXIT_PORT 0xf4

NORETURN void machine_exit(int status) {
    sf_exit(status); /* returns only without a snowflock host (or if the host refused) */
    /* QEMU isa-debug-exit: QEMU exits with (status << 1) | 1. Harmless if absent. */
    outl(QEMU_DEBUG_EXIT_PORT, (uint32_t)status);
    for (;;)
        __asm__ volatile("cli; hlt");
}

NORETURN void panic(const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    kvsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    kprintf("guest panic: %s\n", buf);
    machine_exit(255);
}
