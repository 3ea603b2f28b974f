/* Workloads selected by the first command-line word. Each ends the VM via machine_exit(). */
#pragma once
#include "types.h"

#define WL_EARLY 1 /* run before paging/allocator/SMP setup (boot latency) */

struct workload { const char *name; unsigned flags; NORETURN void (*run)(void); };

NORETURN void wl_hello(void);
NORETURN void wl_sha256(void);
NORETURN void wl_serve(void);
NORETURN void wl_crash(void);
NORETURN void wl_hostile(void);
NORETURN void wl_sha256_par(void);
NORETURN void wl_search_par(void);
NORETURN void wl_alloc_par(void);
NORETURN void wl_mem_states(void);
NORETURN void wl_misuse(void);
NORETURN void wl_isolation(void);
NORETURN void wl_quotas(void);
NORETURN void wl_compute(void);
