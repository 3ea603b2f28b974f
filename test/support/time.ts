/**
 * Time limits in tests, scaled for slow hosts: the nested KVM host (test/nested) runs VMs under
 * QEMU's software emulation, 10-50 times slower than KVM, and sets SNOWFLOCK_TEST_TIME_SCALE.
 */
const scale = Number(process.env.SNOWFLOCK_TEST_TIME_SCALE ?? 1);
export const TIME_SCALE = Number.isFinite(scale) && scale >= 1 ? scale : 1;

/** `ms` on a KVM host, TIME_SCALE times more where everything runs slower. */
export function within(ms: number): number {
  return ms * TIME_SCALE;
}
