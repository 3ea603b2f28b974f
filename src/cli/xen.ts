/**
 * The Xen side of fork, ls, kill and agent (`--backend xen`, the default in a Xen dom0). Loaded
 * only when asked for, so a KVM host never touches Xen's libraries.
 */
import { SnowflockError } from "../errors.ts";
import { startXenAgent } from "../backend/xen/agent.ts";
import { clonesOf, destroyDomains, findMember, listMembers, type XenMember } from "../backend/xen/family.ts";
import { forkDomain, MAX_XEN_CLONES } from "../backend/xen/fork.ts";
import { openXen, type XenHost } from "../backend/xen/host.ts";
import { formatSize } from "../size.ts";
import { runDir } from "../vmm/run-dir.ts";
import { log, printJson, printTable } from "../output.ts";

async function withHost<R>(use: (host: XenHost) => R | Promise<R>): Promise<R> {
  const host = openXen();
  try {
    return await use(host);
  } finally {
    host.close();
  }
}

export function forkOnXen(domain: string, clones: number, options: { json?: boolean; memory?: string }): Promise<number> {
  if (options.memory !== undefined && options.memory !== "eager") {
    throw new SnowflockError("USAGE", `--memory ${options.memory} is not available on Xen here`, "this Xen has neither memory sharing nor paging: clones get eager copies of their parent's memory (--memory eager)");
  }
  if (clones > MAX_XEN_CLONES) throw new SnowflockError("USAGE", `bad --clones '${clones}'`, `give a whole number from 1 to ${MAX_XEN_CLONES}`);
  return withHost(async (host) => {
    const parent = findMember(listMembers(host), domain);
    if (!options.json) log.start(`forking ${parent.name} (domain ${parent.domain.domid}) into ${clones} clone${clones > 1 ? "s" : ""}`);
    const result = await forkDomain(host, { parent: parent.domain.domid, clones, workDirectory: runDir(), progress: options.json ? undefined : (m) => log.info(m) });
    if (options.json) printJson(result);
    else {
      printTable(["CLONE", "DOMID", "ID", "MAC"], result.clones.map((c) => [c.name, String(c.domid), String(c.cloneId), c.mac]));
      const t = result.timings;
      log.success(
        `${result.clones.length} clone(s) of ${result.parent.name} running in ${(t.totalMs / 1000).toFixed(2)} s (shells ${(t.shellsMs / 1000).toFixed(2)} s on ${result.threads} thread(s); parent down ${(t.parentDownMs / 1000).toFixed(2)} s, of which memory copy ${(t.copyMs / 1000).toFixed(2)} s); memory: eager, ${formatSize(result.bytesCopied)} copied, ${result.pagesZero} of ${result.pagesCopied} pages zero`,
      );
    }
    return 0;
  });
}

/** Parents first, each followed by its clones. */
function familyOrder(members: XenMember[]): Array<XenMember & { depth: number }> {
  const ordered: Array<XenMember & { depth: number }> = [];
  const visit = (m: XenMember, depth: number) => {
    ordered.push({ ...m, depth });
    for (const c of clonesOf(members, m.domain.domid).sort((a, b) => a.member!.cloneId - b.member!.cloneId)) visit(c, depth + 1);
  };
  const isClone = (m: XenMember) => m.member !== undefined && m.member.family !== m.domain.domid && members.some((p) => p.domain.domid === m.member!.family);
  for (const m of members.filter((x) => !isClone(x))) visit(m, 0);
  return ordered;
}

function state(m: XenMember): string {
  const d = m.domain;
  return d.shutdown ? "shutdown" : d.paused ? "paused" : d.running ? "running" : d.blocked ? "blocked" : "idle";
}

export function lsOnXen(options: { json?: boolean }): Promise<number> {
  return withHost((host) => {
    const rows = familyOrder(listMembers(host));
    if (options.json) {
      printJson(rows.map((m) => ({ name: m.name, domid: m.domain.domid, state: state(m), memoryBytes: m.domain.totPages * 4096, vcpus: m.domain.onlineVcpus, cloneId: m.member?.cloneId ?? 0, family: m.member?.family ?? m.domain.domid, mac: m.member?.mac })));
      return 0;
    }
    printTable(
      ["NAME", "DOMID", "STATE", "MEM", "VCPUS", "CLONE ID"],
      rows.map((m) => [m.depth === 0 ? m.name : `${"  ".repeat(m.depth - 1)}└─ ${m.name}`, String(m.domain.domid), state(m), formatSize(m.domain.totPages * 4096), String(m.domain.onlineVcpus), String(m.member?.cloneId ?? 0)]),
    );
    return 0;
  });
}

export function killOnXen(name: string, options: { clones?: boolean; json?: boolean }): Promise<number> {
  return withHost((host) => {
    const members = listMembers(host);
    const target = findMember(members, name);
    const clones = clonesOf(members, target.domain.domid);
    if (options.clones && clones.length === 0) throw new SnowflockError("NOT_FOUND", `domain ${target.name} has no running clones`);
    const victims = options.clones ? clones : [...clones, target];
    destroyDomains(host, victims.map((v) => v.domain.domid));
    if (options.json) printJson(victims.map((v) => ({ name: v.name, domid: v.domain.domid, result: "destroyed" })));
    else log.success(`destroyed ${victims.map((v) => v.name).join(", ")}`);
    return 0;
  });
}

export async function agentOnXen(): Promise<number> {
  const host = openXen();
  const agent = startXenAgent({ host, workDirectory: runDir(), log: (line) => log.info(line) });
  log.success("Xen agent running: domUs can use sf (guest/xen) now");
  await new Promise<void>((resolve) => {
    process.once("SIGTERM", resolve);
    process.once("SIGINT", resolve);
  });
  agent.stop();
  host.close();
  return 0;
}
