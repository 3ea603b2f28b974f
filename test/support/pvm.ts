/**
 * PVM (kvm_pvm) gives a /dev/kvm that emulates a guest's ring 0 instruction by instruction: the
 * built-in guest (ring-3 workloads) runs well there, a stock Linux kernel boots past any test's
 * limit. Shared by the test runner and the Linux guests' tests (no bun:test here: the runner loads it).
 */
import { existsSync } from "node:fs";

export const kvmIsPvm = () => existsSync("/sys/module/kvm_pvm");

export const PVM_TOO_SLOW = "this /dev/kvm is PVM (kvm_pvm), too slow for the stock Linux guests' tests";
