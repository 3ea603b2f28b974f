/* Bitmap page allocator over memmap RAM above the kernel. Pages are NOT zeroed. */
#pragma once
#include "types.h"

void alloc_init(void);
void *alloc_pages(uint64_t n);           /* physically contiguous, identity-mapped; NULL if none */
void *alloc_pages_below(uint64_t n, uint64_t limit); /* same, ending at or below limit */
void free_pages(void *p, uint64_t n);
uint64_t alloc_largest_free_run(void);   /* pages in the largest free contiguous run */
uint64_t alloc_total_pages(void);
uint64_t alloc_free_pages(void);
