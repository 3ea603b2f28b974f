/**
 * `__ready`: a VMM process started before any fork needs it. It loads the whole program, starts
 * a spare vCPU thread, then waits on its socket (pool-files.ts) for one launch record; the fork
 * that claims it sends the record as one line, and from then on the process is that clone's VMM,
 * exactly as if it had been started with the record (`__clone`). Its keeper reads "ready" and
 * "claimed" on its stdout; a keeper that goes away (EOF on stdin) ends every unclaimed process.
 */
import { chmodSync, writeSync } from "node:fs";
import { decodeLaunchRecord, type LaunchRecord, MAX_LAUNCH_RECORD_BYTES } from "../clone/launch-record.ts";
import { SnowflockError } from "../errors.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { log, printable } from "../output.ts";
import { runDir } from "../run-dir.ts";
import { O_RDWR } from "../sys/constants.ts";
import { holdStartJit, releaseStartJit } from "../jit-policy.ts";
import { close, dup2, open } from "../sys/files.ts";
import { markLaunched, runningLine, type StartTimes } from "../vmm/launch-clock.ts";
import { CLAIMED_LINE, READY_LINE, readySocket, removeReadySockets } from "./pool-files.ts";

/** The guest memory size the warm-up descriptor claims (its bitmaps' size). */
const WARM_UP_MEMORY_BYTES = 256 << 20;

interface Claim {
  record: Uint8Array;
  /** Writes one line back to the claiming fork and closes the claim's connection: that the clone runs, or why it failed. */
  answer(line: string): void;
  /**
   * Removes the ready socket, stops listening and lets go of the keeper's pipes: nothing the
   * clone's start waits for, so not done while it and its siblings start (once; also at exit).
   */
  tidy(): void;
}

/** The clone outlives the keeper: its stdin and stdout, the keeper's pipes, become /dev/null. */
function detachFromKeeper(): void {
  const nothing = open("/dev/null", O_RDWR);
  dup2(nothing, 0);
  dup2(nothing, 1);
  close(nothing);
}

/**
 * Resolves with the first claim, or undefined once the keeper is gone. Bun's own sockets, not
 * node:net: a node Socket for the one connection a clone accepts cost ~1 ms of its start.
 */
function awaitClaim(dir: string): Promise<Claim | undefined> {
  const path = readySocket(dir, process.pid);
  return new Promise((resolve) => {
    let listener: ReturnType<typeof Bun.listen> | undefined;
    const leave = () => {
      removeReadySockets(dir, process.pid);
      listener?.stop();
      process.stdin.removeAllListeners();
      process.stdin.pause();
    };
    const chunks: Uint8Array[] = [];
    let length = 0;
    let received = false;
    // The first connection claims the process; only its events count, a later one is closed at once.
    let claimer: Bun.Socket<undefined> | undefined;
    let tidied = false;
    const tidy = () => {
      if (tidied) return;
      tidied = true;
      leave();
      detachFromKeeper();
    };
    const receive = (connection: Bun.Socket<undefined>) => {
      if (received || connection !== claimer) return;
      received = true;
      resolve({ record: new Uint8Array(Buffer.concat(chunks)), answer: (line) => void connection.end(`${line}\n`), tidy });
    };
    listener = Bun.listen<undefined>({
      unix: path,
      socket: {
        open(connection) {
          if (claimer) return void connection.terminate();
          claimer = connection;
          // The keeper counts the claim at once: it must never take this process for an idle one.
          writeSync(1, `${CLAIMED_LINE}\n`);
          process.once("exit", tidy);
        },
        data(connection, chunk) {
          if (received || connection !== claimer) return;
          const end = chunk.indexOf(10);
          chunks.push(end < 0 ? chunk : chunk.subarray(0, end));
          length += chunk.length;
          if (end >= 0 || length > MAX_LAUNCH_RECORD_BYTES) receive(connection);
        },
        // A claimer gone before its line was complete: the empty or cut record is refused by its check.
        end: receive,
        close: receive,
        error() {},
      },
    });
    chmodSync(path, 0o600);
    writeSync(1, `${READY_LINE}\n`);
    process.stdin.on("data", () => {});
    process.stdin.on("end", () => {
      if (claimer) return;
      leave();
      resolve(undefined);
    });
    process.stdin.resume();
  });
}

