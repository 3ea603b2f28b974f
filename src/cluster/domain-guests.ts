/**
 * The other front end to the Impromptu Cluster API, for VMs the hypervisor runs (Xen domUs): the
 * requests of the guests' `sf` tool, as the host's agent receives them through the hypervisor,
 * turned into calls on each parent's ticket book (tickets.ts) — the rules of sf_request_ticket,
 * sf_clone, sf_join and sf_kill on KVM (guest-calls.ts is that front end).
 *
 *   clone <seq> N [free=P]  a ticket for N clones, cloned at once: the parent is answered "ok 0", each
 *                   clone "ok <id>"; P: pages the guest holds free (zeroed) for the clone instant
 *   join <seq>      waits for the clones of every ticket cloned and not joined: "ok <m> <id>=<status>[:<result>]..."
 *   exit <seq> S [R]  (a clone) ends the requester with status S and result R (a short token, e.g. a
 *                   digest), which its parent's join reports
 *   kill <seq>      ends the running clones of those tickets: "ok <n>"
 *
 * A request always speaks for the domain it came from (the hypervisor sees to that) and acts only
 * on that domain's own family. Clone, exit and kill are carried out one at a time (a fork suspends
 * and copies domains the next request may name); joins wait beside them.
 */
import type { DomainOperations, GuestRequest } from "../backend/backend.ts";
import { SnowflockError } from "../errors.ts";
import { CloneStatus, GuestError } from "../guest/hypercalls.ts";
import { type GuestLimits, guestLimits } from "../guest/limits.ts";
import { forkDomain } from "../clone/domain-fork.ts";
import { Tickets } from "./tickets.ts";

/** How long a look at which clones still run stays good while joins wait. */
const RUNNING_FRESH_MS = 250;
/** What a clone may hand its parent with sf exit: a digest, a count, a word. */
const RESULT = /^[0-9A-Za-z._+-]{1,64}$/;
/** A join's answer stays well inside one XenStore value (4096 bytes with its path); results past this are left out. */
const JOIN_REPLY_MAX = 3072;

interface Book {
  tickets: Tickets;
  /** Clone ID → how it ended (sf exit's status, or CloneStatus.KILLED), until a join reports it. */
  statuses: Map<number, number>;
  /** Clone ID → the result it exited with, until a join reports it. */
  results: Map<number, string>;
}

export interface DomainGuestsOptions {
  /** Where snowflock keeps its files on this host (the clone shells' stub kernel goes there). */
  workDirectory: string;
  log: (line: string) => void;
  limits?: GuestLimits;
  /** How the guests' clones get memory (default: eager; ondemand where the hypervisor pages). */
  memory?: "eager" | "ondemand";
}

