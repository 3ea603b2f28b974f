/* serve: a long-running VM to clone. Ticks every period=MS (default 100 ms), asking the host for
 * its clone id each time (it changes when this VM is a fresh clone). Each tick is two exits to the
 * VMM (the clone id, the console line): the fork benchmark ticks once a second, as a quieter
 * server would, so that 32 running clones do not take the cores from the ones still starting. */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "time.h"
#include "workloads.h"
#include "x86.h"

#define PERIOD_MS 100

NORETURN void wl_serve(void) {
    uint64_t period_ms = PERIOD_MS;
    if (!cmdline_number("period", false, false, 10, 60000, &period_ms)) machine_exit(2);
    uint64_t period = tsc_hz() / 1000 * period_ms;
    uint64_t next = rdtsc();
    for (uint64_t k = 0;; k++) {
        int64_t id = sf_clone_id();
        kprintf("tick %lu id %ld\n", k, id < 0 ? 0 : id);
        next += period;
        /* Behind by more than a period (e.g. the VM was paused or restored): resync
         * instead of bursting catch-up ticks. */
        if ((int64_t)(rdtsc() - next) > (int64_t)period) next = rdtsc() + period;
        sleep_until_tsc(next);
    }
}
