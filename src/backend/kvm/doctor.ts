/** `snowflock doctor` on KVM: the device, its API version and capabilities, and userfaultfd for memory on demand. */
import { SnowflockError } from "../../errors.ts";
import { O_CLOEXEC, O_NONBLOCK } from "../../sys/constants.ts";
import { close } from "../../sys/files.ts";
import { uffdApi, userfaultfd } from "../../sys/uffd.ts";
import type { DoctorReport } from "../backend.ts";
import { KVM_API_VERSION } from "./abi.ts";
import { kvmDevice, kvmHost } from "./host.ts";

/** Memory-on-demand on KVM rests on userfaultfd: open one and do the API handshake, as memtap does. */
function userfaultfdAvailable(): { available: true } | { available: false; reason: string } {
  try {
    const fd = userfaultfd(O_CLOEXEC | O_NONBLOCK);
    try {
      uffdApi(fd, 0);
    } finally {
      close(fd);
    }
    return { available: true };
  } catch (error) {
    if (error instanceof SnowflockError) return { available: false, reason: error.render() };
    throw error;
  }
}

export async function kvmDoctor(): Promise<DoctorReport> {
  try {
    kvmHost(); // opens the device and checks the API version and every capability snowflock needs
  } catch (error) {
    if (error instanceof SnowflockError) return { backend: "kvm", available: false, reason: error.render(), error };
    throw error;
  }
  const userfaultfd = userfaultfdAvailable();
  return {
    backend: "kvm",
    available: true,
    memoryOnDemand: userfaultfd.available,
    facts: { device: kvmDevice(), apiVersion: KVM_API_VERSION, userfaultfd },
    lines: [
      ["backend", "kvm"],
      ["device", `${kvmDevice()} (opens, every capability snowflock needs)`],
      ["api version", String(KVM_API_VERSION)],
      ["userfaultfd", userfaultfd.available ? "yes" : `no: ${userfaultfd.reason}`],
      [
        "memory-on-demand",
        userfaultfd.available ? "yes (userfaultfd)" : "no: --memory ondemand and clones on other hosts need userfaultfd",
      ],
    ],
  };
}
