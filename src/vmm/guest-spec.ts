/** What a VM boots: the built-in guest with one of its workloads, or the user's own kernel. */
import { type KernelGuest, kernelGuestLabel } from "../guest/kernel-guest.ts";
import type { WorkloadRequest } from "../guest/workloads.ts";
import type { DiskAttachment } from "../disk/image.ts";
import type { NetAttachment } from "../net/tap.ts";

export type GuestSpec =
  | { kind: "workload"; workload: WorkloadRequest }
  /** The user's kernel, the disk images it gets (absolute paths) and its network device, if any. */
  | { kind: "kernel"; guest: KernelGuest; disks: DiskAttachment[]; net?: NetAttachment };

/** The guest's name in `ls`, and the command line its descriptor records. */
export function guestLabel(spec: GuestSpec): { name: string; cmdline: string } {
  return spec.kind === "workload"
    ? { name: spec.workload.name, cmdline: spec.workload.cmdline }
    : { name: "linux", cmdline: kernelGuestLabel(spec.guest.files) };
}
