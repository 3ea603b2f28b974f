/**
 * The Xen front end of the family (src/cluster/domain-guests.ts) against a stand-in for the
 * hypervisor's domains (this is a unit test of the front end alone; the real one, with the sf tool
 * inside PVH domUs, is test/xen/fork.test.ts). The requests are the sf tool's; the answers are
 * what it prints from.
 */
import { expect, test } from "bun:test";
import type { DomainOperations, GuestRequest, StartedDomain } from "../../src/backend/backend.ts";
import type { ClusterContext } from "../../src/cluster/cluster-context.ts";
import { serveDomainGuests } from "../../src/cluster/domain-guests.ts";
import { DEFAULT_GUEST_LIMITS } from "../../src/guest/limits.ts";

interface FakeDomain {
  cloneId: number;
  family: number;
  parentHost?: string;
}

/** Domain 5 is a parent; forks make domains from 100 up. */
function fakeHypervisor() {
  const alive = new Map<number, FakeDomain>([[5, { cloneId: 0, family: 5 }]]);
  const answers: string[] = [];
  let next = 100;
  let onRequest: ((r: GuestRequest) => void) | undefined;
  const domains: Partial<DomainOperations> = {
    maxClones: 64,
    guestRequests: (handler) => {
      onRequest = handler;
      return { answer: (domain, seq, text) => void answers.push(`${domain}#${seq}: ${text}`), stop: async () => {} };
    },
    memberOf: (domain) => alive.get(domain) ?? { cloneId: 0, family: domain },
    familyMember: (parentHost, family, cloneId) =>
      cloneId === 0
        ? parentHost === undefined && alive.has(family)
          ? family
          : undefined
        : [...alive].find(([, d]) => d.family === family && d.cloneId === cloneId && d.parentHost === parentHost)?.[0],
    clonesOf: (parent) =>
      [...alive].filter(([id, d]) => d.family === parent && id !== parent).map(([domain, d]) => ({ domain, cloneId: d.cloneId })),
    nextCloneId: (parent) => 1 + Math.max(0, ...[...alive.values()].filter((d) => d.family === parent).map((d) => d.cloneId)),
    round: (parent, clones, { firstCloneId, onCloneReady, onParentResumed }) => {
      const started: StartedDomain[] = [];
      return {
        prepare: async () => {
          for (let i = 0; i < clones; i++) {
            const clone = { domid: next++, cloneId: firstCloneId! + i, name: `p.${firstCloneId! + i}`, mac: "00:16:3e:00:00:01" };
            alive.set(clone.domid, { cloneId: clone.cloneId, family: parent as number });
            started.push(clone);
            onCloneReady?.(clone);
          }
        },
        pause: async () => {},
        capture: async () => {},
        resume: async () => onParentResumed?.(),
        distribute: async () => undefined,
        restore: async () => ({ backend: "xen" as const, parent: "p", clones: started, shellsReady: 0 }),
        abandon: async () => {},
        release: async () => {},
        exported: () => undefined,
      };
    },
    destroy: (ids) => ids.forEach((id) => alive.delete(id)),
    list: async () =>
      [...alive].map(([id, d]) => ({
        name: `d${id}`,
        id,
        state: "running",
        memoryBytes: 0,
        vcpus: 1,
        cloneId: d.cloneId,
        family: d.family,
        depth: d.cloneId === 0 ? 0 : 1,
      })),
  };
  const send = (domain: number, seq: number, verb: string, ...args: string[]) => onRequest!({ domain, verb, seq: String(seq), args });
  return { alive, answers, send, domains: domains as DomainOperations };
}

const settle = (ms = 30) => Bun.sleep(ms);

test("sf clone reports the pages the guest holds free: the agent logs them, and a count of 0 (--no-heuristic free-pages) says nothing", async () => {
  const h = fakeHypervisor();
  const lines: string[] = [];
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: (line) => void lines.push(line), limits: DEFAULT_GUEST_LIMITS });
  h.send(5, 1, "clone", "1", "free=41234");
  await settle();
  h.send(5, 2, "clone", "1", "free=0");
  await settle();
  expect(h.answers.filter((a) => a.startsWith("5#"))).toEqual(["5#1: ok 0", "5#2: ok 0"]);
  expect(lines).toContain("domain 5: clone 1 (the guest holds 41,234 free pages, zeroed)");
  expect(lines).toContain("domain 5: clone 1");
});

