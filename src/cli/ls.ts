/** `snowflock ls`: the VMs running on this host. */
import type { CAC } from "cac";
import { formatSize } from "../size.ts";
import { controlRequest } from "../vmm/control-client.ts";
import type { VmStatus } from "../vmm/protocol.ts";
import { familyOrder, treeName } from "../family-order.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { listVms, runDir } from "../run-dir.ts";
import { pagedClonesOfAgent } from "../cluster/agent-socket.ts";
import type { DomainListing, DomainOperations } from "../backend/backend.ts";
import { selectBackend } from "../backend/select.ts";
import { log, printJson, printTable } from "../output.ts";

function uptime(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${s % 60}s` : `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** Domains the hypervisor runs (Xen domUs), families as trees. */
async function listDomains(domains: DomainOperations, json: boolean): Promise<void> {
  const rows = await domains.list();
  // Clones with memory on demand: what their pagers (in the agent) counted so far.
  const agent = await pagedClonesOfAgent(runDir());
  const paged = new Map("clones" in agent ? agent.clones.map((c) => [c.domid, c]) : []);
  const pagerError = (row: DomainListing) => {
    if (paged.get(row.id)?.error) return paged.get(row.id)?.error;
    if (!row.onDemand || paged.has(row.id)) return undefined;
    const why = "noAgent" in agent ? agent.noAgent : "the agent serves no pager for it (it was restarted)";
    return `nothing serves its memory: ${why}; it cannot run on (snowflock kill it)`;
  };
  const errors = new Map(rows.map((row) => [row.id, pagerError(row)]));
  if (json)
    return printJson(
      rows.map(({ depth, id, onDemand, ...shown }) => ({ ...shown, domid: id, memory: paged.get(id)?.stats, pagerError: errors.get(id) })),
    );
  printTable(
    ["NAME", "DOMID", "STATE", "MEM", "VCPUS", "CLONE ID"],
    rows.map((d) => [
      treeName(d.name, d.depth),
      String(d.id),
      errors.get(d.id) ? `${d.state} (no pager)` : d.state,
      formatSize(d.memoryBytes),
      String(d.vcpus),
      String(d.cloneId),
    ]),
  );
  for (const d of rows) if (errors.get(d.id)) log.warn(`${d.name}: ${errors.get(d.id)}`);
}

export function registerLs(cli: CAC): void {
  cli
    .command("ls", "List the VMs running on this host, clones under their parent")
    .option("--json", "Print a JSON array")
    .action(async (options: { json?: boolean; backend?: string }) => {
      const backend = await selectBackend(options.backend, "ls");
      if (backend.domains) return listDomains(backend.domains, options.json === true);
      const statuses = await Promise.all(
        listVms().map(async (record): Promise<VmStatus> => {
          const answer = await controlRequest(record.name, "status").catch(() => undefined);
          if (answer?.ok && answer.status) return answer.status;
          return {
            ...record,
            state: "stopping",
            timings: { builtMs: 0, runningMs: null },
            uptimeMs: Date.now() - Date.parse(record.startedAt),
            consoleLines: 0,
            pagesTouched: 0,
          };
        }),
      );
      if (options.json) return printJson(statuses);
      // The HOST column only where some VM belongs to a cluster.
      const hosts = statuses.some((s) => s.host !== undefined);
      printTable(
        ["NAME", ...(hosts ? ["HOST"] : []), "STATE", "WORKLOAD", "MEM", "VCPUS", "TOUCHED", "UPTIME", "PID"],
        familyOrder(statuses, (s) => ({ key: s.name, parent: s.parent, cloneId: s.cloneId ?? 0 })).map((s) => [
          treeName(s.name, s.depth),
          ...(hosts ? [s.host ?? "-"] : []),
          s.state,
          s.workload,
          formatSize(s.memoryBytes),
          String(s.vcpus),
          formatSize(s.pagesTouched * PAGE_SIZE),
          uptime(s.uptimeMs),
          String(s.pid),
        ]),
      );
    });
}
