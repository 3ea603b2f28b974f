/* hello: the boot-latency probe. Runs before paging/allocator/SMP setup. */
#include "console.h"
#include "kernel.h"
#include "workloads.h"
#include "x86.h"

extern uint64_t boot_tsc0; /* rdtsc at the first instruction (boot.S) */

NORETURN void wl_hello(void) {
    uint64_t t = rdtsc();
    static const char line[] = "hello from snowflock guest\n";
    console_write(line, sizeof(line) - 1); /* no formatting: this is the latency probe */
    if (cmdline_flag("verbose")) {
        uint64_t t2 = rdtsc();
        kprintf("hello: %lu TSC cycles from entry to the hello line, %lu to print it\n",
                t - boot_tsc0, t2 - t);
    }
    machine_exit(0);
}
