/**
 * Clones of a parent on another host (a signed clone order to this host's agent): shells built
 * here from the parent's libxl configuration in its descriptor, then the parent's frozen memory
 * from its memory server. Eager: every frame fetched once and written into each shell
 * (page-fetch.ts, on a helper thread); the clones need nothing from the parent once they run. On
 * demand (a Xen with paging): each shell paged out and given a pager whose page source is that
 * server (TCP, or mcdist's multicast), which loads the frames a clone needs first and then serves
 * its faults; the agent's keeper holds the pagers as long as the clones live.
 */
import { SnowflockError } from "../../errors.ts";
import { scaledTimeout } from "../../timeouts.ts";
import { PageBitmap } from "../../wasm/page-bitmap.ts";
import type { RemoteCloneRequest, StartedDomain } from "../backend.ts";
import { writeReply } from "./family-keys.ts";
import { type ForkHelpers, workerError } from "./fork-helpers.ts";
import { xenFeatures } from "./features.ts";
import type { XenHost } from "./host.ts";
import type { Keeper } from "./keeper.ts";
import { PAGE_OUT_TIMEOUT_MS, pageOutShells, ramPagesOf } from "./ondemand.ts";
import type { XenPager } from "./pager.ts";
import { restoreState, type XenState } from "./persist.ts";
import { buildShells, type LibxlConfig, refuseWritableDisks, startHelpers } from "./shells.ts";

const FETCH_TIMEOUT_MS = scaledTimeout(30_000);
/** The frames a clone needs first come over the cluster's link before it runs. */
const SERVE_TIMEOUT_MS = scaledTimeout(120_000);

export async function startRemoteClones(host: XenHost, request: RemoteCloneRequest, keeper: Keeper | undefined): Promise<StartedDomain[]> {
  const state = request.snapshot.state as XenState;
  if (state.backend !== "xen") throw new SnowflockError("USAGE", `a ${state.backend} descriptor sent to a Xen host`);
  const config = JSON.parse(state.config) as LibxlConfig;
  refuseWritableDisks(request.parentName, config);
  const pages = ramPagesOf(request.parentName, config);
  const onDemand = request.memory === "ondemand";
  if (onDemand) {
    const paging = xenFeatures(host).paging;
    if (paging.available !== true)
      throw new SnowflockError("USAGE", `clones with memory on demand need Xen's memory paging here: ${paging.reason}`);
    if (!keeper) throw new SnowflockError("USAGE", "clones with memory on demand need this host's agent to keep their pagers");
  }
  const helpers = startHelpers(request.cloneIds.length, 1);
  const built: StartedDomain[] = [];
  let pagers: XenPager[] = [];
  const say = (line: string) => request.progress?.(`${request.parentName} from ${request.parentHost}: ${line}`);
  try {
    const shellsStarted = performance.now();
    await buildShells(
      host,
      helpers,
      {
        parent: request.parentDomain,
        parentName: request.parentName,
        parentHost: request.parentHost,
        config,
        workDirectory: request.workDirectory,
      },
      request.cloneIds,
      onDemand ? { memory: "ondemand" } : {},
      built,
    );
    say(`${built.length} shell(s) built in ${((performance.now() - shellsStarted) / 1000).toFixed(1)} s`);
    if (onDemand) ({ pagers } = await pageOutShells(built, pages, PAGE_OUT_TIMEOUT_MS, say));
    else await fetchEagerly(helpers, request, pages, built, say);
    for (const clone of built) restoreState(host, clone.domid, state);
    if (onDemand) {
      const loadStarted = performance.now();
      const plan = {
        server: request.server,
        nonZeroPages: request.snapshot.nonZeroPages,
        freePages: new Uint8Array(request.snapshot.nonZeroPages.byteLength),
        prefetch: true,
        eagerFrames: [...request.snapshot.pages.keys()],
        timeoutMs: FETCH_TIMEOUT_MS,
      };
      await Promise.all(pagers.map((pager) => pager.serve(plan, SERVE_TIMEOUT_MS)));
      say(`${plan.eagerFrames.length} frames loaded in ${((performance.now() - loadStarted) / 1000).toFixed(1)} s; the rest on demand`);
    }
    // A guest's sf clone: each clone, resuming inside that call, finds its answer waiting.
    if (request.replySeq !== undefined)
      for (const clone of built) writeReply(host.xenstore(), clone.domid, request.replySeq, `ok ${clone.cloneId}`);
    for (const clone of built) host.unpause(clone.domid);
    if (onDemand) keeper!.keep({ parent: request.parentName, pagers });
    return built;
  } catch (error) {
    for (const clone of built) {
      try {
        host.libxl().destroy(clone.domid);
      } catch {
        // already gone
      }
    }
    for (const pager of pagers) await pager.stop();
    throw error;
  } finally {
    await helpers.close();
  }
}

/** Every frame of the parent's memory into each shell, fetched once (a helper thread). */
async function fetchEagerly(
  helpers: ForkHelpers,
  request: RemoteCloneRequest,
  pages: number,
  built: StartedDomain[],
  say: (line: string) => void,
): Promise<void> {
  let dataPages: number;
  {
    using dataBitmap = PageBitmap.fromBytes(request.snapshot.nonZeroPages);
    dataPages = dataBitmap.popcount();
  }
  const fetchStarted = performance.now();
  const reply = await helpers.call(
    0,
    {
      kind: "fetch",
      server: request.server,
      pages,
      nonZeroPages: request.snapshot.nonZeroPages,
      dataPages,
      shells: built.map((clone) => clone.domid),
      timeoutMs: FETCH_TIMEOUT_MS,
    },
    say,
  );
  if (reply.error) throw workerError(reply.error);
  if (reply.kind === "fetch" && reply.result) {
    const { pagesFetched, pagesZero, pagesUnasked, waitedMs } = reply.result;
    say(
      `memory in ${((performance.now() - fetchStarted) / 1000).toFixed(1)} s: ${pagesFetched.toLocaleString("en-US")} pages fetched ` +
        `(${pagesUnasked.toLocaleString("en-US")} of them by other hosts' requests), ${pagesZero.toLocaleString("en-US")} zero; ` +
        `${(waitedMs / 1000).toFixed(1)} s of it waiting for the server`,
    );
  }
}
