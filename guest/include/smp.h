/* Bring up APs and hand them work. */
#pragma once
#include "types.h"

#define MAX_CPUS 256

typedef void (*work_fn)(void *arg, uint32_t worker, uint32_t nworkers);

void smp_start(uint32_t ncpus);  /* BSP: INIT-SIPI-SIPI APIC IDs 1..ncpus-1 */
uint32_t smp_online(void);       /* CPUs running (BSP included) */
/* Run fn on every online CPU (BSP included, as worker 0) and wait for all of them. */
void smp_run_all(work_fn fn, void *arg);
