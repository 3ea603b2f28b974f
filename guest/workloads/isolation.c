/* isolation: a test workload showing that after sf_clone every member has its own memory.
 * The parent and clone 1 each write the shared variable and only then tell the next member to
 * look; the next member must still see the value from the instant of the clone. */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "workloads.h"

static volatile uint64_t shared = 1000;

static void wait_for(uint64_t from) {
    uint64_t sender, note;
    while (sf_recv(&note, 8, &sender, 0) == 8 && sender != from) {}
}

NORETURN void wl_isolation(void) {
    uint64_t granted, note = 1;
    int64_t t = sf_request_ticket(2, &granted);
    int64_t id = sf_clone(t);
    if (id == 1 || id == 2) {
        wait_for((uint64_t)id - 1); /* the parent (0) for clone 1, clone 1 for clone 2 */
        uint64_t seen = shared;
        shared = 2000 + (uint64_t)id;
        if (id == 1) sf_send(2, &note, 8);
        sf_send(0, &seen, 8);
        machine_exit(0);
    }
    shared = 3000;
    sf_send(1, &note, 8);
    int64_t statuses[2];
    sf_join(t, statuses, 2);
    uint64_t seen, sender;
    while (sf_recv(&seen, 8, &sender, SF_RECV_NONBLOCK) == 8) kprintf("isolation clone %lu saw %lu\n", sender, seen);
    kprintf("isolation parent sees %lu\n", shared);
    machine_exit(0);
}