test("sf clone, exit and join: each clone learns its ID, the parent 0, and the join reports each clone's status", async () => {
  const h = fakeHypervisor();
  const served = serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: DEFAULT_GUEST_LIMITS });
  h.send(5, 1, "clone", "2");
  await settle();
  expect(h.answers).toEqual(["100#1: ok 1", "101#1: ok 2", "5#1: ok 0"]);
  h.send(5, 2, "exit", "3");
  h.send(100, 1, "exit", "41");
  await settle();
  expect(h.answers.at(-1)).toBe("5#2: error only a clone can exit; the parent ends as any VM does");
  expect(h.alive.has(100)).toBe(false);
  h.send(5, 3, "join");
  await settle(100);
  expect(h.answers.some((a) => a.startsWith("5#3"))).toBe(false); // clone 2 still runs
  h.send(101, 1, "exit", "42");
  await settle(200);
  expect(h.answers.at(-1)).toBe("5#3: ok 2 1=41 2=42");
  served.stop();
});

test("sf exit with a result: the parent's join reports it after the status; too many for one answer, only statuses", async () => {
  const h = fakeHypervisor();
  const lines: string[] = [];
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: (l) => lines.push(l), limits: DEFAULT_GUEST_LIMITS });
  h.send(5, 1, "clone", "2");
  await settle();
  h.send(100, 1, "exit", "0", "9478da224d93883893008c657d547a0a4f40ed3244d0f1cc527e2ee281d03f44");
  h.send(101, 1, "exit", "3", "count-17");
  h.send(5, 2, "join");
  await settle(200);
  expect(h.answers.at(-1)).toBe("5#2: ok 2 1=0:9478da224d93883893008c657d547a0a4f40ed3244d0f1cc527e2ee281d03f44 2=3:count-17");
  // 64 clones with 64-character results would not fit one XenStore value.
  h.send(5, 3, "clone", "64");
  await settle(100);
  for (let d = 102; d < 166; d++) h.send(d, 1, "exit", "0", "f".repeat(64));
  h.send(5, 4, "join");
  await settle(300);
  const answer = h.answers.at(-1)!;
  expect(answer.startsWith("5#4: ok 64 1=0 2=0 ")).toBe(true);
  expect(answer.endsWith(" 64=0")).toBe(true);
  expect(answer).not.toContain("=0:");
  expect(lines.at(-1)).toContain("join of 64 clones answered without their results");
});

test("sf kill ends the running clones of the rounds not yet joined; a later round's clones take the next IDs", async () => {
  const h = fakeHypervisor();
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: DEFAULT_GUEST_LIMITS });
  h.send(5, 1, "clone", "1");
  h.send(5, 2, "clone", "2");
  await settle();
  expect(h.answers.filter((a) => a.startsWith("5#"))).toEqual(["5#1: ok 0", "5#2: ok 0"]);
  expect([...h.alive.values()].map((d) => d.cloneId)).toEqual([0, 1, 2, 3]);
  h.send(102, 2, "exit", "7"); // clone 3 ends by itself
  h.send(5, 3, "kill");
  await settle();
  expect(h.answers.at(-1)).toBe("5#3: ok 2");
  expect([...h.alive.keys()]).toEqual([5]);
  h.send(5, 4, "join");
  await settle(200);
  expect(h.answers.at(-1)).toBe("5#4: ok 3 1=-9 2=-9 3=7");
});

