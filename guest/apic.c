/* xAPIC via MMIO (mapped uncached by paging.c) and the legacy 8259 PIC, which we
 * remap away from the exception vectors and mask completely. */
#include "apic.h"
#include "idt.h"
#include "x86.h"

#define MSR_APIC_BASE    0x1b
#define APIC_BASE_ENABLE (1u << 11)

#define LAPIC_ID    0x020
#define LAPIC_TPR   0x080
#define LAPIC_EOI   0x0b0
#define LAPIC_SVR   0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR  0x390
#define LAPIC_TIMER_DIV  0x3e0
#define LVT_MASKED  (1u << 16)
#define ICR_PENDING (1u << 12)

static uint64_t base;

uint64_t lapic_base(void) {
    if (!base) {
        uint64_t msr = rdmsr(MSR_APIC_BASE);
        if (!(msr & APIC_BASE_ENABLE)) wrmsr(MSR_APIC_BASE, msr | APIC_BASE_ENABLE);
        base = msr & 0x000ffffffffff000ull;
        if (!base) base = LAPIC_DEFAULT_BASE;
    }
    return base;
}

static uint32_t rd(uint32_t reg) { return mmio_read32(base + reg); }
static void wr(uint32_t reg, uint32_t v) { mmio_write32(base + reg, v); }

void pic_disable(void) {
    /* ICW1-4: vectors 0x20/0x28, cascade on IRQ2, 8086 mode; then mask every line. */
    outb(0x20, 0x11); outb(0xa0, 0x11);
    outb(0x21, VEC_PIC_BASE); outb(0xa1, VEC_PIC_BASE + 8);
    outb(0x21, 4); outb(0xa1, 2);
    outb(0x21, 1); outb(0xa1, 1);
    outb(0x21, 0xff); outb(0xa1, 0xff);
}

void lapic_init(void) {
    lapic_base();
    wr(LAPIC_TPR, 0);
    wr(LAPIC_SVR, 0x100 | VEC_SPURIOUS); /* software enable */
    wr(LAPIC_LVT_LINT0, LVT_MASKED);     /* no ExtINT from the (masked) PIC */
    wr(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
    wr(LAPIC_TIMER_DIV, 0x3);            /* divide by 16 */
}

uint32_t lapic_id(void) { return rd(LAPIC_ID) >> 24; }
void lapic_eoi(void) { wr(LAPIC_EOI, 0); }

void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low) {
    wr(LAPIC_ICR_HI, apic_id << 24);
    wr(LAPIC_ICR_LO, icr_low);
    while (rd(LAPIC_ICR_LO) & ICR_PENDING)
        cpu_relax();
}

void lapic_timer_oneshot(uint32_t vector, uint32_t ticks) {
    wr(LAPIC_LVT_TIMER, vector); /* one-shot mode, unmasked */
    wr(LAPIC_TIMER_INIT, ticks ? ticks : 1);
}

void lapic_timer_count_masked(uint32_t ticks) {
    wr(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
    wr(LAPIC_TIMER_INIT, ticks);
}

void lapic_timer_stop(void) {
    wr(LAPIC_TIMER_INIT, 0);
    wr(LAPIC_LVT_TIMER, LVT_MASKED | VEC_TIMER);
}

uint32_t lapic_timer_current(void) { return rd(LAPIC_TIMER_CUR); }
