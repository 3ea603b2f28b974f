/* SHA-256 (FIPS 180-4), integer only. */
#pragma once
#include "types.h"

struct sha256 { uint32_t h[8]; uint8_t buf[64]; uint64_t len; uint32_t nbuf; };

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, uint64_t n);
void sha256_final(struct sha256 *s, uint8_t out[32]);
