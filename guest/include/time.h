/* TSC calibrated lazily against PIT channel 2; sleeping via LAPIC timer + hlt. */
#pragma once
#include "types.h"

void time_calibrate(void);     /* no-op after the first call */
uint64_t tsc_hz(void);         /* calibrates on first use */
uint64_t time_now_ns(void);    /* since calibration */
void sleep_ms(uint64_t ms);
void sleep_until_tsc(uint64_t deadline);
void pit_delay_us(uint32_t us); /* busy-wait on PIT channel 2, no calibration needed */
