/**
 * Getting a vCPU thread out of KVM_RUN from another thread: set kvm_run.immediate_exit (so a
 * vCPU about to enter returns at once) and send the thread a signal (so one already inside
 * returns with EINTR). The signal's handler must not be SIG_IGN/SIG_DFL or the kernel drops it
 * without interrupting anything, and Bun cannot run JavaScript in a signal handler; so the
 * handler is one `ret` instruction in a page of its own.
 */
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_EXEC, PROT_READ, PROT_WRITE, SA_RESTART } from "../../sys/constants.ts";
import { mmap, mprotect, view } from "../../sys/memory.ts";
import { getpid, sigaction, tgkill } from "../../sys/process.ts";
import { kvm_run } from "./abi.ts";

/** SIGRTMIN+6: Bun and glibc use 30, 31, 32 and 33; the real-time range above is free. */
export const KICK_SIGNAL = 40;

let installed = false;

export function installKickHandler(): void {
  if (installed) return;
  const page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  view(page, 1)[0] = 0xc3; // ret
  mprotect(page, 4096, PROT_READ | PROT_EXEC);
  // SA_RESTART: any other syscall the signal lands in restarts; KVM_RUN still returns EINTR.
  sigaction(KICK_SIGNAL, page, SA_RESTART);
  installed = true;
}

export function kickVcpu(runAddress: number, tid: number | undefined): void {
  view(runAddress + kvm_run.fields.immediate_exit.offset, 1)[0] = 1;
  if (tid !== undefined) tgkill(getpid(), tid, KICK_SIGNAL);
}
