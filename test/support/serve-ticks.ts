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
