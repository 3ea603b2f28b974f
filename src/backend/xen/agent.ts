/**
 * The Xen agent (`snowflock agent --backend xen`, in dom0): it gives every domU a
 * `snowflock/request` node only that domU may write, watches XenStore for requests from the
 * guest tool (guest/xen/sf), carries them out and answers in `snowflock/reply`.
 *
 *   clone <seq> N     fork the requester into N clones (each clone's reply is its clone ID)
 *   join <seq>        wait until the requester's clones have all ended
 *   exit <seq> S      (a clone) end the requester with status S
 *   kill <seq>        end every clone of the requester's family
 *
 * A domain can only write its own request node (XenStore enforces it), so a request always
 * speaks for the domain it came from, and acts only on that domain's own family.
 */
import { SnowflockError } from "../../errors.ts";
import { CloneStatus } from "../../guest/hypercalls.ts";
import { familyPath, openRequests, readMember, writeReply } from "./family-keys.ts";
import { clonesOf, destroyDomains, listMembers } from "./family.ts";
import { forkDomain, MAX_XEN_CLONES } from "./fork.ts";
import type { XenHost } from "./host.ts";

const WATCH_TOKEN = "snowflock-agent";
const POLL_MS = 20;
const JOIN_POLL_MS = 250;
const REQUEST_PATH = /^\/local\/domain\/(\d+)\/snowflock\/request$/;

export interface XenAgent {
  stop(): void;
}

export interface XenAgentOptions {
  host: XenHost;
  /** Where snowflock keeps its files on this host (see XenForkRequest). */
  workDirectory: string;
  log: (line: string) => void;
}

interface Request {
  domid: number;
  verb: string;
  seq: string;
  args: string[];
}

/** Parses "verb seq args..."; undefined for anything else (an empty node, a stray write). */
export function parseRequest(domid: number, text: string): Request | undefined {
  const [verb, seq, ...args] = text.trim().split(/\s+/);
  if (!verb || !seq || !/^\d{1,24}$/.test(seq)) return undefined;
  return { domid, verb, seq, args };
}

