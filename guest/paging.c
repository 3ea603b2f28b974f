/* Final identity page tables: every 2 MiB page that touches memmap RAM, plus the LAPIC
 * page uncached. Table pages come from a bump allocator right after the kernel image
 * (inside the boot 4 GiB map and below 4 GiB, as the AP trampoline loads CR3 in 32-bit mode). */
#include "apic.h"
#include "kernel.h"
#include "paging.h"
#include "x86.h"

#define PTE_P   0x1ull
#define PTE_W   0x2ull
#define PTE_U   0x4ull /* everything user-accessible: see user.h (no SMEP/SMAP) */
#define PTE_U   0x4ull
#define PTE_PWT 0x8ull
#define PTE_PCD 0x10ull
#define PTE_PS  0x80ull
#define PTE_ADDR 0x000ffffffffff000ull
#define PAGE_2M (2 * MIB)

static uint64_t early_next, early_limit;
static uint64_t *pml4;
static uint64_t top;

/* The RAM region holding the kernel bounds the early allocator. */
static void early_setup(void) {
    if (early_next) return;
    early_next = ALIGN_UP((uint64_t)(uintptr_t)_kernel_end, PAGE_SIZE);
    uint64_t ks = (uint64_t)(uintptr_t)_kernel_start;
    for (uint32_t i = 0; i < boot_memmap_entries; i++) {
        const struct memmap_entry *e = &boot_memmap[i];
        if (e->type == E820_RAM && e->addr <= ks && ks < e->addr + e->size)
            early_limit = e->addr + e->size;
    }
    if (early_limit > 4 * GIB) early_limit = 4 * GIB;
    if (early_limit < early_next)
        panic("memmap has no RAM region holding the kernel at 0x%lx", ks);
}

void *early_alloc_raw(uint64_t pages) {
    early_setup();
    if (pages > (early_limit - early_next) / PAGE_SIZE)
        panic("no room after the kernel for page tables and the page bitmap");
    void *p = (void *)(uintptr_t)early_next;
    early_next += pages * PAGE_SIZE;
    return p;
}

void *early_alloc_page(void) { return memset(early_alloc_raw(1), 0, PAGE_SIZE); }

uint64_t early_alloc_end(void) {
    early_setup();
    return early_next;
}

static uint64_t *next_table(uint64_t *table, unsigned idx) {
    if (!(table[idx] & PTE_P))
        table[idx] = (uint64_t)(uintptr_t)early_alloc_page() | PTE_P | PTE_W | PTE_U;
    return (uint64_t *)(uintptr_t)(table[idx] & PTE_ADDR);
}

/* One table walk per 1 GiB, then a tight loop over PD entries: ring 0 may be emulated. */
static void map_range(uint64_t start, uint64_t end, uint64_t extra) {
    uint64_t pa = ALIGN_DOWN(start, PAGE_2M);
    while (pa < end) {
        uint64_t *pdpt = next_table(pml4, (pa >> 39) & 511);
        uint64_t *pd = next_table(pdpt, (pa >> 30) & 511);
        uint64_t stop = ALIGN_DOWN(pa, GIB) + GIB;
        if (stop > end) stop = end;
        uint64_t flags = PTE_P | PTE_W | PTE_U | PTE_PS | extra;
        for (; pa < stop; pa += PAGE_2M)
            pd[(pa >> 21) & 511] = pa | flags;
    }
}

void paging_init(void) {
    pml4 = early_alloc_page();
    for (uint32_t i = 0; i < boot_memmap_entries; i++) {
        const struct memmap_entry *e = &boot_memmap[i];
        if (e->type != E820_RAM || !e->size) continue;
        uint64_t end = e->addr + e->size;
        if (end < e->addr || end > (1ull << 46)) end = 1ull << 46; /* 4 PML4 levels: stay sane */
        map_range(e->addr, end, 0);
        if (end > top) top = end;
    }
    /* Low 2 MiB (AP trampoline) whatever the memmap says; the kernel is in RAM (early_setup). */
    map_range(0, PAGE_2M, 0);
    map_range(lapic_base(), lapic_base() + PAGE_SIZE, PTE_PCD | PTE_PWT);
    write_cr3((uint64_t)(uintptr_t)pml4);
}

uint64_t paging_cr3(void) { return (uint64_t)(uintptr_t)pml4; }
uint64_t ram_top(void) { return top; }
