/**
 * What the two ways of describing the machine to a kernel share — the MP table (mptable.ts) and
 * the ACPI tables (acpi/tables.ts): where the APICs are, and the checksum that makes a table's
 * bytes sum to zero.
 */
export const LAPIC_ADDRESS = 0xfee00000;
export const IOAPIC_ADDRESS = 0xfec00000;

/** The byte that makes `bytes` (with it stored as 0) sum to zero modulo 256. */
export function tableChecksum(bytes: Uint8Array): number {
  return (256 - (bytes.reduce((sum, b) => sum + b, 0) & 0xff)) & 0xff;
}
