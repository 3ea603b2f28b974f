/* The splitmix64 dataset, materialized in guest memory as a list of page extents. */
#pragma once
#include "types.h"

#define DATASET_MAX_EXTENTS 32

struct dataset {
    uint64_t size;  /* bytes of data */
    uint64_t seed;
    uint32_t nextents;
    struct { uint8_t *base; uint64_t pages; } ext[DATASET_MAX_EXTENTS];
};

/* Allocate memory for size bytes; false if guest memory is too small. */
bool dataset_alloc(struct dataset *d, uint64_t size, uint64_t seed);
/* Fill it on all online CPUs in parallel. */
void dataset_generate(struct dataset *d);
void dataset_free(struct dataset *d);
uint64_t splitmix64_at(uint64_t seed, uint64_t i); /* i-th output (0-based) */

struct sha256;
/* SHA-256 of all d->size bytes into out, with ctx as scratch. Pure computation: run_user may call it. */
void dataset_sha256(const struct dataset *d, struct sha256 *ctx, uint8_t out[32]);
