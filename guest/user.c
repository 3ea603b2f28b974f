/* Ring-3 execution support: a GDT with user segments and one TSS per CPU. */
#include "alloc.h"
#include "apic.h"
#include "kernel.h"
#include "smp.h"
#include "user.h"

#define RING0_STACK_PAGES 4
#define GDT_TSS0 6 /* first TSS slot; selector 0x30 + 16 * id */

struct tss64 {
    uint32_t reserved0;
    uint64_t rsp0, rsp1, rsp2, reserved1, ist[7], reserved2;
    uint16_t reserved3, iomap_base;
} PACKED;

/* Same first four entries as the boot GDT, plus ring-3 data/code. Static data: no
 * run-time cost. */
static uint64_t gdt64[GDT_TSS0 + 2 * MAX_CPUS] __attribute__((aligned(16))) = {
    0,
    0x00af9b000000ffff, /* 0x08: kernel code 64 */
    0x00cf93000000ffff, /* 0x10: kernel data */
    0x00cf9b000000ffff, /* 0x18: 32-bit code (trampoline) */
    0x00cff3000000ffff, /* 0x20: user data, selector 0x23 */
    0x00affb000000ffff, /* 0x28: user code 64, selector 0x2b */
};
static struct tss64 tss[MAX_CPUS];
static uint64_t kernel_rsp[MAX_CPUS]; /* saved by run_user_asm, restored by user_trap */

extern char user_return[], user_exit_ud2[];
uint64_t run_user_asm(user_fn fn, void *arg, uint64_t *save_rsp);

void user_init_cpu(uint32_t id) {
    uint8_t *stack = alloc_pages_below(RING0_STACK_PAGES, 4 * GIB);
    if (!stack) panic("no memory for the ring-0 stack of cpu %u", id);
    struct tss64 *t = &tss[id];
    t->rsp0 = (uint64_t)(uintptr_t)stack + RING0_STACK_PAGES * PAGE_SIZE;
    t->iomap_base = sizeof(*t); /* no I/O bitmap: ring 3 never does port I/O */
    uint64_t b = (uint64_t)(uintptr_t)t, lim = sizeof(*t) - 1;
    gdt64[GDT_TSS0 + 2 * id] = (lim & 0xffff) | (b & 0xffffff) << 16 | 0x89ull << 40 |
                               (lim >> 16 & 0xf) << 48 | (b >> 24 & 0xff) << 56;
    gdt64[GDT_TSS0 + 2 * id + 1] = b >> 32;
    struct { uint16_t limit; uint64_t base; } PACKED ptr = { sizeof(gdt64) - 1, (uint64_t)(uintptr_t)gdt64 };
    /* Selectors keep their values, so CS/SS need no reload after lgdt. */
    __asm__ volatile("lgdt %0; ltr %w1" ::"m"(ptr), "r"((uint16_t)(0x30 + 16 * id)) : "memory");
}

uint64_t run_user(user_fn fn, void *arg) {
    return run_user_asm(fn, arg, &kernel_rsp[lapic_id()]);
}

bool user_trap(struct trap_frame *f) {
    if (f->vector != 6 || f->rip != (uint64_t)(uintptr_t)user_exit_ud2)
        return false;
    f->rip = (uint64_t)(uintptr_t)user_return;
    f->cs = 0x08;
    f->ss = 0x10;
    f->rsp = kernel_rsp[lapic_id()];
    f->rflags = 0x2; /* user_return's popfq restores the caller's flags */
    return true;
}
