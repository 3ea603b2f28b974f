/**
 * The guests' requests on Xen (`snowflock agent` in dom0): every domU gets a `snowflock/request`
 * node only that domU may write; the channel watches XenStore for what the guest tool
 * (guest/linux/sf) writes there, hands each new request up, and answers in `snowflock/reply`.
 * What a request means (clone, join, exit, kill) is the family's business: src/cluster/
 * domain-guests.ts.
 *
 * A domain can only write its own request node (XenStore enforces it), so a request always
 * speaks for the domain it came from.
 */
import type { GuestRequest } from "../backend.ts";
import { familyPath, openRequests, writeReply } from "./family-keys.ts";
import { listMembers } from "./family.ts";
import type { XenHost } from "./host.ts";

const WATCH_TOKEN = "snowflock-agent";
const POLL_MS = 20;
const REQUEST_PATH = /^\/local\/domain\/(\d+)\/snowflock\/request$/;

/** Parses "verb seq args..."; undefined for anything else (an empty node, a stray write). */
export function parseRequest(domain: number, text: string): GuestRequest | undefined {
  const [verb, seq, ...args] = text.trim().split(/\s+/);
  if (!verb || !seq || !/^\d{1,24}$/.test(seq)) return undefined;
  return { domain, verb, seq, args };
}

export interface RequestChannel {
  /** Answers a request (its requester may be gone by now: then nothing happens). */
  answer(domain: number, seq: string, text: string): void;
  stop(): void;
}

export function watchRequests(host: XenHost, onRequest: (request: GuestRequest) => void, log: (line: string) => void): RequestChannel {
  const store = host.xenstore();
  const handled = new Map<number, string>(); // domid -> last request text handed up
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

  const readRequests = () => {
    for (let event = store.checkWatch(); event; event = store.checkWatch()) {
      if (event.path === "@introduceDomain") enroll();
      const match = REQUEST_PATH.exec(event.path);
      if (!match) continue;
      const domain = Number(match[1]);
      const text = store.readString(event.path) ?? "";
      if (text === "" || handled.get(domain) === text) continue;
      handled.set(domain, text);
      const request = parseRequest(domain, text);
      if (request) onRequest(request);
      else log(`domain ${domain}: ignoring a malformed request`);
    }
  };

  enroll();
  // Requests already there were answered (or abandoned) before this agent started.
  for (const m of listMembers(host)) handled.set(m.domain.domid, store.readString(familyPath(m.domain.domid, "request")) ?? "");
  store.watch("@introduceDomain", WATCH_TOKEN);
  store.watch("/local/domain", WATCH_TOKEN);
  const timer = setInterval(() => {
    if (stopped) return;
    try {
      readRequests();
    } catch (error) {
      log(`error: ${(error as Error).message}`);
    }
  }, POLL_MS);
  log(`watching ${familyPath(0).replace("/0/", "/*/")}/request of every domU`);
  return {
    answer(domain, seq, text) {
      try {
        writeReply(store, domain, seq, text);
      } catch {
        // the requester is gone (an `sf exit`, or killed meanwhile)
      }
    },
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
