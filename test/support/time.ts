/**
 * Time limits and work sizes in tests, scaled for slow hosts: the nested KVM host (test/nested)
 * runs VMs under QEMU's software emulation, 10-50 times slower than KVM, and sets
 * SNOWFLOCK_TEST_TIME_SCALE.
 */
const scale = Number(process.env.SNOWFLOCK_TEST_TIME_SCALE ?? 1);
export const TIME_SCALE = Number.isFinite(scale) && scale >= 1 ? scale : 1;
/** VMs run under software emulation here: tests shrink their data so the work fits, not only the wait. */
export const EMULATED = TIME_SCALE > 1;

/** `ms` on a KVM host, TIME_SCALE times more where everything runs slower. */
export function within(ms: number): number {
  return ms * TIME_SCALE;
}

/** A work size (bytes, cycles, clones): `native` on a KVM host, `emulated` under emulation. */
export function lean(native: number, emulated: number): number {
  return EMULATED ? emulated : native;
}
