/**
 * The VM generation ID (Microsoft's VMGenID, which Linux's vmgenid driver reads): 16 random bytes
 * at the address the DSDT names. A clone gets new ones, and the Generic Event Device's interrupt
 * makes its kernel read them and reseed its random generator before its programs draw on it.
 */
import type { GuestMemory } from "../../../guest-memory/guest-memory.ts";
import { ACPI_AREA, GED_GSI, OEM_ID, VMGENID_ADDRESS, VMGENID_BYTES } from "./tables.ts";

export function writeVmGenerationId(memory: GuestMemory): Uint8Array {
  const id = crypto.getRandomValues(new Uint8Array(VMGENID_BYTES));
  memory.bytes.set(id, VMGENID_ADDRESS);
  return id;
}

/** Whether `memory` holds snowflock's ACPI tables, and so a VMGenID its kernel watches (a Linux guest). */
export function hasVmGenerationId(memory: GuestMemory): boolean {
  const rsdp = memory.bytes.subarray(ACPI_AREA.start, ACPI_AREA.start + 16);
  return new TextDecoder().decode(rsdp.subarray(0, 8)) === "RSD PTR " && new TextDecoder().decode(rsdp.subarray(9, 15)) === OEM_ID;
}

/**
 * A restored machine is a new generation: new ID, then an edge on the Generic Event Device's
 * interrupt (its _EVT notifies the VMGenID device). Call after the vCPUs' LAPICs are restored,
 * or their restore would drop the interrupt.
 */
export function renewVmGenerationId(memory: GuestMemory, setIrqLine: (gsi: number, level: boolean) => void): void {
  if (!hasVmGenerationId(memory)) return;
  writeVmGenerationId(memory);
  setIrqLine(GED_GSI, true);
  setIrqLine(GED_GSI, false);
}
