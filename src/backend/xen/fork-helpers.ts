/**
 * The helper threads of a Xen fork (fork-worker.ts): started per fork, one request at a time
 * each, answers as promises; a helper's failure comes back as the SnowflockError it threw.
 */
import { SnowflockError, type ErrorCode } from "../../errors.ts";
import type { ForkWorkerReply, ForkWorkerRequest, WorkerError } from "./fork-worker.ts";

/** See VCPU_WORKER_URL in backend/kvm/machine.ts: a compiled executable keeps the entry's path from the project root. */
const FORK_WORKER_URL = import.meta.url.includes("/$bunfs/")
  ? new URL("./src/backend/xen/fork-worker.ts", import.meta.url).href
  : new URL("./fork-worker.ts", import.meta.url).href;

export function workerError(error: WorkerError): SnowflockError {
  return new SnowflockError(error.code as ErrorCode, error.message, error.hint);
}

export class ForkHelpers {
  private constructor(private readonly workers: Worker[]) {}

  static start(count: number): ForkHelpers {
    return new ForkHelpers(Array.from({ length: count }, () => new Worker(FORK_WORKER_URL)));
  }

  get count(): number {
    return this.workers.length;
  }

  /** The helper's answer to `request`; lines it reports on the way go to `progress`. */
  call<K extends Exclude<ForkWorkerReply["kind"], "progress">>(
    index: number,
    request: Extract<ForkWorkerRequest, { kind: K }>,
    progress?: (line: string) => void,
  ): Promise<Extract<ForkWorkerReply, { kind: K }>> {
    const worker = this.workers[index]!;
    return new Promise((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<ForkWorkerReply>) => {
        if (event.data.kind === "progress") progress?.(event.data.line);
        else resolve(event.data as Extract<ForkWorkerReply, { kind: K }>);
      };
      worker.onerror = (event) => reject(new SnowflockError("INTERNAL", `a Xen fork helper thread failed: ${event.message}`));
      worker.postMessage(request);
    });
  }

  /** Lets each helper close its Xen handles, then ends the threads. */
  async close(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (worker) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 2000);
            worker.onmessage = () => {
              clearTimeout(timer);
              resolve();
            };
            worker.onerror = () => resolve();
            worker.postMessage({ kind: "close" } satisfies ForkWorkerRequest);
          }),
      ),
    );
    for (const worker of this.workers) worker.terminate();
  }
}