/**
 * How long after its clone runs a ready process waits with what that start did not need (ending
 * the memtap Worker it started ahead, tidying its claim): not while the clone's siblings start.
 * Workers ended during a burst of 32 clones made the burst a quarter slower.
 */
const AFTER_SIBLINGS_START_MS = 2000;

/** The ready process's life: prepare, wait, then serve the clone it is given; its exit status. */
export async function runReadyProcess(): Promise<number> {
  const dir = runDir();
  const [
    { serveLaunch },
    { machineFactory },
    { prepareWasmKernels },
    { warmUpDescriptorCode },
    { prestartMemtapWorker, dropSpareMemtapWorker, dropPreparedPacketRing },
    { prepareMcdistClient },
    { planFetches },
  ] = await Promise.all([
    import("../vmm/clone-process.ts"),
    import("../backend/select.ts"),
    import("../wasm/prepare.ts"),
    import("../descriptor/warm-up.ts"),
    import("../memory/memtap.ts"),
    import("../mcdist/client.ts"),
    import("../heuristics/heuristics.ts"),
    import("../vmm/vmm.ts"),
  ]);
  const vcpus = Number(process.env.SNOWFLOCK_POOL_VCPUS ?? "1") || 1;
  prepareWasmKernels();
  // Pools are a KVM thing: Xen keeps clone shells of its own (backend/xen/ready-shells.ts).
  const machines = await machineFactory("kvm");
  warmUpDescriptorCode(machines.blankState(WARM_UP_MEMORY_BYTES, vcpus), WARM_UP_MEMORY_BYTES);
  // A clone with memory on demand first plans its fetches, WASM over its bitmaps: compiled now too.
  const bitmap = new Uint8Array(WARM_UP_MEMORY_BYTES / PAGE_SIZE / 8).fill(0x11);
  for (let round = 0; round < 3; round++) planFetches(bitmap, bitmap, []);
  try {
    await machines.prestart(vcpus);
  } catch (error) {
    // No usable /dev/kvm: the clone handed to this process reports it, as one started for it would.
    if (error instanceof SnowflockError && error.code === "INTERNAL") log.warn(`not warmed up: ${error.message}`);
  }
  // In a cluster (an agent's pool) what a clone over mcdist needs is made ahead too: the
  // descriptor's client here, the pages' in the memtap Worker, and its packet socket and ring.
  const clusterInterface = process.env.SNOWFLOCK_POOL_PACKET_INTERFACE || undefined;
  try {
    prestartMemtapWorker(clusterInterface);
    if (clusterInterface) prepareMcdistClient("descriptor");
  } catch (error) {
    // Its clone then makes them itself, as one started for it would.
    log.warn(`mcdist not prepared ahead on ${clusterInterface}: ${(error as Error).message}`);
  }
  // Collect what loading and warming up left behind now, not while a clone is starting.
  Bun.gc(true);
  holdStartJit();
  const claim = await awaitClaim(dir);
  if (!claim) return 0;
  markLaunched();
  let record: LaunchRecord;
  try {
    record = decodeLaunchRecord(claim.record);
    const afterRunning = () => {
      dropPreparedPacketRing(); // a clone with memory on demand handed it to its memtap already
      const memory = record.memory.kind;
      setTimeout(() => {
        releaseStartJit();
        claim.tidy();
        if (memory !== "ondemand") dropSpareMemtapWorker();
      }, AFTER_SIBLINGS_START_MS).unref();
    };
    // The fork that claimed this process hears that the clone runs on the claim's connection.
    const reportRunning = (times: StartTimes) => claim.answer(runningLine(times));
    return await serveLaunch(record, { afterRunning, reportRunning });
  } catch (error) {
    const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
    claim.answer(printable(message));
    claim.tidy();
    throw error;
  }
}
