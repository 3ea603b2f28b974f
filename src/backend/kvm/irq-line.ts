/** An interrupt line of the in-kernel PIC/IOAPIC, driven with KVM_IRQ_LINE on the VM's fd (any thread may). */
import { ioctl } from "../../sys/ioctl.ts";
import { StructView } from "../../sys/layout.ts";
import * as abi from "./abi.ts";

export function setIrqLine(vmFd: number, gsi: number, level: boolean): void {
  const line = new StructView(abi.kvm_irq_level).set("irq", gsi).set("level", level ? 1 : 0);
  ioctl(vmFd, abi.KVM_IRQ_LINE, line.bytes, "KVM_IRQ_LINE");
}