test("bad requests get one-line errors and change nothing", async () => {
  const h = fakeHypervisor();
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: { ...DEFAULT_GUEST_LIMITS, tickets: 1 } });
  for (const [seq, verb, arg] of [
    [1, "clone", "0"],
    [2, "clone", "65"],
    [3, "clone", "x"],
    [4, "fly", ""],
    [5, "toString", ""],
    [6, "__proto__", ""],
  ] as const)
    h.send(5, seq, verb, arg);
  await settle();
  expect(h.answers).toEqual([
    "5#1: error bad clone count '0' (1 to 64)",
    "5#2: error bad clone count '65' (1 to 64)",
    "5#3: error bad clone count 'x' (1 to 64)",
    "5#4: error unknown request 'fly' (clone, join, exit, kill, send, recv)",
    "5#5: error unknown request 'toString' (clone, join, exit, kill, send, recv)",
    "5#6: error unknown request '__proto__' (clone, join, exit, kill, send, recv)",
  ]);
  h.send(5, 7, "clone", "1");
  h.send(5, 8, "clone", "1"); // one unjoined round is this domain's limit here
  h.send(100, 1, "exit", "256");
  h.send(100, 2, "exit", "0", "a b"); // one result, without spaces (the guest's tool splits nothing)
  h.send(100, 3, "exit", "0", "x".repeat(65));
  h.send(100, 4, "exit", "0", "digest", "more");
  await settle();
  expect(h.answers.slice(6)).toEqual([
    "100#7: ok 1",
    "5#7: ok 0",
    "5#8: error this domain holds 1 unjoined clone rounds already: join them first",
    "100#1: error bad exit status '256'",
    "100#2: error bad exit result: at most 64 of 0-9 A-Z a-z . _ + -",
    "100#3: error bad exit result: at most 64 of 0-9 A-Z a-z . _ + -",
    "100#4: error exit takes a status and one result",
  ]);
  expect(h.alive.size).toBe(2);
  // An empty join answers at once.
  const other = fakeHypervisor();
  serveDomainGuests(other.domains, { workDirectory: "/tmp", log: () => {}, limits: DEFAULT_GUEST_LIMITS });
  other.send(5, 1, "join");
  await settle();
  expect(other.answers).toEqual(["5#1: ok 0"]);
});

test("sf send and sf recv: a clone's message reaches its parent's inbox; a waiting receive gets the next one; bad sends are refused", async () => {
  const h = fakeHypervisor();
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: { ...DEFAULT_GUEST_LIMITS, inboxMessages: 1 } });
  h.send(5, 1, "clone", "2");
  await settle();
  h.send(100, 2, "send", "0", "hello-from-1");
  await settle();
  h.send(101, 2, "send", "0", "second"); // the parent's inbox holds one message here
  await settle();
  h.send(5, 2, "recv");
  h.send(5, 3, "recv", "nowait");
  await settle();
  expect(h.answers.slice(3).sort()).toEqual([
    "100#2: ok",
    "101#2: error member 0's inbox is full",
    "5#2: ok 1 hello-from-1",
    "5#3: error no message",
  ]);
  h.send(100, 3, "recv"); // waits
  await settle();
  expect(h.answers.some((a) => a.startsWith("100#3"))).toBe(false);
  h.send(101, 3, "send", "1", "sibling");
  await settle();
  expect(h.answers.slice(7)).toEqual(["100#3: ok 2 sibling", "101#3: ok"]);
  for (const [seq, ...args] of [
    [4, "9", "nobody"],
    [5, "2", "myself"],
    [6, "0", "a b"],
    [7, "x", "word"],
    [8, "0", "é"],
  ])
    h.send(101, seq as number, "send", ...(args as string[]).flatMap((a) => (a === "a b" ? ["a", "b"] : [a])));
  h.send(101, 9, "recv", "later");
  await settle();
  expect(h.answers.slice(9).sort()).toEqual([
    "101#4: error no member 9 in this family runs",
    "101#5: error a member cannot send to itself",
    "101#6: error a message is one word of 1 to 128 printable ASCII characters",
    "101#7: error bad family member 'x'",
    "101#8: error a message is one word of 1 to 128 printable ASCII characters",
    "101#9: error recv takes nothing or 'nowait'",
  ]);
});