export function serveDomainGuests(domains: DomainOperations, options: DomainGuestsOptions): { stop(): Promise<void> } {
  const { log, workDirectory } = options;
  const limits = options.limits ?? guestLimits();
  const books = new Map<number, Book>();
  let running: { at: number; clones: Map<number, Array<{ domain: number; cloneId: number }>> } = { at: 0, clones: new Map() };

  /** The parent's running clones, looked up at most every RUNNING_FRESH_MS. */
  const runningClones = (parent: number, fresh = false) => {
    if (fresh || performance.now() - running.at > RUNNING_FRESH_MS) running = { at: performance.now(), clones: new Map() };
    let clones = running.clones.get(parent);
    if (!clones) running.clones.set(parent, (clones = domains.clonesOf(parent)));
    return clones;
  };

  const book = (parent: number): Book => {
    let found = books.get(parent);
    if (found) return found;
    const statuses = new Map<number, number>();
    const tickets = new Tickets(limits.tickets, {
      status: (cloneId) =>
        statuses.get(cloneId) ?? (runningClones(parent).some((c) => c.cloneId === cloneId) ? undefined : CloneStatus.KILLED),
      probe: async () => {},
      end: async (cloneId) => {
        const clone = runningClones(parent, true).find((c) => c.cloneId === cloneId);
        if (clone) domains.destroy([clone.domain]);
        if (!statuses.has(cloneId)) statuses.set(cloneId, CloneStatus.KILLED);
      },
    });
    books.set(parent, (found = { tickets, statuses, results: new Map() }));
    return found;
  };

  let channel: ReturnType<DomainOperations["guestRequests"]> | undefined;
  const reply = (request: GuestRequest, text: string) => channel?.answer(request.domain, request.seq, text);

  const clone = async (request: GuestRequest): Promise<void> => {
    const count = Number(request.args[0]);
    if (!Number.isInteger(count) || count < 1 || count > domains.maxClones) {
      return reply(request, `error bad clone count '${request.args[0] ?? ""}' (1 to ${domains.maxClones})`);
    }
    const { tickets } = book(request.domain);
    const granted = await tickets.grant(async () => ({ granted: count, extra: undefined }));
    if (granted === GuestError.EDQUOT)
      return reply(request, `error this domain holds ${limits.tickets} unjoined clone rounds already: join them first`);
    if (typeof granted === "bigint") return reply(request, `error ${granted}`);
    const firstCloneId = domains.nextCloneId(request.domain, { clones: count, memory: options.memory });
    tickets.startClones(BigInt(granted.ticket), firstCloneId);
    const held = Number(/^free=(\d+)$/.exec(request.args[1] ?? "")?.[1] ?? 0);
    log(
      `domain ${request.domain}: clone ${count}${held > 0 ? ` (the guest holds ${held.toLocaleString("en-US")} free pages, zeroed)` : ""}`,
    );
    try {
      const result = await forkDomain(domains, request.domain, count, {
        firstCloneId,
        workDirectory,
        memory: options.memory,
        onCloneReady: (c) => channel?.answer(c.domid, request.seq, `ok ${c.cloneId}`),
        onParentResumed: () => reply(request, "ok 0"),
      });
      log(
        `domain ${request.domain}: ${result.clones.map((c) => `${c.name} (domain ${c.domid})`).join(", ")} ` +
          `running; parent down ${result.pausedMs.toFixed(0)} ms; memory ${result.memory}`,
      );
    } catch (error) {
      const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
      log(`domain ${request.domain}: clone failed: ${message}`);
      reply(request, `error ${message}`);
    }
  };

  const join = async (request: GuestRequest): Promise<void> => {
    const { tickets, statuses, results } = book(request.domain);
    const ended: Array<{ cloneId: number; status: number; result?: string }> = [];
    for (const { ticket, cloneIds } of tickets.open()) {
      const joined = await tickets.join(ticket);
      cloneIds.forEach((cloneId, i) => {
        ended.push({ cloneId, status: joined[i]!, result: results.get(cloneId) });
        statuses.delete(cloneId);
        results.delete(cloneId);
      });
    }
    ended.sort((a, b) => a.cloneId - b.cloneId);
    const answer = (results: boolean) =>
      `ok ${ended.length}${ended.map(({ cloneId, status, result }) => ` ${cloneId}=${status}${results && result ? `:${result}` : ""}`).join("")}`;
    if (answer(true).length <= JOIN_REPLY_MAX) return reply(request, answer(true));
    log(`domain ${request.domain}: join of ${ended.length} clones answered without their results (over ${JOIN_REPLY_MAX} bytes)`);
    reply(request, answer(false));
  };

  const exit = (request: GuestRequest): void => {
    const member = domains.memberOf(request.domain);
    if (member.cloneId === 0 || member.family === request.domain)
      return reply(request, "error only a clone can exit; the parent ends as any VM does");
    const status = Number(request.args[0] ?? "0");
    if (!Number.isInteger(status) || status < 0 || status > 255) return reply(request, `error bad exit status '${request.args[0]}'`);
    const result = request.args[1];
    if (result !== undefined && !RESULT.test(result)) return reply(request, "error bad exit result: at most 64 of 0-9 A-Z a-z . _ + -");
    if (request.args.length > 2) return reply(request, "error exit takes a status and one result");
    const { statuses, results } = book(member.family);
    if (!statuses.has(member.cloneId)) {
      statuses.set(member.cloneId, status);
      if (result !== undefined) results.set(member.cloneId, result);
    }
    log(`domain ${request.domain}: clone ${member.cloneId} of ${member.family} exits with ${status}${result ? ` (${result})` : ""}`);
    domains.destroy([request.domain]);
  };

  const kill = async (request: GuestRequest): Promise<void> => {
    const { tickets } = book(request.domain);
    const open = tickets.open();
    const runningIds = new Set(runningClones(request.domain, true).map((c) => c.cloneId));
    const count = open.flatMap((t) => t.cloneIds).filter((id) => runningIds.has(id)).length;
    for (const { ticket } of open) await tickets.kill(ticket);
    log(`domain ${request.domain}: killed ${count} clone(s)`);
    reply(request, `ok ${count}`);
  };

  // A Map, not an object literal: a guest's verb must not reach Object.prototype ("toString").
  const verbs = new Map<string, (r: GuestRequest) => Promise<void>>([
    ["clone", clone],
    ["exit", async (r) => exit(r)],
    ["kill", kill],
  ]);
  // Clone, exit and kill one after another; joins beside them.
  let queue = Promise.resolve();
  const handle = (request: GuestRequest) => {
    const settle = (work: Promise<void>) => work.catch((error) => log(`error: ${(error as Error).message}`));
    if (request.verb === "join") return void settle(join(request));
    const unknown = async (r: GuestRequest) => reply(r, `error unknown request '${r.verb}' (clone, join, exit, kill)`);
    const work = verbs.get(request.verb) ?? unknown;
    queue = queue.then(() => settle(work(request)));
  };

  channel = domains.guestRequests(handle, log);
  return { stop: async () => await channel?.stop() };
}
