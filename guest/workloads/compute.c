/* compute size=SIZE passes=P rounds=R seed=S: a compute-bound loop over a small working set, for
 * `snowflock bench overhead`. Each round hashes the SIZE-byte dataset P times and prints
 * `round <r> id <clone-id> ns <time> sha <hex>`; after R rounds it prints `rounds done id <clone-id>`
 * and idles until it finds itself a fresh clone (its clone id changed), which runs R rounds again.
 * Rounds are timed by the guest's own TSC, so the host's view of the console does not blur them. */
#include "console.h"
#include "dataset.h"
#include "kernel.h"
#include "sf.h"
#include "sha256.h"
#include "time.h"
#include "user.h"
#include "workloads.h"

/* How often an idle VM looks whether it is a fresh clone. Each look is a timer interrupt and a
 * hypercall: at 10 ms the idle parent took the nested test host's one core from the clone being
 * measured (clones 8-41% slower there; 1-4% at 250 ms). A clone notices at most this late. */
#define IDLE_POLL_MS 250

static struct dataset ds;

struct compute_job { uint64_t passes; struct sha256 ctx; uint8_t digest[32]; };

/* Ring 3 (see user.h): the hashing is the work measured. */
static uint64_t hash_passes(void *arg) {
    struct compute_job *j = arg;
    for (uint64_t p = 0; p < j->passes; p++) dataset_sha256(&ds, &j->ctx, j->digest);
    return 0;
}

/* Without a snowflock host (SF_ENOSYS) the VM counts as an original. */
static int64_t clone_id(void) {
    int64_t id = sf_clone_id();
    return id < 0 ? 0 : id;
}

NORETURN void wl_compute(void) {
    uint64_t size = 1 << 20, passes = 16, rounds = 8, seed = 0;
    if (!cmdline_number("size", true, false, 0, UINT64_MAX, &size) || !cmdline_number("passes", false, false, 1, 1000000, &passes) ||
        !cmdline_number("rounds", false, false, 1, 1000, &rounds) || !cmdline_number("seed", false, false, 0, UINT64_MAX, &seed))
        machine_exit(2);
    if (!dataset_alloc(&ds, size, seed)) {
        kprintf("error: not enough guest memory for a dataset of %lu bytes\n", size);
        machine_exit(3);
    }
    dataset_generate(&ds);
    static struct compute_job job;
    job.passes = passes;
    for (int64_t id = clone_id();;) {
        for (uint64_t r = 0; r < rounds; r++) {
            uint64_t t0 = time_now_ns();
            run_user(hash_passes, &job);
            uint64_t t1 = time_now_ns();
            char hex[17];
            for (int i = 0; i < 8; i++) {
                hex[2 * i] = "0123456789abcdef"[job.digest[i] >> 4];
                hex[2 * i + 1] = "0123456789abcdef"[job.digest[i] & 15];
            }
            hex[16] = '\0';
            kprintf("round %lu id %ld ns %lu sha %s\n", r, id, t1 - t0, hex);
        }
        kprintf("rounds done id %ld\n", id);
        for (int64_t was = id; id == was;) {
            sleep_ms(IDLE_POLL_MS);
            id = clone_id();
        }
    }
}
