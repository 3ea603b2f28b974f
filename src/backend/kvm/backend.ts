/** The KVM backend: snowflock's own VMM processes run the machines (/dev/kvm, one Worker per vCPU). */
import type { Backend } from "../backend.ts";
import { kvmDoctor } from "./doctor.ts";
import { kvmHost } from "./host.ts";
import { KvmMachine } from "./machine.ts";
import { prestartVm } from "./vm.ts";
import { blankKvmState } from "./persist.ts";

export const kvmBackend: Backend = {
  name: "kvm",
  commands: ["run", "ls", "logs", "kill", "fork", "pool", "descriptor", "inspect", "bench", "cluster", "agent", "doctor"],
  usage: "on KVM: snowflock run boots a VM; fork, ls, logs, kill work on it",
  check: () => void kvmHost(),
  doctor: kvmDoctor,
  machines: {
    boot: (image, memoryBytes, cmdline, options, initrd) => KvmMachine.boot(image, memoryBytes, cmdline, options, initrd),
    restore: (state, memory, options) => KvmMachine.restore(state, memory, options),
    prestart: async (vcpus) => {
      await KvmMachine.warmUp(vcpus);
      prestartVm(vcpus);
    },
    blankState: (memorySize, vcpus) => blankKvmState(memorySize, vcpus),
  },
};
