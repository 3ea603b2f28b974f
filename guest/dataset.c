/* The splitmix64 dataset. Output i uses state seed + (i+1)*GOLDEN, so any CPU can
 * start anywhere: the words are split into one contiguous range per online CPU.
 * Memory is a list of page extents (one if possible) so a dataset can span the
 * holes in guest RAM, e.g. the 3-4 GiB MMIO gap. */
#include "alloc.h"
#include "dataset.h"
#include "sha256.h"
#include "smp.h"
#include "user.h"

#define GOLDEN 0x9E3779B97F4A7C15ull

static inline uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t splitmix64_at(uint64_t seed, uint64_t i) { return mix(seed + (i + 1) * GOLDEN); }

bool dataset_alloc(struct dataset *d, uint64_t size, uint64_t seed) {
    memset(d, 0, sizeof(*d));
    d->size = size;
    d->seed = seed;
    uint64_t need = size / PAGE_SIZE + (size % PAGE_SIZE != 0);
    if (need > alloc_free_pages()) return false;
    while (need) {
        uint64_t n = need, run;
        void *p = alloc_pages(n);
        if (!p && (run = alloc_largest_free_run()) && d->nextents + 1 < DATASET_MAX_EXTENTS)
            p = alloc_pages(n = run < need ? run : need);
        if (!p) { dataset_free(d); return false; }
        d->ext[d->nextents].base = p;
        d->ext[d->nextents].pages = n;
        d->nextents++;
        need -= n;
    }
    return true;
}

void dataset_sha256(const struct dataset *d, struct sha256 *ctx, uint8_t out[32]) {
    sha256_init(ctx);
    uint64_t left = d->size;
    for (uint32_t e = 0; e < d->nextents && left; e++) {
        uint64_t n = d->ext[e].pages * PAGE_SIZE;
        if (n > left) n = left;
        sha256_update(ctx, d->ext[e].base, n);
        left -= n;
    }
    sha256_final(ctx, out);
}

void dataset_free(struct dataset *d) {
    for (uint32_t i = 0; i < d->nextents; i++) free_pages(d->ext[i].base, d->ext[i].pages);
    d->nextents = 0;
}

struct gen_job { struct dataset *d; uint64_t w0, w1; };

/* Words [w0, w1) of the stream; extents are page multiples, so words never straddle them.
 * Runs in ring 3 (user.h): pure computation. */
static uint64_t gen_range(void *arg) {
    struct gen_job *j = arg;
    struct dataset *d = j->d;
    uint64_t w0 = j->w0, w1 = j->w1;
    uint64_t ext_first = 0; /* first word index of the current extent */
    for (uint32_t e = 0; e < d->nextents && w0 < w1; e++) {
        uint64_t ext_words = d->ext[e].pages * (PAGE_SIZE / 8);
        uint64_t ext_end = ext_first + ext_words;
        if (w0 < ext_end) {
            uint64_t end = w1 < ext_end ? w1 : ext_end;
            uint64_t *p = (uint64_t *)d->ext[e].base + (w0 - ext_first);
            uint64_t state = d->seed + w0 * GOLDEN;
            for (uint64_t i = w0; i < end; i++) {
                state += GOLDEN;
                *p++ = mix(state); /* x86 is little-endian: the 8 bytes land LE */
            }
            w0 = end;
        }
        ext_first = ext_end;
    }
    return 0;
}

static void gen_worker(void *arg, uint32_t worker, uint32_t nworkers) {
    struct dataset *d = arg;
    uint64_t words = d->size / 8 + (d->size % 8 != 0);
    /* Split on 4 KiB (512-word) boundaries so CPUs never share a cache line or page. */
    uint64_t blocks = (words + 511) / 512;
    uint64_t b0 = blocks * worker / nworkers, b1 = blocks * (worker + 1) / nworkers;
    uint64_t w0 = b0 * 512, w1 = b1 * 512;
    if (w1 > words) w1 = words;
    struct gen_job job = { d, w0, w1 };
    if (w0 < w1) run_user(gen_range, &job);
}

void dataset_generate(struct dataset *d) {
    if (d->size) smp_run_all(gen_worker, d);
}
