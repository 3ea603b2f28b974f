/**
 * The other front end to the Impromptu Cluster API, for VMs the hypervisor runs (Xen domUs): the
 * requests of the guests' `sf` tool, as the host's agent receives them through the hypervisor,
 * turned into calls on each parent's ticket book (tickets.ts) — the rules of sf_request_ticket,
 * sf_clone, sf_join, sf_kill, sf_send and sf_recv on KVM (guest-calls.ts is that front end).
 *
 *   clone <seq> N [free=P]  a ticket for N clones, cloned at once: the parent is answered "ok 0", each
 *                   clone "ok <id>"; P: pages the guest holds free (zeroed) for the clone instant
 *   join <seq>      waits for the clones of every ticket cloned and not joined: "ok <m> <id>=<status>[:<result>]..."
 *   exit <seq> S [R]  (a clone) ends the requester with status S and result R (a short token, e.g. a
 *                   digest), which its parent's join reports
 *   kill <seq>      ends the running clones of those tickets: "ok <n>"
 *   send <seq> TO M  puts message M (one word of printable ASCII) into family member TO's inbox (0: the parent)
 *   recv <seq> [nowait]  takes the oldest message of the requester's inbox: "ok <from> <message>"; waits for one
 *                   unless told not to
 *
 * A request always speaks for the domain it came from (the hypervisor sees to that) and acts only
 * on that domain's own family. Clone, exit and kill are carried out one at a time (a fork suspends
 * and copies domains the next request may name); joins, sends and receives wait beside them.
 *
 * With a cluster (the agent's --host), a guest's clones spread over the hosts as the operator's
 * `fork --cluster` spreads them (domain-spread.ts). A member is then named by its parent's host,
 * the parent's domid there and its clone ID; the agents tell each other, over their signed control
 * plane (family-event.ts), how a clone on another host ended, which clone to end, and the
 * family's messages. The parent's host keeps the family's tickets; a clone on another host that
 * vanishes without a word is reported by its host's agent, and a host that does not answer
 * counts its clones as crashed.
 */
import type { DomainOperations, GuestRequest } from "../backend/backend.ts";
import { SnowflockError } from "../errors.ts";
import { CloneStatus, EXIT_RESULT, GuestError } from "../guest/hypercalls.ts";
import { type GuestLimits, guestLimits } from "../guest/limits.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import type { ForkResult, RemoteTransport } from "../clone/fork-result.ts";
import type { ClusterContext } from "./cluster-context.ts";
import { forkDomainAcross, type ServedImage } from "./domain-spread.ts";
import { DomainInboxes } from "./domain-inboxes.ts";
import { END_CLONES_TIMEOUT_MS, FAMILY_MESSAGE, type FamilyEvent, type FamilyEventAnswer } from "./family-event.ts";
import { Tickets } from "./tickets.ts";
import { type JoinedClone, joinAnswer } from "./join-answer.ts";
import { scaledTimeout } from "../timeouts.ts";

/** How long a look at which clones still run stays good while joins wait. */
const RUNNING_FRESH_MS = 250;
/** A join's answer stays well inside one XenStore value (4096 bytes with its path); results past this are left out. */
const JOIN_REPLY_MAX = 3072;

/** A clone of this host's parent that runs on another host. */
interface RemoteMember {
  host: string;
  name: string;
  /** Its host's agent answered the clone order (before that, its absence from the host's list means nothing yet). */
  started: boolean;
  /** Probes in a row its host's agent did not answer. */
  unanswered: number;
}

/**
 * A clone on another host that exits tells its parent's host first and is ended right after: its
 * image is served that much longer, or its pager would fail on a closed server first.
 */
const EXIT_GRACE_MS = scaledTimeout(10_000);

/** Probes a host's agent may miss in a row (a busy or lossy link) before its clones count as crashed. */
const PROBES_MISSED = 3;

