/* SMP: INIT-SIPI-SIPI the APs through the trampoline, then park them in hlt with
 * interrupts on, each waiting on its own work slot (woken by a VEC_WAKE IPI). */
#include "alloc.h"
#include "apic.h"
#include "console.h"
#include "idt.h"
#include "kernel.h"
#include "paging.h"
#include "smp.h"
#include "time.h"
#include "user.h"
#include "x86.h"

#define TRAMPOLINE_BASE 0x8000ul
#define AP_STACK_PAGES  4
#define ICR_INIT        0x4500u /* INIT, level assert */
#define ICR_SIPI        0x4600u /* start-up; low byte = vector = page number */

extern char trampoline_start[], trampoline_end[], tr_cr3[];
uint64_t ap_stack_tops[MAX_CPUS]; /* read by ap_long_entry, indexed by APIC ID */

struct work_slot {
    volatile uint32_t busy; /* 1 = work posted, back to 0 when done */
    work_fn fn;
    void *arg;
    uint32_t worker, nworkers;
} __attribute__((aligned(64)));

static struct work_slot slots[MAX_CPUS];
static volatile uint8_t cpu_up[MAX_CPUS];
static uint32_t online_ids[MAX_CPUS]; /* [0] is the BSP */
static uint32_t nonline = 1;

NORETURN void ap_main(uint32_t id) {
    idt_load();
    lapic_init();
    user_init_cpu(id);
    __atomic_store_n(&cpu_up[id], 1, __ATOMIC_RELEASE);
    struct work_slot *s = &slots[id];
    for (;;) {
        irq_disable();
        if (__atomic_load_n(&s->busy, __ATOMIC_ACQUIRE)) {
            irq_enable();
            s->fn(s->arg, s->worker, s->nworkers);
            __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
            continue;
        }
        irq_enable_and_halt(); /* VEC_WAKE (or anything) brings us back to re-check */
    }
}

static bool trampoline_in_ram(void) {
    for (uint32_t i = 0; i < boot_memmap_entries; i++) {
        const struct memmap_entry *e = &boot_memmap[i];
        if (e->type == E820_RAM && e->addr <= TRAMPOLINE_BASE &&
            e->addr + e->size >= TRAMPOLINE_BASE + PAGE_SIZE)
            return true;
    }
    return false;
}

static bool all_up(const uint32_t *ids, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (!__atomic_load_n(&cpu_up[ids[i]], __ATOMIC_ACQUIRE)) return false;
    return true;
}

void smp_start(uint32_t ncpus) {
    uint32_t bsp = lapic_id();
    online_ids[0] = bsp;
    cpu_up[bsp] = 1;
    if (ncpus <= 1) return;
    if (!trampoline_in_ram()) {
        kprintf("warning: no RAM at 0x%lx for the AP trampoline; using 1 CPU\n", TRAMPOLINE_BASE);
        return;
    }
    size_t tlen = (size_t)(trampoline_end - trampoline_start);
    uint8_t *t = (uint8_t *)(uintptr_t)TRAMPOLINE_BASE;
    memcpy(t, trampoline_start, tlen);
    *(uint32_t *)(t + (tr_cr3 - trampoline_start)) = (uint32_t)paging_cr3();

    uint32_t ids[MAX_CPUS], n = 0;
    for (uint32_t id = 0; id < ncpus && id < MAX_CPUS; id++) {
        if (id == bsp) continue;
        void *stack = alloc_pages_below(AP_STACK_PAGES, 4 * GIB);
        if (!stack) { kprintf("warning: no memory for cpu %u stack\n", id); continue; }
        ap_stack_tops[id] = (uint64_t)(uintptr_t)stack + AP_STACK_PAGES * PAGE_SIZE;
        ids[n++] = id;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    /* All APs at once. KVM and QEMU need no 10 ms INIT delay; a short one is enough. */
    for (uint32_t i = 0; i < n; i++) lapic_send_ipi(ids[i], ICR_INIT);
    pit_delay_us(10);
    for (uint32_t i = 0; i < n; i++) lapic_send_ipi(ids[i], ICR_SIPI | (TRAMPOLINE_BASE >> 12));
    for (int ms = 0; ms < 1 && !all_up(ids, n); ms++) pit_delay_us(1000);
    /* Second SIPI only to the ones not up yet (a running CPU ignores it anyway). */
    for (uint32_t i = 0; i < n; i++)
        if (!cpu_up[ids[i]]) lapic_send_ipi(ids[i], ICR_SIPI | (TRAMPOLINE_BASE >> 12));
    for (int ms = 0; ms < 500 && !all_up(ids, n); ms++) pit_delay_us(1000);

    for (uint32_t i = 0; i < n; i++) {
        if (__atomic_load_n(&cpu_up[ids[i]], __ATOMIC_ACQUIRE)) online_ids[nonline++] = ids[i];
        else kprintf("warning: cpu %u did not start\n", ids[i]);
    }
}

uint32_t smp_online(void) { return nonline; }

void smp_run_all(work_fn fn, void *arg) {
    for (uint32_t k = 1; k < nonline; k++) {
        struct work_slot *s = &slots[online_ids[k]];
        s->fn = fn;
        s->arg = arg;
        s->worker = k;
        s->nworkers = nonline;
        __atomic_store_n(&s->busy, 1, __ATOMIC_RELEASE);
        lapic_send_ipi(online_ids[k], VEC_WAKE); /* fixed delivery, physical destination */
    }
    fn(arg, 0, nonline);
    for (uint32_t k = 1; k < nonline; k++)
        while (__atomic_load_n(&slots[online_ids[k]].busy, __ATOMIC_ACQUIRE))
            cpu_relax();
}
