/**
 * A clone order that may take long (a Xen host copying a parent's whole memory over the cluster's
 * link) is waited for as long as it moves, not for a time that assumes the link's speed: while the
 * order runs, the host's agent is asked every few seconds (hello) how long the order has been
 * quiet. The wait ends with an error when the agent stops answering, no longer knows the order, or
 * has reported nothing of it for longer than `quietMs`; otherwise it ends with the order's answer.
 */
import { SnowflockError } from "../errors.ts";
import type { InventoryHost } from "./inventory.ts";
import type { AgentHello } from "./agent.ts";
import type { CloneOrder, CloneOrderResult } from "./clone-order.ts";
import type { ClusterContext } from "./cluster-context.ts";

export interface OrderWatch {
  /** How often the agent is asked. */
  pollMs: number;
  /** How long the order may go without a progress line (building shells, a stalled fetch). */
  quietMs: number;
  /** Longest wait for the answer however the order moves. */
  capMs: number;
}

const sameIds = (a: number[], b: number[]) => a.length === b.length && a.every((id, i) => id === b[i]);

/** Sends `order` to `host`'s agent and waits for its answer while the agent reports the order moving; see the file comment. */
export async function sendWatchedOrder(
  cluster: ClusterContext,
  host: InventoryHost,
  order: CloneOrder,
  watch: OrderWatch,
): Promise<CloneOrderResult> {
  const giveUp = new AbortController();
  const what = `clone(s) ${order.cloneIds.join(", ")} of ${order.parent}`;
  const call = cluster.agentCall(host, "clone", order, watch.capMs, giveUp.signal) as Promise<CloneOrderResult>;
  let answered = false;
  const done = Promise.withResolvers<void>();
  const never = new Promise<never>(() => {});
  const watcher = async (): Promise<never> => {
    let unlisted = 0;
    for (;;) {
      // No timer outlives the answer (a CLI's fork would otherwise wait for it to end).
      let timer: Timer | undefined;
      await Promise.race([new Promise((wake) => (timer = setTimeout(wake, watch.pollMs))), done.promise]);
      clearTimeout(timer);
      if (answered) return never;
      let hello: AgentHello;
      try {
        hello = (await cluster.agentCall(host, "hello", null, watch.pollMs, giveUp.signal)) as AgentHello;
      } catch (error) {
        if (answered) return never;
        throw new SnowflockError("CONTROL", `${host.name}'s agent stopped answering while it started ${what}: ${(error as Error).message}`);
      }
      if (answered) return never;
      const mine = hello.orders.find(
        (o) => o.parent === order.parent && o.parentHost === order.parentHost && sameIds(o.cloneIds, order.cloneIds),
      );
      // Not listed: the answer may be on its way; twice in a row, the agent has lost the order (restarted).
      if (!mine) {
        if (++unlisted >= 2)
          throw new SnowflockError("CONTROL", `${host.name}'s agent no longer carries out the order for ${what} and never answered it`);
        continue;
      }
      unlisted = 0;
      if (mine.quietMs > watch.quietMs)
        throw new SnowflockError(
          "CONTROL",
          `${host.name}'s agent has reported nothing of ${what} for ${Math.round(mine.quietMs / 1000)} s` +
            (mine.progress ? ` (last: ${mine.progress})` : ""),
          "its agent's log says where it stands; a slow link needs SNOWFLOCK_TIMEOUT_SCALE",
        );
    }
  };
  try {
    return await Promise.race([call, watcher()]);
  } finally {
    answered = true;
    done.resolve();
    giveUp.abort(new SnowflockError("CONTROL", `gave up the order for ${what} on ${host.name}`));
    call.catch(() => undefined);
  }
}
