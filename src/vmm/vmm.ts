/**
 * A VMM process's life: boot the VM, publish it under its name (control socket, record, console
 * log), stream its console, answer control requests, and clean up when it ends.
 */
import { appendFileSync, closeSync, openSync, renameSync, writeFileSync } from "node:fs";
import { describeMachine } from "../clone/describe.ts";
import { decodeDescriptor, encodeDescriptor } from "../descriptor/format.ts";
import { summarize } from "../descriptor/summary.ts";
import { KvmMachine, type MachineEnd } from "../backend/kvm/machine.ts";
import { guestImage } from "../guest/image.ts";
import { checkMemory, type WorkloadRequest } from "../guest/workloads.ts";
import { getpid } from "../sys/process.ts";
import { serveControl } from "./control-server.ts";
import type { VmStatus } from "./protocol.ts";
import { claimName, ensureRunDir, removeVmFiles, vmPaths, writeRecord } from "./run-dir.ts";

export interface VmSpec {
  name: string;
  workload: WorkloadRequest;
  memoryBytes: number;
  vcpus: number;
}

export interface VmResult {
  name: string;
  workload: string;
  cmdline: string;
  end: MachineEnd;
  /** The exit status the snowflock process should have: the guest's, or 70 for a crash. */
  exitStatus: number;
  console: string[];
  pagesTouched: number;
  timings: {
    /** From process start to the VM being built (memory, KVM, image loaded). */
    vmReadyMs: number;
    /** From process start to every vCPU thread running. */
    startedMs: number;
    /** From process start to the guest's first console line. */
    firstConsoleLineMs: number | null;
    /** From process start to the VM's end. */
    endMs: number;
  };
}

export const CRASH_EXIT_STATUS = 70;

/** Pauses the VM only while its state is captured; encodes and writes after resuming. */
function writeDescriptor(machine: KvmMachine, spec: VmSpec, path: string) {
  const started = performance.now();
  machine.pause();
  let descriptor;
  try {
    descriptor = describeMachine(machine, { name: spec.name, cmdline: spec.workload.cmdline });
  } finally {
    machine.resume();
  }
  const pausedMs = performance.now() - started;
  const bytes = encodeDescriptor(descriptor);
  const temporary = `${path}.tmp-${getpid()}`;
  writeFileSync(temporary, bytes);
  renameSync(temporary, path);
  const { descriptor: decoded, envelope } = decodeDescriptor(bytes);
  return { ...summarize(decoded, envelope, bytes.byteLength), pausedMs };
}

export async function runVm(spec: VmSpec, onConsole: (line: string) => void): Promise<VmResult> {
  checkMemory(spec.workload, spec.memoryBytes);
  ensureRunDir();
  claimName(spec.name);
  const paths = vmPaths(spec.name);
  closeSync(openSync(paths.log, "w", 0o600));

  const lines: string[] = [];
  let firstConsoleLineMs: number | null = null;
  const machine = KvmMachine.boot(guestImage(), spec.memoryBytes, `${spec.workload.cmdline} smp=${spec.vcpus}`, {
    vcpus: spec.vcpus,
    onConsole(line) {
      firstConsoleLineMs ??= performance.now();
      lines.push(line);
      appendFileSync(paths.log, `${line}\n`);
      onConsole(line);
    },
  });
  const vmReadyMs = performance.now();
  const startedAt = Date.now();

  const status = (): VmStatus => ({
    name: spec.name,
    pid: getpid(),
    workload: spec.workload.cmdline,
    state: "running",
    memoryBytes: spec.memoryBytes,
    vcpus: spec.vcpus,
    uptimeMs: Date.now() - startedAt,
    consoleLines: lines.length,
    pagesTouched: machine.pagesTouched(),
  });
  const control = serveControl(paths.socket, (request) => {
    if (request.op === "kill") {
      setTimeout(() => void machine.stop(), 0);
      return { ok: true };
    }
    if (request.op === "descriptor") return { ok: true, descriptor: writeDescriptor(machine, spec, request.path) };
    return { ok: true, status: status() };
  });
  writeRecord({
    name: spec.name,
    pid: getpid(),
    workload: spec.workload.cmdline,
    memoryBytes: spec.memoryBytes,
    vcpus: spec.vcpus,
    startedAt: new Date(startedAt).toISOString(),
  });
  const stopOnSignal = () => void machine.stop();
  process.on("SIGINT", stopOnSignal);
  process.on("SIGTERM", stopOnSignal);

  try {
    await machine.start().catch(async (error) => {
      await machine.stop();
      throw error;
    });
    const startedMs = performance.now();
    const end = await machine.ended;
    return {
      name: spec.name,
      workload: spec.workload.name,
      cmdline: spec.workload.cmdline,
      end,
      exitStatus: end.kind === "exit" ? end.status : end.kind === "crash" ? CRASH_EXIT_STATUS : 0,
      console: lines,
      pagesTouched: machine.pagesTouched(),
      timings: { vmReadyMs, startedMs, firstConsoleLineMs, endMs: performance.now() },
    };
  } finally {
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
    control.close();
    removeVmFiles(spec.name, { keepLog: true });
  }
}
