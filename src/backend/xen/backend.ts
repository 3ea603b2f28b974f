/**
 * The Xen backend (a dom0): Xen runs the domUs, snowflock attaches to them by name to fork, list
 * and end them, and serves the guests' own requests (sf) through XenStore. `doctor`: doctor.ts.
 */
import type { Backend, DomainListing, DomainOperations } from "../backend.ts";
import { watchRequests } from "./agent.ts";
import { snapshotDomain } from "./describe.ts";
import { startRemoteClones } from "./remote-clones.ts";
import { xenDoctor } from "./doctor.ts";
import { clonesOf, destroyDomains, familyMember, findMember, listMembers, type XenMember } from "./family.ts";
import { MAX_XEN_CLONES, xenRound } from "./fork.ts";
import { nextCloneId } from "./shells.ts";
import { readMember } from "./family-keys.ts";
import { openXen, type XenHost } from "./host.ts";
import { Keeper } from "./keeper.ts";
import { fillPool, readyRun, ShellPagers } from "./ready-shells.ts";
import { xenFeatures } from "./features.ts";
import { SnowflockError } from "../../errors.ts";
import { familyOrder } from "../../family-order.ts";
import { XC_PAGE_SIZE } from "./abi.ts";

async function withHost<R>(use: (host: XenHost) => R | Promise<R>): Promise<R> {
  const host = openXen();
  try {
    return await use(host);
  } finally {
    host.close();
  }
}

function state(m: XenMember): string {
  const d = m.domain;
  return d.shutdown ? "shutdown" : d.paused ? "paused" : d.running ? "running" : d.blocked ? "blocked" : "idle";
}

function listing(m: XenMember): Omit<DomainListing, "depth"> {
  return {
    name: m.name,
    id: m.domain.domid,
    state: m.member?.readyShell ? "ready shell" : state(m),
    memoryBytes: m.domain.totPages * XC_PAGE_SIZE,
    vcpus: m.domain.onlineVcpus,
    cloneId: m.member?.cloneId ?? 0,
    family: m.member?.family ?? m.domain.domid,
    parentHost: m.member?.parentHost,
    mac: m.member?.mac,
    onDemand: (m.member?.memory === "ondemand" && !m.member.readyShell) || undefined,
    readyShell: m.member?.readyShell,
  };
}

/**
 * Clones with memory on demand whose pager ended with an earlier agent (killed): their memory is
 * gone with it, so they cannot run on. A new agent ends them, one line each, rather than leave
 * them paused for ever.
 */
function endOrphans(host: XenHost, log: (line: string) => void): void {
  const orphans = listMembers(host).filter((m) => m.member?.memory === "ondemand" && m.member.cloneId > 0);
  for (const orphan of orphans) {
    log(`domain ${orphan.domain.domid} (${orphan.name}): its memory's pager ended with an earlier agent; ending it`);
    destroyDomains(host, [orphan.domain.domid]);
  }
}

/** The host the agent holds while it serves the guests' requests; other calls open one of their own. */
let agentHost: XenHost | undefined;
/** The agent's keeper of clones with memory on demand (their pagers and memory servers). */
let keeper: Keeper | undefined;
/** The agent's pagers of on-demand shells kept ready (ready-shells.ts). */
let shellPagers: ShellPagers | undefined;

function useAgentHost<R>(use: (host: XenHost) => R): R {
  if (agentHost) return use(agentHost);
  const host = openXen();
  try {
    return use(host);
  } finally {
    host.close();
  }
}