export function startXenAgent({ host, workDirectory, log }: XenAgentOptions): XenAgent {
  const store = host.xenstore();
  const handled = new Map<number, string>(); // domid -> last request text handled
  const statuses = new Map<number, Map<number, number>>(); // family -> clone ID -> exit status
  const joins: Array<{ request: Request }> = [];
  const queue: Request[] = [];
  let busy = false;
  let stopped = false;

  // Only the request node: a domU no fork has touched is a parent (clone ID 0) by default, and
  // a clone shell being built by a fork elsewhere gets its keys from that fork.
  const enroll = () => {
    for (const m of listMembers(host)) {
      try {
        openRequests(store, m.domain.domid);
      } catch {
        // the domain went away meanwhile
      }
    }
  };
  const reply = (request: Request, answer: string) => {
    try {
      writeReply(store, request.domid, request.seq, answer);
    } catch {
      // the requester is gone (an `sf exit`, or killed meanwhile)
    }
  };

  const carryOut = async (request: Request): Promise<void> => {
    const member = readMember(store, request.domid) ?? { cloneId: 0, family: request.domid, parentName: "" };
    switch (request.verb) {
      case "clone": {
        const n = Number(request.args[0]);
        if (!Number.isInteger(n) || n < 1 || n > MAX_XEN_CLONES)
          return reply(request, `error bad clone count '${request.args[0] ?? ""}' (1 to ${MAX_XEN_CLONES})`);
        log(`domain ${request.domid}: clone ${n}`);
        try {
          const result = await forkDomain(host, {
            parent: request.domid,
            clones: n,
            workDirectory,
            beforeStart: (clone) => writeReply(store, clone.domid, request.seq, `ok ${clone.cloneId}`),
            afterParentResumed: () => reply(request, "ok 0"),
          });
          log(
            `domain ${request.domid}: ${result.clones.map((c) => `${c.name} (domain ${c.domid})`).join(", ")} running; parent down ${result.timings.parentDownMs.toFixed(0)} ms`,
          );
        } catch (error) {
          const message = error instanceof SnowflockError ? error.render() : (error as Error).message;
          log(`domain ${request.domid}: clone failed: ${message}`);
          reply(request, `error ${message}`);
        }
        return;
      }
      case "kill": {
        const clones = clonesOf(listMembers(host), request.domid);
        destroyDomains(
          host,
          clones.map((c) => c.domain.domid),
        );
        for (const c of clones) recordStatus(request.domid, c.member!.cloneId, CloneStatus.KILLED);
        log(`domain ${request.domid}: killed ${clones.length} clone(s)`);
        return reply(request, `ok ${clones.length}`);
      }
      case "exit": {
        const status = Number(request.args[0] ?? "0");
        if (member.cloneId === 0 || member.family === request.domid)
          return reply(request, "error only a clone can exit; the parent ends as any VM does");
        if (!Number.isInteger(status) || status < 0 || status > 255) return reply(request, `error bad exit status '${request.args[0]}'`);
        recordStatus(member.family, member.cloneId, status);
        log(`domain ${request.domid}: clone ${member.cloneId} of ${member.family} exits with ${status}`);
        destroyDomains(host, [request.domid]);
        return;
      }
      case "join":
        joins.push({ request });
        return;
      default:
        return reply(request, `error unknown request '${request.verb}' (clone, join, exit, kill)`);
    }
  };

  const recordStatus = (family: number, cloneId: number, status: number) => {
    if (!statuses.has(family)) statuses.set(family, new Map());
    const known = statuses.get(family)!;
    if (!known.has(cloneId)) known.set(cloneId, status);
  };

  const serveJoins = () => {
    if (joins.length === 0) return;
    const members = listMembers(host);
    for (const join of joins.splice(0)) {
      if (clonesOf(members, join.request.domid).length > 0) {
        joins.push(join);
        continue;
      }
      const ended = [...(statuses.get(join.request.domid) ?? new Map<number, number>())].sort(([a], [b]) => a - b);
      statuses.delete(join.request.domid);
      reply(join.request, `ok ${ended.length}${ended.map(([id, status]) => ` ${id}=${status}`).join("")}`);
    }
  };

  const readRequests = () => {
    for (let event = store.checkWatch(); event; event = store.checkWatch()) {
      if (event.path === "@introduceDomain") enroll();
      const match = REQUEST_PATH.exec(event.path);
      if (!match) continue;
      const domid = Number(match[1]);
      const text = store.readString(event.path) ?? "";
      if (text === "" || handled.get(domid) === text) continue;
      handled.set(domid, text);
      const request = parseRequest(domid, text);
      if (!request) {
        log(`domain ${domid}: ignoring a malformed request`);
        continue;
      }
      queue.push(request);
    }
    // One request at a time: a fork suspends and copies domains the next one may name.
    if (busy || queue.length === 0) return;
    busy = true;
    void carryOut(queue.shift()!)
      .catch((error) => log(`error: ${(error as Error).message}`))
      .finally(() => (busy = false));
  };

  enroll();
  // Requests already there were answered (or abandoned) before this agent started.
  for (const m of listMembers(host)) handled.set(m.domain.domid, store.readString(familyPath(m.domain.domid, "request")) ?? "");
  store.watch("@introduceDomain", WATCH_TOKEN);
  store.watch("/local/domain", WATCH_TOKEN);
  let lastJoinCheck = 0;
  const timer = setInterval(() => {
    if (stopped) return;
    try {
      readRequests();
      if (Date.now() - lastJoinCheck >= JOIN_POLL_MS) {
        lastJoinCheck = Date.now();
        serveJoins();
      }
    } catch (error) {
      log(`error: ${(error as Error).message}`);
    }
  }, POLL_MS);
  log(`watching ${familyPath(0).replace("/0/", "/*/")}/request of every domU`);
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
      try {
        store.unwatch("/local/domain", WATCH_TOKEN);
        store.unwatch("@introduceDomain", WATCH_TOKEN);
      } catch {
        // xenstored is gone
      }
    },
  };
}
