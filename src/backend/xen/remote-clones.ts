/**
 * Clones of a parent on another host (a signed clone order to this host's agent): shells built
 * here from the parent's libxl configuration in its descriptor, every frame of its frozen memory
 * fetched once from its memory server and written into each shell (page-fetch.ts, on a helper
 * thread), then the HVM context set and the clones unpaused. Eager: the clones need nothing
 * from the parent once they run.
 */
import { SnowflockError } from "../../errors.ts";
import { scaledTimeout } from "../../timeouts.ts";
import { PageBitmap } from "../../wasm/page-bitmap.ts";
import type { RemoteCloneRequest, StartedDomain } from "../backend.ts";
import { writeReply } from "./family-keys.ts";
import { workerError } from "./fork-helpers.ts";
import type { XenHost } from "./host.ts";
import { ramPagesOf } from "./ondemand.ts";
import { restoreState, type XenState } from "./persist.ts";
import { buildShells, type LibxlConfig, refuseWritableDisks, startHelpers } from "./shells.ts";

const FETCH_TIMEOUT_MS = scaledTimeout(30_000);

export async function startRemoteClones(host: XenHost, request: RemoteCloneRequest): Promise<StartedDomain[]> {
  const state = request.snapshot.state as XenState;
  if (state.backend !== "xen") throw new SnowflockError("USAGE", `a ${state.backend} descriptor sent to a Xen host`);
  const config = JSON.parse(state.config) as LibxlConfig;
  refuseWritableDisks(request.parentName, config);
  const pages = ramPagesOf(request.parentName, config);
  const helpers = startHelpers(request.cloneIds.length, 1);
  const built: StartedDomain[] = [];
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
      {},
      built,
    );
    say(`${built.length} shell(s) built in ${((performance.now() - shellsStarted) / 1000).toFixed(1)} s; fetching the memory`);
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
      const { pagesFetched, pagesZero, pagesUnasked } = reply.result;
      say(
        `memory in ${((performance.now() - fetchStarted) / 1000).toFixed(1)} s: ${pagesFetched.toLocaleString("en-US")} pages fetched ` +
          `(${pagesUnasked.toLocaleString("en-US")} of them by other hosts' requests), ${pagesZero.toLocaleString("en-US")} zero`,
      );
    }
    for (const clone of built) restoreState(host, clone.domid, state);
    // A guest's sf clone: each clone, resuming inside that call, finds its answer waiting.
    if (request.replySeq !== undefined)
      for (const clone of built) writeReply(host.xenstore(), clone.domid, request.replySeq, `ok ${clone.cloneId}`);
    for (const clone of built) host.unpause(clone.domid);
    return built;
  } catch (error) {
    for (const clone of built) {
      try {
        host.libxl().destroy(clone.domid);
      } catch {
        // already gone
      }
    }
    throw error;
  } finally {
    await helpers.close();
  }
}
