/* Identity page tables built in C from the memmap (2 MiB pages). */
#pragma once
#include "types.h"

/* Bump allocator for memory right after the kernel image, used before alloc_init(). */
void *early_alloc_page(void);            /* zeroed */
void *early_alloc_raw(uint64_t pages);  /* contiguous, not zeroed */
uint64_t early_alloc_end(void);
/* Map all memmap RAM + the LAPIC page, switch CR3. */
void paging_init(void);
uint64_t paging_cr3(void);
uint64_t ram_top(void); /* end of the highest RAM region */
