/* serve: a long-running VM to clone. Ticks every ~100 ms, asking the host for its
 * clone id each time (it changes when this VM is a fresh clone). */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "time.h"
#include "workloads.h"
#include "x86.h"

#define PERIOD_MS 100

NORETURN void wl_serve(void) {
    uint64_t period = tsc_hz() / 1000 * PERIOD_MS;
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
