/* Local APIC (xAPIC MMIO) and legacy PIC masking. */
#pragma once
#include "types.h"

#define LAPIC_DEFAULT_BASE 0xfee00000ull

void pic_disable(void);
void lapic_init(void); /* per CPU: enable, mask LINT0, timer divide 16 */
uint32_t lapic_id(void);
void lapic_eoi(void);
void lapic_send_ipi(uint32_t apic_id, uint32_t icr_low);
void lapic_timer_oneshot(uint32_t vector, uint32_t ticks);
void lapic_timer_count_masked(uint32_t ticks); /* one-shot, masked: for calibration */
void lapic_timer_stop(void);
uint32_t lapic_timer_current(void);
uint64_t lapic_base(void);
