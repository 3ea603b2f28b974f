/* Bitmap page allocator: one bit per 4 KiB page frame from 0 to the top of RAM
 * (1 = used). Only memmap RAM above the kernel, its page tables and this bitmap is
 * ever free; everything below 1 MiB stays used (the AP trampoline lives there).
 * Returned pages are NOT zeroed: the dataset overwrites them anyway. */
#include "alloc.h"
#include "kernel.h"
#include "sf.h"
#include "paging.h"
#include "x86.h"

static uint64_t *bitmap;
static uint64_t nframes, first_free_pfn, total, nfree;
static spinlock_t lock;

static inline bool used(uint64_t pfn) { return bitmap[pfn >> 6] >> (pfn & 63) & 1; }
static inline void set_used(uint64_t pfn) { bitmap[pfn >> 6] |= 1ull << (pfn & 63); }
static inline void set_free(uint64_t pfn) { bitmap[pfn >> 6] &= ~(1ull << (pfn & 63)); }

/* alloc_init runs in ring 0, which some hosts emulate per instruction (see user.h):
 * whole words go through rep stos / repe scas, whose iterations are cheap there. */
static void fill_range(uint64_t s, uint64_t e, bool use) {
    if (e > nframes) e = nframes;
    for (; s < e && (s & 63); s++) use ? set_used(s) : set_free(s);
    if (s + 64 <= e) {
        uint64_t n = (e - s) / 64;
        memset(&bitmap[s >> 6], use ? 0xff : 0, n * 8);
        s += n * 64;
    }
    for (; s < e; s++) use ? set_used(s) : set_free(s);
}

/* Number of leading words in p[0..n) equal to v. */
static uint64_t run_of(const uint64_t *p, uint64_t n, uint64_t v) {
    const uint64_t *q = p;
    bool mismatch;
    if (!n) return 0;
    __asm__ volatile("repe scasq" : "+D"(q), "+c"(n), "=@ccnz"(mismatch) : "a"(v) : "memory");
    return (uint64_t)(q - p) - (mismatch ? 1 : 0);
}

static unsigned popcount64(uint64_t x) {
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

void alloc_init(void) {
    nframes = ram_top() / PAGE_SIZE;
    uint64_t words = (nframes + 63) / 64;
    uint64_t pages = (words * 8 + PAGE_SIZE - 1) / PAGE_SIZE;
    bitmap = early_alloc_raw(pages);
    memset(bitmap, 0xff, words * 8);

    uint64_t floor = early_alloc_end(); /* kernel image + page tables + bitmap */
    if (floor < MIB) floor = MIB;
    first_free_pfn = floor / PAGE_SIZE;
    for (uint32_t i = 0; i < boot_memmap_entries; i++) {
        const struct memmap_entry *e = &boot_memmap[i];
        uint64_t s = ALIGN_UP(e->addr, PAGE_SIZE) / PAGE_SIZE;
        uint64_t end = e->addr + e->size < e->addr ? UINT64_MAX : e->addr + e->size;
        if (e->type == E820_RAM && s < first_free_pfn) s = first_free_pfn;
        if (e->type == E820_RAM) fill_range(s, ALIGN_DOWN(end, PAGE_SIZE) / PAGE_SIZE, false);
    }
    /* Reserved entries overlapping RAM entries win. */
    for (uint32_t i = 0; i < boot_memmap_entries; i++) {
        const struct memmap_entry *e = &boot_memmap[i];
        uint64_t end = e->addr + e->size < e->addr ? UINT64_MAX : e->addr + e->size;
        if (e->type != E820_RAM)
            fill_range(e->addr / PAGE_SIZE, end / PAGE_SIZE + (end % PAGE_SIZE != 0), true);
    }
    nfree = 0; /* bits past nframes in the last word stay 1 */
    for (uint64_t w = 0; w < words;) {
        uint64_t z = run_of(bitmap + w, words - w, 0);
        uint64_t f = run_of(bitmap + w + z, words - w - z, ~0ull);
        nfree += 64 * z;
        w += z + f;
        if (!z && !f) nfree += 64 - popcount64(bitmap[w++]);
    }
    total = nfree;
    /* Tell the host where the bitmap is: free pages need no fetch in a clone (their contents
     * are undefined to whoever allocates them next, see alloc.h). Ignored where there is no host. */
    sf_free_pages(bitmap, nframes);
}

/* First fit: lowest run of n free frames ending at or below limit_pfn. */
static uint64_t find_run(uint64_t n, uint64_t limit_pfn) {
    uint64_t run = 0, start = 0;
    for (uint64_t i = first_free_pfn; i < limit_pfn;) {
        if (!(i & 63) && i + 64 <= limit_pfn) {
            uint64_t w = bitmap[i >> 6];
            if (w == ~0ull) { run = 0; i += 64; continue; }
            if (w == 0) {
                if (!run) start = i;
                if (run + 64 >= n) return start;
                run += 64;
                i += 64;
                continue;
            }
        }
        if (used(i)) run = 0;
        else {
            if (!run) start = i;
            if (++run == n) return start;
        }
        i++;
    }
    return UINT64_MAX;
}

void *alloc_pages_below(uint64_t n, uint64_t limit) {
    if (!n) return NULL;
    uint64_t limit_pfn = limit / PAGE_SIZE;
    if (limit_pfn > nframes) limit_pfn = nframes;
    spin_lock(&lock);
    uint64_t s = n <= nfree ? find_run(n, limit_pfn) : UINT64_MAX;
    if (s != UINT64_MAX) {
        for (uint64_t i = s; i < s + n; i++) set_used(i);
        nfree -= n;
    }
    spin_unlock(&lock);
    if (s == UINT64_MAX) return NULL;
    /* The contents are the new owner's to write (alloc.h): a clone need not fetch them. */
    sf_allocated((void *)(uintptr_t)(s * PAGE_SIZE), n);
    return (void *)(uintptr_t)(s * PAGE_SIZE);
}

void *alloc_pages(uint64_t n) { return alloc_pages_below(n, UINT64_MAX); }

void free_pages(void *p, uint64_t n) {
    uint64_t s = (uint64_t)(uintptr_t)p / PAGE_SIZE;
    spin_lock(&lock);
    for (uint64_t i = s; i < s + n; i++) {
        if (i < first_free_pfn || i >= nframes || !used(i))
            panic("free_pages: bad free of frame 0x%lx", i);
        set_free(i);
    }
    nfree += n;
    spin_unlock(&lock);
}

uint64_t alloc_largest_free_run(void) {
    uint64_t best = 0, run = 0;
    spin_lock(&lock);
    for (uint64_t i = first_free_pfn; i < nframes; i++) {
        if (!(i & 63) && i + 64 <= nframes && bitmap[i >> 6] == ~0ull) { run = 0; i += 63; continue; }
        run = used(i) ? 0 : run + 1;
        if (run > best) best = run;
    }
    spin_unlock(&lock);
    return best;
}

uint64_t alloc_total_pages(void) { return total; }
uint64_t alloc_free_pages(void) { return nfree; }
