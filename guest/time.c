/* Time. The TSC (and the LAPIC timer rate) are calibrated against PIT channel 2 only
 * when something first needs time, so boot-to-first-line does not pay ~10 ms for it.
 * Sleeping programs a one-shot LAPIC timer and halts: idle VMs cost the host nothing. */
#include "apic.h"
#include "idt.h"
#include "kernel.h"
#include "time.h"
#include "x86.h"

#define PIT_HZ      1193182ull
#define PIT_CH2     0x42
#define PIT_CMD     0x43
#define PORT_B      0x61   /* bit 0: ch2 gate, bit 1: speaker, bit 5: ch2 output */
#define CAL_COUNT   11932u /* ~10 ms */

static uint64_t hz_tsc, hz_lapic, tsc_base;
static volatile int calibrated;
static spinlock_t cal_lock;

/* Channel 2, mode 0 (interrupt on terminal count): OUT rises when count reaches 0. */
static void pit_ch2_start(uint16_t count) {
    outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01);
    outb(PIT_CMD, 0xb0); /* ch2, lobyte/hibyte, mode 0, binary */
    outb(PIT_CH2, count & 0xff);
    outb(PIT_CH2, count >> 8);
}
static bool pit_ch2_done(void) { return inb(PORT_B) & 0x20; }

void pit_delay_us(uint32_t us) {
    while (us) {
        uint32_t chunk = us > 50000 ? 50000 : us;
        uint64_t count = chunk * PIT_HZ / 1000000 + 1;
        pit_ch2_start((uint16_t)count);
        while (!pit_ch2_done()) cpu_relax();
        us -= chunk;
    }
}

void time_calibrate(void) {
    if (calibrated) return;
    spin_lock(&cal_lock);
    if (!calibrated) {
        lapic_timer_stop();
        pit_ch2_start(CAL_COUNT);
        lapic_timer_count_masked(0xffffffffu); /* count down without interrupting */
        uint64_t t0 = rdtsc();
        while (!pit_ch2_done()) cpu_relax();
        uint64_t t1 = rdtsc();
        uint32_t left = lapic_timer_current();
        lapic_timer_stop();
        hz_tsc = (t1 - t0) * PIT_HZ / CAL_COUNT;
        hz_lapic = (uint64_t)(0xffffffffu - left) * PIT_HZ / CAL_COUNT;
        if (!hz_tsc || !hz_lapic)
            panic("time calibration failed (tsc %lu Hz, lapic %lu Hz)", hz_tsc, hz_lapic);
        tsc_base = t0;
        __atomic_store_n(&calibrated, 1, __ATOMIC_RELEASE);
    }
    spin_unlock(&cal_lock);
}

uint64_t tsc_hz(void) {
    time_calibrate();
    return hz_tsc;
}

/* a * b / c without 128-bit division (no libgcc): split a into whole and fractional c. */
static uint64_t muldiv(uint64_t a, uint64_t b, uint64_t c) {
    return (a / c) * b + (a % c) * b / c;
}

uint64_t time_now_ns(void) {
    time_calibrate();
    return muldiv(rdtsc() - tsc_base, 1000000000ull, hz_tsc);
}

void sleep_until_tsc(uint64_t deadline) {
    time_calibrate();
    for (;;) {
        irq_disable();
        uint64_t now = rdtsc();
        if ((int64_t)(deadline - now) <= 0) break;
        uint64_t d = deadline - now;
        if (d > hz_tsc) d = hz_tsc; /* at most 1 s per timer shot */
        uint64_t ticks = d * hz_lapic / hz_tsc + 1;
        lapic_timer_oneshot(VEC_TIMER, ticks > 0xffffffffu ? 0xffffffffu : (uint32_t)ticks);
        irq_enable_and_halt(); /* the timer (or any interrupt) wakes us; re-check the TSC */
    }
    lapic_timer_stop();
    irq_enable();
}

void sleep_ms(uint64_t ms) {
    uint64_t hz = tsc_hz();
    sleep_until_tsc(rdtsc() + muldiv(ms, hz, 1000));
}