test("the inbox of a domain ended behind the agent's back goes before the next message: a domain that takes its id finds none", async () => {
  const h = fakeHypervisor();
  serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: DEFAULT_GUEST_LIMITS });
  h.send(5, 1, "clone", "2");
  await settle();
  h.send(101, 2, "send", "1", "for-the-first-100");
  await settle();
  h.alive.delete(100); // xl destroy, or a crash: the agent is not told
  h.send(101, 3, "send", "0", "hello");
  await settle();
  h.alive.set(100, { cloneId: 3, family: 5 }); // a later clone gets domid 100
  h.send(100, 4, "recv", "nowait");
  h.send(5, 5, "recv", "nowait");
  await settle();
  expect(h.answers.filter((a) => !a.includes("#1: "))).toEqual(["101#2: ok", "101#3: ok", "100#4: error no message", "5#5: ok 2 hello"]);
});

/** This dom0 as host h2 of a cluster whose other host h1 is a stand-in that records what it is told. */
function fakeCluster() {
  const told: Array<{ host: string; op: string; body: unknown }> = [];
  const h1 = { name: "h1", address: "10.0.0.1", agentPort: 7070 };
  const cluster = {
    host: { name: "h2", address: "10.0.0.2", agentPort: 7070 },
    inventory: { hosts: [h1, { name: "h2", address: "10.0.0.2", agentPort: 7070 }] },
    hostNamed: (name: string) => (name === "h1" ? h1 : cluster.host),
    agentCall: async (host: { name: string }, op: string, body: unknown) => {
      told.push({ host: host.name, op, body });
      return { found: false };
    },
  };
  return { told, cluster: cluster as unknown as ClusterContext };
}

test("a clone whose parent runs on another host: its exit goes to the parent's host; messages and kills from there reach it", async () => {
  const h = fakeHypervisor();
  // Domain 200 here is clone 3 of domain 7 on host h1.
  h.alive.set(200, { cloneId: 3, family: 7, parentHost: "h1" });
  const { told, cluster } = fakeCluster();
  const guests = serveDomainGuests(h.domains, { workDirectory: "/tmp", log: () => {}, limits: DEFAULT_GUEST_LIMITS, cluster });
  // A message for it (from its sibling 1 on h1) lands in its inbox; a message for a member that is not here is not taken.
  expect(await guests.familyEvent({ event: "message", parentHost: "h1", parentDomain: 7, to: 3, from: 1, message: "hi" })).toEqual({
    found: true,
    full: false,
  });
  expect(await guests.familyEvent({ event: "message", parentHost: "h1", parentDomain: 7, to: 4, from: 1, message: "hi" })).toEqual({
    found: false,
  });
  // Domain 7 here is not that parent: the family is named by its host too.
  h.alive.set(7, { cloneId: 0, family: 7 });
  expect(await guests.familyEvent({ event: "message", parentHost: "h1", parentDomain: 7, to: 0, from: 3, message: "x" })).toEqual({
    found: false,
  });
  h.send(200, 1, "recv");
  await settle();
  expect(h.answers).toEqual(["200#1: ok 1 hi"]);
  // Its message for the parent is not for anyone here: the other hosts are asked.
  h.send(200, 2, "send", "0", "to-parent");
  await settle();
  expect(told.at(-1)).toEqual({
    host: "h1",
    op: "family",
    body: { event: "message", parentHost: "h1", parentDomain: 7, to: 0, from: 3, message: "to-parent" },
  });
  expect(h.answers.at(-1)).toBe("200#2: error no member 0 in this family runs");
  h.send(200, 3, "exit", "0", "digest42");
  await settle();
  expect(told.at(-1)).toEqual({
    host: "h1",
    op: "family",
    body: { event: "ended", parentDomain: 7, cloneId: 3, status: 0, result: "digest42" },
  });
  expect(h.alive.has(200)).toBe(false);
  // An end reported for a clone no book here waits for is not taken.
  expect(await guests.familyEvent({ event: "ended", parentDomain: 5, cloneId: 1, status: 0 })).toEqual({ found: false });
  h.alive.set(201, { cloneId: 4, family: 7, parentHost: "h1" });
  expect(await guests.familyEvent({ event: "kill", parentHost: "h1", parentDomain: 7, cloneId: 4 })).toEqual({ found: true });
  expect(h.alive.has(201)).toBe(false);
});
