/**
 * `__ready`: a VMM process started before any fork needs it. It loads the whole program, starts
 * a spare vCPU thread, then waits on its socket (pool-files.ts) for one launch record; the fork
 * that claims it sends the record as one line, and from then on the process is that clone's VMM,
 * exactly as if it had been started with the record (`__clone`). Its keeper reads "ready" and
 * "claimed" on its stdout; a keeper that goes away (EOF on stdin) ends every unclaimed process.
 */
import { chmodSync, writeSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { decodeLaunchRecord, type LaunchRecord, MAX_LAUNCH_RECORD_BYTES } from "../clone/launch-record.ts";
import { SnowflockError } from "../errors.ts";
import { printable } from "../output.ts";
import { runDir } from "../run-dir.ts";
import { O_RDWR } from "../sys/constants.ts";
import { close, dup2, open } from "../sys/files.ts";
import { markLaunched, type StartTimes } from "../vmm/launch-clock.ts";
import { CLAIMED_LINE, READY_LINE, RUNNING_PREFIX, readySocket, removeReadySockets } from "./pool-files.ts";

/** The guest memory size the warm-up descriptor claims (its bitmaps' size). */
const WARM_UP_MEMORY_BYTES = 256 << 20;

interface Claim {
  record: Uint8Array;
  /** The claiming fork's connection: a failure before the clone runs is written back on it. */
  connection: Socket;
}

/** The clone outlives the keeper: its stdin and stdout, the keeper's pipes, become /dev/null. */
function detachFromKeeper(): void {
  const nothing = open("/dev/null", O_RDWR);
  dup2(nothing, 0);
  dup2(nothing, 1);
  close(nothing);
}

/** Resolves with the first claim, or undefined once the keeper is gone. */
function awaitClaim(dir: string): Promise<Claim | undefined> {
  const path = readySocket(dir, process.pid);
  return new Promise((resolve) => {
    let claimed = false;
    const leave = () => {
      removeReadySockets(dir, process.pid);
      server.close();
      process.stdin.removeAllListeners();
      process.stdin.pause();
    };
    const server = createServer((connection) => {
      if (claimed) return void connection.destroy();
      claimed = true;
      leave();
      writeSync(1, `${CLAIMED_LINE}\n`);
      detachFromKeeper();
      const chunks: Buffer[] = [];
      let length = 0;
      connection.on("error", () => {});
      connection.on("data", (chunk: Buffer) => {
        const end = chunk.indexOf(10);
        chunks.push(end < 0 ? chunk : chunk.subarray(0, end));
        length += chunk.length;
        if (end >= 0 || length > MAX_LAUNCH_RECORD_BYTES) {
          connection.removeAllListeners("data");
          connection.removeAllListeners("end");
          resolve({ record: new Uint8Array(Buffer.concat(chunks)), connection });
        }
      });
      // A claimer gone before its line was complete: the empty or cut record is refused by its check.
      connection.on("end", () => resolve({ record: new Uint8Array(Buffer.concat(chunks)), connection }));
    });
    server.listen(path, () => {
      chmodSync(path, 0o600);
      writeSync(1, `${READY_LINE}\n`);
    });
    process.stdin.on("data", () => {});
    process.stdin.on("end", () => {
      if (claimed) return;
      leave();
      resolve(undefined);
    });
    process.stdin.resume();
  });
}

/** How long after its clone runs a ready process keeps the memtap Worker it started ahead and did not need. */
const SPARE_WORKER_KEPT_MS = 2000;

/** The ready process's life: prepare, wait, then serve the clone it is given; its exit status. */
export async function runReadyProcess(): Promise<number> {
  const dir = runDir();
  const [
    { serveLaunch },
    { machineFactory },
    { prepareWasmKernels },
    { warmUpDescriptorCode },
    { prestartMemtapWorker, dropSpareMemtapWorker },
  ] = await Promise.all([
    import("../vmm/clone-process.ts"),
    import("../backend/select.ts"),
    import("../wasm/prepare.ts"),
    import("../descriptor/warm-up.ts"),
    import("../memory/memtap.ts"),
    import("../vmm/vmm.ts"),
  ]);
  const vcpus = Number(process.env.SNOWFLOCK_POOL_VCPUS ?? "1") || 1;
  prepareWasmKernels();
  // Pools are a KVM thing: Xen keeps clone shells of its own (backend/xen/ready-shells.ts).
  const machines = await machineFactory("kvm");
  warmUpDescriptorCode(machines.blankState(WARM_UP_MEMORY_BYTES, vcpus), WARM_UP_MEMORY_BYTES);
  try {
    machines.prestart(vcpus);
  } catch {
    // No usable /dev/kvm: the clone handed to this process reports it, as one started for it would.
  }
  prestartMemtapWorker();
  // Collect what loading and warming up left behind now, not while a clone is starting.
  Bun.gc(true);
  const claim = await awaitClaim(dir);
  if (!claim) return 0;
  markLaunched();
  let record: LaunchRecord;
  try {
    record = decodeLaunchRecord(claim.record);
    // A clone without memory on demand ends the memtap Worker, but not while its siblings start:
    // Workers ended during a burst of 32 clones made the burst a quarter slower.
    const dropSpare = () => setTimeout(dropSpareMemtapWorker, SPARE_WORKER_KEPT_MS).unref();
    // The fork that claimed this process hears that the clone runs on the claim's connection.
    const reportRunning = (times: StartTimes) => claim.connection.end(`${RUNNING_PREFIX}${JSON.stringify(times)}\n`);
    return await serveLaunch(record, { afterRunning: record.memory.kind === "ondemand" ? undefined : dropSpare, reportRunning });
  } catch (error) {
    const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
    claim.connection.end(`${printable(message)}\n`);
    throw error;
  }
}