const domains: DomainOperations = {
  maxClones: MAX_XEN_CLONES,
  checkMemory(memory) {
    if (memory === undefined || memory === "eager") return;
    if (memory !== "ondemand")
      throw new SnowflockError("USAGE", `bad --memory '${memory}'`, "on Xen: eager (a copy up front) or ondemand (where Xen pages)");
    const paging = useAgentHost((host) => xenFeatures(host).paging);
    if (paging.available !== true) throw new SnowflockError("USAGE", `--memory ondemand needs Xen's memory paging: ${paging.reason}`);
  },
  round(parentName, clones, options) {
    // The agent's host serves a guest's own request; the operator's fork opens one for the round.
    const host = agentHost ?? openXen();
    const onRelease = host === agentHost ? undefined : () => host.close();
    try {
      const parent = typeof parentName === "number" ? parentName : findMember(listMembers(host), parentName).domain.domid;
      if (typeof parentName === "string")
        options.progress?.(`forking ${parentName} (domain ${parent}) into ${clones} clone${clones > 1 ? "s" : ""}`);
      return xenRound(host, { ...options, memory: options.memory ?? "eager", keeper, shellPagers, parent, clones, onRelease });
    } catch (error) {
      onRelease?.();
      throw error;
    }
  },
  // A clone's parent is its family (clone ID > 0); a domain no fork touched is its own family; a clone of a parent on another host has none here.
  list: () =>
    withHost((host) =>
      familyOrder(listMembers(host).map(listing), (d) => ({
        key: d.id,
        parent: d.cloneId > 0 && d.family !== d.id && d.parentHost === undefined ? d.family : undefined,
        cloneId: d.cloneId,
      })),
    ),
  kill: (name, { clones: onlyClones }) =>
    withHost((host) => {
      const members = listMembers(host);
      const target = findMember(members, name);
      // A parent goes with its clones and the shells kept ready for it.
      const clones = clonesOf(members, target.domain.domid, { readyShells: !onlyClones });
      if (onlyClones && clones.length === 0) throw new SnowflockError("NOT_FOUND", `domain ${target.name} has no running clones`);
      const victims = onlyClones ? clones : [...clones, target];
      destroyDomains(
        host,
        victims.map((v) => v.domain.domid),
      );
      return victims.map((v) => ({ ...listing(v), depth: 0 }));
    }),
  hypervisor: () => withHost(({ version }) => `Xen ${version.major}.${version.minor}${version.extra}`),
  waitReady: (name, timeoutMs) =>
    withHost(async (host) => {
      const domid = findMember(listMembers(host), name).domain.domid;
      const store = host.xenstore();
      for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
        if (store.readString(`/local/domain/${domid}/control/feature-suspend`) === "1") return true;
        const domain = host.domain(domid);
        if (!domain || domain.shutdown || domain.dying) return false;
        await Bun.sleep(250);
      }
      throw new SnowflockError(
        "VM_STATE",
        `domain ${name} never offered suspend (control/feature-suspend) in ${Math.round(timeoutMs / 1000)} s`,
        "the domU's kernel needs Xen's suspend support",
      );
    }),
  guestRequests(onRequest, log) {
    const host = openXen();
    agentHost = host;
    const kept = new Keeper(
      // A destroyed clone stays a dying domain while its pager still maps its ring: it counts as gone.
      (domid) => host.domain(domid)?.dying === false,
      (domid) => destroyDomains(host, [domid]),
      log,
    );
    keeper = kept;
    const pagers = new ShellPagers();
    shellPagers = pagers;
    // Ready shells ended by a kill or `xl destroy` stay dying until their pager lets go.
    const sweep = setInterval(() => void pagers.sweep((domid) => host.domain(domid)?.dying === false), 1000);
    sweep.unref();
    endOrphans(host, log);
    const channel = watchRequests(host, onRequest, log);
    return {
      answer: channel.answer,
      async stop() {
        channel.stop();
        clearInterval(sweep);
        // Clones and ready shells whose pager goes away would wait for pages for ever: they end with the agent.
        destroyDomains(host, [...kept.clones().map((c) => c.domid), ...pagers.domids()]);
        await kept.stopAll();
        await pagers.stop(pagers.domids());
        keeper = undefined;
        shellPagers = undefined;
        agentHost = undefined;
        host.close();
      },
    };
  },
  memberOf: (domain) => useAgentHost((host) => readMember(host.xenstore(), domain) ?? { cloneId: 0, family: domain }),
  familyMember: (parentHost, family, cloneId) => useAgentHost((host) => familyMember(listMembers(host), parentHost, family, cloneId)),
  clonesOf: (domain) =>
    useAgentHost((host) => clonesOf(listMembers(host), domain).map((c) => ({ domain: c.domain.domid, cloneId: c.member!.cloneId }))),
  nextCloneId: (domain, round) =>
    useAgentHost(
      (host) => readyRun(host, domain, round.memory ?? "eager", round.clones, shellPagers)?.[0]?.cloneId ?? nextCloneId(host, domain),
    ),
  pool: (parentName, clones, options) =>
    withHost((ownHost) => {
      const host = agentHost ?? ownHost;
      const parent = findMember(listMembers(host), parentName).domain.domid;
      return fillPool(host, { parent, clones, ...options, pagers: shellPagers });
    }),
  startClones: (request) => withHost((host) => startRemoteClones(host, request, keeper)),
  freeBytes: () => useAgentHost((host) => host.physinfo().freePages * XC_PAGE_SIZE),
  snapshot: (name) => withHost((host) => snapshotDomain(host, findMember(listMembers(host), name).domain.domid)),
  destroy: (domids) => useAgentHost((host) => destroyDomains(host, domids)),
  pagedClones: () => keeper?.clones() ?? [],
};

export const xenBackend: Backend = {
  name: "xen",
  commands: ["fork", "pool", "ls", "kill", "descriptor", "agent", "doctor", "bench"],
  usage: "on Xen: start domains with xl create, then use fork, pool, ls, kill, descriptor, agent (--backend xen)",
  check: () => openXen().close(),
  doctor: xenDoctor,
  domains,
};
