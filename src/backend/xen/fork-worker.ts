/**
 * One helper thread of a Xen fork: it builds its share of the clones' domain shells, and later
 * copies the suspended parent's memory into them (eager) or its part of the parent's frozen image
 * (on demand), or fills shells from a parent's memory server on another host, with its own libxenctrl, libxl and foreign memory handles — so the shells and the
 * copies proceed on several CPUs.
 */
import { SnowflockError } from "../../errors.ts";
import { openXen, type XenHost } from "./host.ts";
import { captureImagePart, type ImagePart } from "./memory-image.ts";
import { copyPages, type PageCopyResult } from "./page-copy.ts";
import { fetchIntoShells, type PageFetchResult, UnaskedPages } from "./page-fetch.ts";
import { openPageSource, type PageSource } from "../../memory/page-source.ts";

export type ForkWorkerRequest =
  | { kind: "shells"; shells: Array<{ name: string; json: string }> }
  | { kind: "copy"; parent: number; clones: number[]; maximumGpfn: number }
  | { kind: "capture"; parent: number; image: { pages: number; address: number }; first: number; count: number }
  | { kind: "fetch"; server: string; pages: number; nonZeroPages: Uint8Array; dataPages: number; shells: number[]; timeoutMs: number }
  | { kind: "close" };

export type ForkWorkerReply =
  | { kind: "shells"; domids: number[]; error?: WorkerError }
  | { kind: "copy"; result?: PageCopyResult; error?: WorkerError }
  | { kind: "capture"; part?: ImagePart; error?: WorkerError }
  | { kind: "fetch"; result?: PageFetchResult; error?: WorkerError }
  | { kind: "progress"; line: string };

export interface WorkerError {
  code: string;
  message: string;
  hint?: string;
}

declare const self: Worker;

let host: XenHost | undefined;
const xen = () => (host ??= openXen());

function describe(error: unknown): WorkerError {
  return error instanceof SnowflockError
    ? { code: error.code, message: error.message, hint: error.hint }
    : { code: "INTERNAL", message: (error as Error).message };
}

const PROGRESS_EVERY_MS = 10_000;

/** Every PROGRESS_EVERY_MS of a fetch, a line: how far, how fast, what went wrong on the way. */
function fetchProgress(source: PageSource, total: number): (pagesDone: number, waitedMs: number) => void {
  const started = performance.now();
  let last = started;
  return (pagesDone, waitedMs) => {
    const now = performance.now();
    if (now - last < PROGRESS_EVERY_MS) return;
    last = now;
    const perSecond = (pagesDone * 4096) / 2 ** 20 / ((now - started) / 1000);
    const retries = source.retries?.() ?? 0;
    const rejected = source.framesRejected?.() ?? 0;
    self.postMessage({
      kind: "progress",
      line:
        `fetched ${pagesDone.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} pages (${perSecond.toFixed(1)} MiB/s, ` +
        `${Math.round((100 * waitedMs) / (now - started))}% of the time waiting for the server)` +
        (retries > 0 ? `, ${retries} retries` : "") +
        (rejected > 0 ? `, ${rejected} frames rejected` : ""),
    } satisfies ForkWorkerReply);
  };
}

self.onmessage = (event: MessageEvent<ForkWorkerRequest>) => {
  const request = event.data;
  if (request.kind === "close") {
    host?.close();
    host = undefined;
    self.postMessage({ kind: "closed" });
    return;
  }
  if (request.kind === "shells") {
    const domids: number[] = [];
    try {
      for (const shell of request.shells) domids.push(xen().libxl().createPaused(shell.json, `clone ${shell.name}`));
      self.postMessage({ kind: "shells", domids } satisfies ForkWorkerReply);
    } catch (error) {
      self.postMessage({ kind: "shells", domids, error: describe(error) } satisfies ForkWorkerReply);
    }
    return;
  }
  const memory = xen().foreignMemory();
  try {
    if (request.kind === "fetch") {
      const unasked = new UnaskedPages();
      const source = openPageSource({
        server: request.server,
        pageCount: request.pages,
        timeoutMs: request.timeoutMs,
        wakeFd: -1,
        onExtraPage: unasked.keep,
      });
      try {
        const progress = fetchProgress(source, request.dataPages);
        const result = fetchIntoShells(memory, source, request.shells, request.pages, request.nonZeroPages, unasked, progress);
        self.postMessage({ kind: "fetch", result } satisfies ForkWorkerReply);
      } finally {
        source.close();
      }
      return;
    }
    if (request.kind === "capture") {
      // The image file's mapping is the process's: threads share its address space.
      const part = captureImagePart(memory, request.parent, request.image, request.first, request.count);
      self.postMessage({ kind: "capture", part } satisfies ForkWorkerReply);
      return;
    }
    self.postMessage({
      kind: "copy",
      result: copyPages(memory, request.parent, request.clones, request.maximumGpfn),
    } satisfies ForkWorkerReply);
  } catch (error) {
    self.postMessage({ kind: request.kind, error: describe(error) } satisfies ForkWorkerReply);
  } finally {
    memory.close();
  }
};
