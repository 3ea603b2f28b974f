/* Running kernel functions in ring 3.
 *
 * Why: under kvm_pvm (the host this project runs on) a non-PVM guest's ring-0 code
 * is emulated instruction by instruction (~1000x slower), while ring-3 code runs
 * natively. So heavy pure computation (dataset generation, SHA-256) is called
 * through run_user(): same address space (every page is mapped U=1), same C code,
 * but CPL 3. The function must be pure computation: no port I/O, cli/sti, hlt,
 * MSRs, kprintf or locks held across the call. */
#pragma once
#include "types.h"
#include "idt.h"

typedef uint64_t (*user_fn)(void *arg);

/* Per CPU (APIC ID id), after lapic_init: own TSS + ring-0 stack, GDT, ltr. */
void user_init_cpu(uint32_t id);
/* Call fn(arg) in ring 3 on this CPU's current stack; returns its result. */
uint64_t run_user(user_fn fn, void *arg);
/* trap_dispatch hook for traps from ring 3: true if it was the return from run_user. */
bool user_trap(struct trap_frame *f);