interface Book {
  /** The parent's domid. */
  parent: number;
  tickets: Tickets;
  /** Clone ID → how it ended (sf exit's status, or CloneStatus.KILLED), until a join reports it. */
  statuses: Map<number, number>;
  /** Clone ID → the result it exited with, until a join reports it. */
  results: Map<number, string>;
  /** Clones running on other hosts, until they are known to have ended. */
  remote: Map<number, RemoteMember>;
}

export interface DomainGuestsOptions {
  /** Where snowflock keeps its files on this host (the clone shells' stub kernel goes there). */
  workDirectory: string;
  log: (line: string) => void;
  limits?: GuestLimits;
  /** How the guests' clones get memory (default: eager; ondemand where the hypervisor pages). */
  memory?: "eager" | "ondemand";
  /** The cluster this dom0 is a host of: the guests' clones spread over its hosts, and their family reaches across. */
  cluster?: ClusterContext;
  /** How the other hosts fetch the memory of clones placed there (default tcp). */
  transport?: RemoteTransport;
}

export interface DomainGuests {
  /** News from another host's agent about a family one of whose members runs here. */
  familyEvent(event: FamilyEvent): Promise<FamilyEventAnswer>;
  stop(): Promise<void>;
}

export function serveDomainGuests(domains: DomainOperations, options: DomainGuestsOptions): DomainGuests {
  const { log, workDirectory, cluster } = options;
  const limits = options.limits ?? guestLimits();
  const thisHost = cluster?.host.name;
  const otherHosts = cluster?.inventory.hosts.filter((h) => h.name !== thisHost) ?? [];
  /** A parent's host as family keys and events name it: undefined for this one. */
  const hostKey = (host: string | undefined) => (host === undefined || host === "" || host === thisHost ? undefined : host);
  const books = new Map<number, Book>();
  let running: { at: number; clones: Map<number, Array<{ domain: number; cloneId: number }>> } = { at: 0, clones: new Map() };

  /** The parent's running clones on this host, looked up at most every RUNNING_FRESH_MS. */
  const runningClones = (parent: number, fresh = false) => {
    if (fresh || performance.now() - running.at > RUNNING_FRESH_MS) running = { at: performance.now(), clones: new Map() };
    let clones = running.clones.get(parent);
    if (!clones) running.clones.set(parent, (clones = domains.clonesOf(parent)));
    return clones;
  };

  /** Parents' images still served to their clones with memory on demand on other hosts, with the clones not yet ended. */
  type Served = { image: ServedImage; waiting: Set<number> };
  const servedImages = new Set<Served>();
  const stopServing = (served: Served) => {
    servedImages.delete(served);
    served.image.close().catch((error) => log(`domain ${served.image.parentDomain}: closing its image: ${(error as Error).message}`));
  };
  const keepServing = (found: Book) => (image: ServedImage) => {
    const served = { image, waiting: new Set(image.cloneIds.filter((id) => found.remote.has(id))) };
    if (served.waiting.size === 0) return void served.image.close();
    servedImages.add(served);
    log(`domain ${image.parentDomain}: its image stays served to clone(s) ${[...served.waiting].join(", ")} on other hosts`);
  };
  const servedCloneEnded = (parent: number, cloneId: number) => {
    for (const served of servedImages) {
      if (served.image.parentDomain !== parent || !served.waiting.delete(cloneId) || served.waiting.size > 0) continue;
      log(`domain ${parent}: its clones on other hosts have ended; its image is no longer served`);
      stopServing(served);
    }
  };

  /**
   * A clone on another host ended (or must count as ended): its book keeps the first word on it.
   * `exiting`: it said so itself (sf exit), and its host ends it once the word is taken.
   */
  const remoteEnded = (found: Book, cloneId: number, status: number, result?: string, exiting = false) => {
    if (!found.remote.delete(cloneId)) return;
    if (exiting) setTimeout(() => servedCloneEnded(found.parent, cloneId), EXIT_GRACE_MS).unref();
    else servedCloneEnded(found.parent, cloneId);
    if (found.statuses.has(cloneId)) return;
    found.statuses.set(cloneId, status);
    if (result !== undefined) found.results.set(cloneId, result);
    found.tickets.memberEnded();
  };

  /** Asks the hosts of clones still running elsewhere whether they still run them. */
  const probeRemote = async (found: Book, ids: number[]) => {
    const asked = ids.filter((id) => found.remote.get(id)?.started && !found.statuses.has(id));
    const byHost = Map.groupBy(asked, (id) => found.remote.get(id)!.host);
    await Promise.all(
      [...byHost].map(async ([host, hostIds]) => {
        try {
          const hello = (await cluster!.agentCall(cluster!.hostNamed(host), "hello", null)) as { clones: Array<{ name: string }> };
          const listed = new Set(hello.clones.map((c) => c.name));
          for (const id of hostIds) {
            const member = found.remote.get(id);
            if (member) member.unanswered = 0;
            if (!listed.has(member?.name ?? "")) remoteEnded(found, id, CloneStatus.KILLED);
          }
        } catch (error) {
          const given = hostIds.filter((id) => ++found.remote.get(id)!.unanswered >= PROBES_MISSED);
          if (given.length === 0) return;
          log(`host ${host} does not answer (${(error as Error).message}): its clone(s) ${given.join(", ")} count as crashed`);
          for (const id of given) remoteEnded(found, id, CloneStatus.CRASHED);
        }
      }),
    );
  };

  const book = (parent: number): Book => {
    let found = books.get(parent);
    if (found) return found;
    const statuses = new Map<number, number>();
    const remote = new Map<number, RemoteMember>();
    const tickets = new Tickets(limits.tickets, {
      status: (cloneId) =>
        statuses.get(cloneId) ??
        (remote.has(cloneId) || runningClones(parent).some((c) => c.cloneId === cloneId) ? undefined : CloneStatus.KILLED),
      probe: (ids) => probeRemote(found!, ids),
      end: async (cloneId) => {
        const elsewhere = remote.get(cloneId);
        if (elsewhere) {
          const event: FamilyEvent = { event: "kill", parentHost: thisHost!, parentDomain: parent, cloneId };
          await cluster!.agentCall(cluster!.hostNamed(elsewhere.host), "family", event, END_CLONES_TIMEOUT_MS).catch((error) => {
            log(`domain ${parent}: could not reach ${elsewhere.host} to end clone ${cloneId}: ${(error as Error).message}`);
          });
          remoteEnded(found!, cloneId, CloneStatus.KILLED);
          return;
        }
        const clone = runningClones(parent, true).find((c) => c.cloneId === cloneId);
        if (clone) end([clone.domain]);
        if (!statuses.has(cloneId)) statuses.set(cloneId, CloneStatus.KILLED);
      },
    });
    books.set(parent, (found = { parent, tickets, statuses, results: new Map(), remote }));
    return found;
  };

  let channel: ReturnType<DomainOperations["guestRequests"]> | undefined;
  const reply = (request: GuestRequest, text: string) => channel?.answer(request.domain, request.seq, text);
  const inboxes = new DomainInboxes(limits.inboxMessages, (domain, seq, text) => channel?.answer(domain, seq, text));
  /** Ends domains here; their inboxes go with them (a later domain may get the same id). */
  const end = (ids: number[]) => {
    for (const id of ids) inboxes.drop(id);
    domains.destroy(ids);
  };

  /** Before a message goes into an inbox: those of domains ended behind the agent's back (xl destroy, a crash) go. */
  const dropGoneInboxes = async () => inboxes.keepOnly(new Set((await domains.list()).map((d) => d.id)));

  /** Where the requester stands in its family: its parent's host (undefined: this one), the parent's domid there, its clone ID. */
  const familyOf = (domain: number) => {
    const member = domains.memberOf(domain);
    if (member.cloneId === 0) return { parentHost: undefined, parentDomain: domain, cloneId: 0 };
    return { parentHost: hostKey(member.parentHost), parentDomain: member.family, cloneId: member.cloneId };
  };

  const clone = async (request: GuestRequest): Promise<void> => {
    const count = Number(request.args[0]);
    if (!Number.isInteger(count) || count < 1 || count > domains.maxClones) {
      return reply(request, `error bad clone count '${request.args[0] ?? ""}' (1 to ${domains.maxClones})`);
    }
    const found = book(request.domain);
    const granted = await found.tickets.grant(async () => ({ granted: count, extra: undefined }));
    if (granted === GuestError.EDQUOT)
      return reply(request, `error this domain holds ${limits.tickets} unjoined clone rounds already: join them first`);
    if (typeof granted === "bigint") return reply(request, `error ${granted}`);
    // Over a cluster, IDs follow those of the clones still running here and elsewhere.
    const spreadOver = otherHosts.length > 0 ? cluster : undefined;
    const firstCloneId = Math.max(
      domains.nextCloneId(request.domain, { clones: spreadOver ? 0 : count, memory: options.memory }),
      1 + Math.max(0, ...found.remote.keys()),
    );
    const ticket = found.tickets.startClones(BigInt(granted.ticket), firstCloneId);
    if (typeof ticket === "bigint") return reply(request, `error ${ticket}`);
    const held = Number(/^free=(\d+)$/.exec(request.args[1] ?? "")?.[1] ?? 0);
    log(
      `domain ${request.domain}: clone ${count}${held > 0 ? ` (the guest holds ${held.toLocaleString("en-US")} free pages, zeroed)` : ""}`,
    );
    const { cloneIds } = ticket;
    const callbacks = {
      onCloneReady: (c: { domid: number; cloneId: number }) => channel?.answer(c.domid, request.seq, `ok ${c.cloneId}`),
      onParentResumed: () => reply(request, "ok 0"),
    };
    try {
      let result: ForkResult;
      if (spreadOver) {
        result = await forkDomainAcross(domains, spreadOver, request.domain, count, {
          workDirectory,
          memory: options.memory,
          transport: options.transport,
          keepServing: keepServing(found),
          cloneIds,
          replySeq: request.seq,
          onPlacement: (placed) => {
            for (const p of placed)
              if (p.host !== thisHost) found.remote.set(p.cloneId, { host: p.host, name: p.name, started: false, unanswered: 0 });
            log(`domain ${request.domain}: ${placed.map((p) => `clone ${p.cloneId} on ${p.host}`).join(", ")}`);
          },
          ...callbacks,
        });
        for (const c of result.clones) {
          const elsewhere = found.remote.get(c.cloneId);
          if (elsewhere) elsewhere.started = true;
        }
        for (const f of result.failed) remoteEnded(found, Number(f.name.slice(f.name.lastIndexOf(".") + 1)), CloneStatus.CRASHED);
      } else {
        result = await forkDomain(domains, request.domain, count, { firstCloneId, workDirectory, memory: options.memory, ...callbacks });
      }
      log(
        `domain ${request.domain}: ${result.clones.map((c) => `${c.name} (domain ${c.domid}${c.host && c.host !== thisHost ? ` on ${c.host}` : ""})`).join(", ")} ` +
          `running; parent down ${result.pausedMs.toFixed(0)} ms; memory ${result.memory}` +
          (result.memoryServer
            ? `; ${result.memoryServer.pagesServed} pages (${result.memoryServer.bytesSent} bytes) served to ${result.memoryServer.clients} other host(s)`
            : "") +
          (result.failed.length > 0 ? `; failed: ${result.failed.map((f) => `${f.name}: ${f.error}`).join("; ")}` : ""),
      );
    } catch (error) {
      for (const id of cloneIds) remoteEnded(found, id, CloneStatus.CRASHED);
      const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
      log(`domain ${request.domain}: clone failed: ${message}`);
      reply(request, `error ${message}`);
    }
  };

  const join = async (request: GuestRequest): Promise<void> => {
    const { tickets, statuses, results } = book(request.domain);
    const ended: JoinedClone[] = [];
    for (const { ticket, cloneIds } of tickets.open()) {
      const joined = await tickets.join(ticket);
      cloneIds.forEach((cloneId, i) => {
        ended.push({ cloneId, status: joined[i]!, result: results.get(cloneId) });
        statuses.delete(cloneId);
        results.delete(cloneId);
      });
    }
    const answer = joinAnswer(ended, JOIN_REPLY_MAX - "ok ".length);
    if (!answer.withResults)
      log(`domain ${request.domain}: join of ${ended.length} clones answered without their results (over ${JOIN_REPLY_MAX} bytes)`);
    reply(request, `ok ${answer.text}`);
  };

  const exit = async (request: GuestRequest): Promise<void> => {
    const member = familyOf(request.domain);
    if (member.cloneId === 0 || (member.parentHost === undefined && member.parentDomain === request.domain))
      return reply(request, "error only a clone can exit; the parent ends as any VM does");
    const status = Number(request.args[0] ?? "0");
    if (!Number.isInteger(status) || status < 0 || status > 255) return reply(request, `error bad exit status '${request.args[0]}'`);
    const result = request.args[1];
    if (result !== undefined && !EXIT_RESULT.test(result))
      return reply(request, "error bad exit result: at most 64 of 0-9 A-Z a-z . _ + -");
    if (request.args.length > 2) return reply(request, "error exit takes a status and one result");
    const { parentHost, parentDomain, cloneId } = member;
    if (parentHost !== undefined) {
      // The parent's host keeps the family's book: it hears first, then the domain goes.
      const event: FamilyEvent = { event: "ended", parentDomain, cloneId, status, ...(result !== undefined && { result }) };
      await cluster
        ?.agentCall(cluster.hostNamed(parentHost), "family", event)
        .catch((error) =>
          log(`domain ${request.domain}: could not tell ${parentHost} how clone ${cloneId} ended: ${(error as Error).message}`),
        );
    } else {
      const { statuses, results, tickets } = book(parentDomain);
      if (!statuses.has(cloneId)) {
        statuses.set(cloneId, status);
        if (result !== undefined) results.set(cloneId, result);
        tickets.memberEnded();
      }
    }
    log(
      `domain ${request.domain}: clone ${cloneId} of ${parentDomain}${parentHost ? ` on ${parentHost}` : ""} exits with ${status}${result ? ` (${result})` : ""}`,
    );
    end([request.domain]);
  };

  const kill = async (request: GuestRequest): Promise<void> => {
    const { tickets, remote } = book(request.domain);
    const open = tickets.open();
    const runningIds = new Set([...runningClones(request.domain, true).map((c) => c.cloneId), ...remote.keys()]);
    const count = open.flatMap((t) => t.cloneIds).filter((id) => runningIds.has(id)).length;
    for (const { ticket } of open) await tickets.kill(ticket);
    log(`domain ${request.domain}: killed ${count} clone(s)`);
    reply(request, `ok ${count}`);
  };

  /** A message for member `to` of a family: into its inbox if it runs here, else asked of the other hosts. */
  const deliver = async (event: Extract<FamilyEvent, { event: "message" }>): Promise<FamilyEventAnswer> => {
    await dropGoneInboxes();
    const here = deliverHere(event);
    if (here.found) return here;
    const answers = await Promise.all(
      otherHosts.map((h) => cluster!.agentCall(h, "family", event).catch(() => ({ found: false })) as Promise<FamilyEventAnswer>),
    );
    return answers.find((a) => a.found) ?? { found: false };
  };
  const deliverHere = (event: Extract<FamilyEvent, { event: "message" }>): FamilyEventAnswer => {
    const domain = domains.familyMember(hostKey(event.parentHost), event.parentDomain, event.to);
    if (domain === undefined) return { found: false };
    return { found: true, full: !inboxes.put(domain, event.from, event.message) };
  };

  const send = async (request: GuestRequest): Promise<void> => {
    const to = Number(request.args[0]);
    const message = request.args[1];
    if (!/^\d{1,7}$/.test(request.args[0] ?? "")) return reply(request, `error bad family member '${request.args[0] ?? ""}'`);
    if (message === undefined || !FAMILY_MESSAGE.test(message) || request.args.length > 2)
      return reply(request, "error a message is one word of 1 to 128 printable ASCII characters");
    const self = familyOf(request.domain);
    if (to === self.cloneId) return reply(request, "error a member cannot send to itself");
    const answer = await deliver({
      event: "message",
      parentHost: self.parentHost ?? thisHost ?? "",
      parentDomain: self.parentDomain,
      to,
      from: self.cloneId,
      message,
    });
    if (!answer.found) return reply(request, `error no member ${to} in this family runs`);
    reply(request, answer.full ? `error member ${to}'s inbox is full` : "ok");
  };

  const receive = async (request: GuestRequest): Promise<void> => {
    if (request.args.length > 1 || (request.args[0] !== undefined && request.args[0] !== "nowait"))
      return reply(request, "error recv takes nothing or 'nowait'");
    inboxes.take(request.domain, request.seq, request.args[0] === "nowait");
  };

  // A Map, not an object literal: a guest's verb must not reach Object.prototype ("toString").
  const serial = new Map<string, (r: GuestRequest) => Promise<void>>([
    ["clone", clone],
    ["exit", exit],
    ["kill", kill],
  ]);
  const beside = new Map<string, (r: GuestRequest) => Promise<void>>([
    ["join", join],
    ["send", send],
    ["recv", receive],
  ]);
  // Clone, exit and kill one after another; joins, sends and receives beside them.
  let queue = Promise.resolve();
  const handle = (request: GuestRequest) => {
    const settle = (work: Promise<void>) => work.catch((error) => log(`error: ${(error as Error).message}`));
    const now = beside.get(request.verb);
    if (now) return void settle(now(request));
    const unknown = async (r: GuestRequest) => reply(r, `error unknown request '${r.verb}' (clone, join, exit, kill, send, recv)`);
    const work = serial.get(request.verb) ?? unknown;
    queue = queue.then(() => settle(work(request)));
  };

  const familyEvent = async (event: FamilyEvent): Promise<FamilyEventAnswer> => {
    switch (event.event) {
      case "ended": {
        const found = books.get(event.parentDomain);
        if (!found?.remote.has(event.cloneId)) return { found: false };
        remoteEnded(found, event.cloneId, event.status, event.result, true);
        log(
          `domain ${event.parentDomain}: clone ${event.cloneId} (on another host) ended with ${event.status}${event.result ? ` (${event.result})` : ""}`,
        );
        return { found: true };
      }
      case "kill": {
        const domain = domains.familyMember(hostKey(event.parentHost), event.parentDomain, event.cloneId);
        if (domain === undefined) return { found: false };
        log(`domain ${domain}: ended at the request of its parent's host ${event.parentHost}`);
        end([domain]);
        return { found: true };
      }
      case "end-family": {
        const parentHost = hostKey(event.parentHost);
        if (parentHost === undefined) return { found: false };
        const clones = (await domains.list()).filter(
          (d) => d.cloneId > 0 && d.parentHost === parentHost && d.family === event.parentDomain,
        );
        end(clones.map((clone) => clone.id));
        if (clones.length > 0) log(`ended ${clones.map((c) => c.name).join(", ")} at the request of their parent's host ${parentHost}`);
        return { found: clones.length > 0, ended: clones.map((c) => c.name) };
      }
      case "message":
        await dropGoneInboxes();
        return deliverHere(event);
    }
  };

  channel = domains.guestRequests(handle, log);
  return {
    familyEvent,
    stop: async () => {
      for (const served of servedImages) stopServing(served);
      await channel?.stop();
    },
  };
}
