/**
 * The loop of a Worker that serves faults (memtap's userfaultfd on KVM, a Xen pager's event
 * channel): it waits on the fault source, its stop descriptor and the page source, and hands each
 * wake-up to the right party, until stop() (it throws Woken) or a failure (it throws that).
 */
import { POLLIN } from "../sys/constants.ts";
import { pollRetrying, Woken } from "../sys/poll-retrying.ts";
import { WorkerCollector } from "../worker-collector.ts";
import type { FaultService } from "./fault-service.ts";

export function serveFaults(
  fds: { faults: number; stop: number; source: number },
  service: FaultService,
  /** The fault source is readable (or reported other poll events): read and serve its faults. */
  onFaults: (events: number) => void,
): never {
  const watch = [
    { fd: fds.faults, events: POLLIN },
    { fd: fds.stop, events: POLLIN },
    { fd: fds.source, events: POLLIN },
  ];
  const collector = new WorkerCollector();
  try {
    for (;;) {
      const [faults = 0, stop = 0, server = 0] = pollRetrying(watch, -1);
      if (stop !== 0) throw new Woken("stop requested");
      collector.tick();
      if (server !== 0) service.sourceReadable();
      if (faults !== 0) onFaults(faults);
    }
  } finally {
    service.countBytes();
  }
}
