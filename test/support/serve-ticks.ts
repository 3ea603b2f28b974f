import { snowflock } from "./cli.ts";
import { pollUntil } from "./wait.ts";

/**
 * The `tick <k> id <id>` lines of a `serve` VM's console. A fork can land between the guest's
 * read of its clone ID and the line it prints with it, so a clone's first tick line may carry its
 * parent's ID: a clone's own ticks leave that line out.
 */
export function ticks(log: string): string[] {
  return log.split("\n").filter((l) => l.startsWith("tick"));
}

export function cloneTicks(log: string): string[] {
  return ticks(log).slice(1);
}

/**
 * VM `vm`'s own ticks once it has printed `count` of them, or what it printed by the deadline: a
 * clone started on a busy host (CI's nested hosts beside it) may take a while to tick.
 */
export function awaitCloneTicks(vm: string, env: Record<string, string>, count: number, timeoutMs: number): Promise<string[]> {
  return pollUntil(
    async () => cloneTicks((await snowflock(["logs", vm], env)).stdout),
    (own) => own.length >= count,
    timeoutMs,
  );
}
