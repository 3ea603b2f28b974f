/* sha256 size=SIZE seed=SEED: hash the first SIZE bytes of the splitmix64 dataset. */
#include "console.h"
#include "dataset.h"
#include "kernel.h"
#include "sha256.h"
#include "time.h"
#include "user.h"
#include "workloads.h"

static struct dataset ds;

struct hash_job { struct sha256 ctx; uint8_t digest[32]; };

/* Ring 3 (see user.h): hashing is the hot loop. */
static uint64_t hash_dataset(void *arg) {
    struct hash_job *j = arg;
    dataset_sha256(&ds, &j->ctx, j->digest);
    return 0;
}

NORETURN void wl_sha256(void) {
    uint64_t size, seed = 0;
    if (!cmdline_number("size", true, true, 0, UINT64_MAX, &size) || !cmdline_number("seed", false, false, 0, UINT64_MAX, &seed))
        machine_exit(2);
    bool verbose = cmdline_flag("verbose");
    uint64_t t0 = verbose ? time_now_ns() : 0;

    if (!dataset_alloc(&ds, size, seed)) {
        kprintf("error: not enough guest memory for a dataset of %lu bytes\n", size);
        machine_exit(3);
    }
    dataset_generate(&ds);
    uint64_t t1 = verbose ? time_now_ns() : 0;

    static struct hash_job job;
    run_user(hash_dataset, &job);
    const uint8_t *dig = job.digest;

    char hex[65];
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = "0123456789abcdef"[dig[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[dig[i] & 15];
    }
    hex[64] = '\0';
    if (verbose) {
        uint64_t t2 = time_now_ns();
        kprintf("sha256: tsc %lu Hz, %u extents, generate %lu us, hash %lu us\n", tsc_hz(), ds.nextents,
                (t1 - t0) / 1000, (t2 - t1) / 1000);
    }
    kprintf("sha256 %s\n", hex);
    machine_exit(0);
}
