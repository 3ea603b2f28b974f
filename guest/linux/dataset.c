/*
 * dataset SEED BYTES: writes the first BYTES bytes of the splitmix64 dataset for SEED to stdout,
 * the same stream the built-in guest's workloads use (guest/dataset.c) and the host checks them
 * with (src/guest/dataset.ts): output i is mix(SEED + (i + 1) * golden ratio), 8 little-endian
 * bytes each. A test job for Linux domUs: fill a file in RAM, fork with sf, hash a slice per clone.
 */
#define TOOL_NAME "dataset"
#include "freestanding.h"

#define GOLDEN 0x9E3779B97F4A7C15ull

static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t chunk[8192];

static int tool_main(int argc, char **argv) {
    uint64_t seed, bytes;
    if (argc != 3 || !parse_u64(argv[1], &seed) || !parse_u64(argv[2], &bytes)) {
        out(2, "usage: dataset SEED BYTES (decimal)\n");
        return 2;
    }
    uint64_t word = 0;
    while (bytes > 0) {
        for (size_t k = 0; k < sizeof chunk / sizeof chunk[0]; k++) chunk[k] = mix(seed + (++word) * GOLDEN);
        size_t n = bytes < sizeof chunk ? (size_t)bytes : sizeof chunk;
        for (size_t done = 0; done < n;) {
            long w = syscall3(SYS_write, 1, (long)((uint8_t *)chunk + done), (long)(n - done));
            if (w <= 0) die("cannot write to stdout", 0);
            done += (size_t)w;
        }
        bytes -= n;
    }
    return 0;
}
