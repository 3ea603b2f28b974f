/**
 * The owner's side of a service thread (the memtap, the mcdist server): a Worker that blocks in
 * poll(2), so it is stopped by writing an eventfd it watches, not by a message. It reports
 * `ready` (with what the owner needs), `failed` (a message), and `stopped` when its loop is over;
 * a thread with more to say along the way (the Xen pager: progress, "serving") sends `note`s.
 */
import { type ErrorCode, SnowflockError } from "./errors.ts";
import { EFD_CLOEXEC, EFD_NONBLOCK } from "./sys/constants.ts";
import { close, eventfd, write } from "./sys/files.ts";

export type WorkerEvent<Ready> =
  | ({ type: "ready" } & Ready)
  | { type: "failed"; message: string }
  | { type: "stopped" }
  | { type: "note"; note: unknown };

export class WorkerLink<Ready extends object> {
  readonly worker: Worker;
  /** Written once to ask the thread to stop; the thread watches it in its poll(2). */
  readonly stopFd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  readonly ready: Promise<Ready>;
  /** Settles with the thread's failure, if it ever fails. */
  readonly failed: Promise<Error>;
  readonly stopped: Promise<void>;
  private hasStopped = false;
  private stopAsked = false;
  private finishing: Promise<void> | undefined;
  private readonly code: ErrorCode;

  /**
   * `thread`: the Worker's module URL, or a Worker started from it ahead of time (loaded, waiting
   * for its init message). `name`, for messages ("memtap", "the mcdist server"); `onNote` takes the
   * thread's notes; `code`, its failures' error code.
   */
  constructor(thread: string | Worker, name: string, onNote?: (note: unknown) => void, code: ErrorCode = "MEMORY") {
    this.code = code;
    this.worker = typeof thread === "string" ? new Worker(thread) : thread;
    const ready = Promise.withResolvers<Ready>();
    const failed = Promise.withResolvers<Error>();
    const stopped = Promise.withResolvers<void>();
    this.ready = ready.promise;
    this.failed = failed.promise;
    this.stopped = stopped.promise;
    // Nobody need wait for readiness to hear of a failure: that is what `failed` is for.
    this.ready.catch(() => {});
    const fail = (error: Error) => {
      ready.reject(error);
      failed.resolve(error);
    };
    this.worker.onmessage = (message: MessageEvent<WorkerEvent<Ready>>) => {
      const event = message.data;
      if (event.type === "ready") {
        const { type: _, ...value } = event;
        ready.resolve(value as unknown as Ready);
      } else if (event.type === "failed") fail(new SnowflockError(code, event.message));
      else if (event.type === "note") onNote?.(event.note);
      else {
        this.hasStopped = true;
        ready.reject(new SnowflockError(code, `${name} stopped before it was ready`));
        stopped.resolve();
      }
    };
    this.worker.onerror = (error) => fail(new SnowflockError("INTERNAL", `${name} thread failed: ${error.message}`));
  }

  /** What the thread reported when ready; a failure, an early stop, or `timeoutMs` without either is an error (`late` says why). */
  async whenReady(timeoutMs: number, late: string): Promise<Ready> {
    let timer: Timer | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SnowflockError(this.code, late)), timeoutMs);
    });
    try {
      return await Promise.race([this.ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Asks the thread to stop (once). */
  askStop(): void {
    if (this.stopAsked) return;
    this.stopAsked = true;
    write(this.stopFd, new Uint8Array(new BigUint64Array([1n]).buffer));
  }

  /** Asks the thread to stop, waits up to `timeoutMs` for it, then ends the Worker and closes the eventfd; `then` runs before the close. */
  finish(timeoutMs: number, then?: () => void): Promise<void> {
    return (this.finishing ??= (async () => {
      this.askStop();
      if (!this.hasStopped) await Promise.race([this.stopped, Bun.sleep(timeoutMs)]);
      this.worker.terminate();
      then?.();
      close(this.stopFd);
    })());
  }
}
