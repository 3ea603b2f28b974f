/**
 * Where a family lives in XenStore: each member's `/local/domain/<domid>/snowflock/` holds its
 * clone ID, its family (the parent's domid; with `parent-host`, on that inventory host), its MAC address, whether a pager serves its memory
 * (`memory` = ondemand: without the agent's pager it cannot run), whether it is a shell kept ready for
 * a fork (`ready-shell`: built under its future clone ID, it has never run), and the request/reply pair through
 * which the guest tool (guest/linux/sf) talks to the agent. dom0 owns every node; the member may
 * read its own, and write only its `request` — XenStore refuses any other domain.
 */
import { XS_PERM_NONE, XS_PERM_READ, XS_PERM_WRITE } from "./abi.ts";
import type { XenStore } from "./xenstore.ts";

export const FAMILY_DIRECTORY = "snowflock";

export interface FamilyKeys {
  cloneId: number;
  /** The parent's domid (its own for a parent), on the parent's host. */
  family: number;
  parentName: string;
  /** The inventory host the parent runs on, for a clone started here by a clone order (absent: this host). */
  parentHost?: string;
  mac?: string;
  /** "ondemand": its memory comes from a pager in the agent that forked it. */
  memory?: "ondemand";
  /** A shell the agent keeps ready for a fork of its family (shell-pool.ts): no clone yet. */
  readyShell?: boolean;
}

export function familyPath(domid: number, key = ""): string {
  return `/local/domain/${domid}/${FAMILY_DIRECTORY}${key ? `/${key}` : ""}`;
}

/** dom0 owns it; the domain itself may only read. */
function readOnlyFor(domid: number) {
  return [
    { domid: 0, perms: XS_PERM_NONE },
    { domid, perms: XS_PERM_READ },
  ];
}

/** Writes a member's keys (before a clone first runs), and the request node it may write. */
export function publishMember(store: XenStore, domid: number, keys: FamilyKeys): void {
  const entries: Array<[string, string]> = [
    ["clone-id", String(keys.cloneId)],
    ["family", String(keys.family)],
    ["parent", keys.parentName],
  ];
  if (keys.parentHost) entries.push(["parent-host", keys.parentHost]);
  if (keys.mac) entries.push(["mac", keys.mac]);
  if (keys.memory) entries.push(["memory", keys.memory]);
  if (keys.readyShell) entries.push(["ready-shell", "1"]);
  openRequests(store, domid);
  for (const [key, value] of entries) {
    store.write(familyPath(domid, key), value);
    store.setPermissions(familyPath(domid, key), readOnlyFor(domid));
  }
}

/** The request node the domain may write (and nothing else of its keys); kept if there. */
export function openRequests(store: XenStore, domid: number): void {
  if (store.read(familyPath(domid)) === undefined) {
    store.mkdir(familyPath(domid));
    store.setPermissions(familyPath(domid), readOnlyFor(domid));
  }
  if (store.read(familyPath(domid, "request")) === undefined) store.write(familyPath(domid, "request"), "");
  store.setPermissions(familyPath(domid, "request"), [
    { domid: 0, perms: XS_PERM_NONE },
    { domid, perms: XS_PERM_READ | XS_PERM_WRITE },
  ]);
}

/** The member's keys, or undefined for a domain no family knows. */
export function readMember(store: XenStore, domid: number): FamilyKeys | undefined {
  const cloneId = store.readString(familyPath(domid, "clone-id"));
  const family = store.readString(familyPath(domid, "family"));
  if (cloneId === undefined || family === undefined) return undefined;
  return {
    cloneId: Number(cloneId),
    family: Number(family),
    parentName: store.readString(familyPath(domid, "parent")) ?? "",
    parentHost: store.readString(familyPath(domid, "parent-host")),
    mac: store.readString(familyPath(domid, "mac")),
    memory: store.readString(familyPath(domid, "memory")) === "ondemand" ? "ondemand" : undefined,
    readyShell: store.readString(familyPath(domid, "ready-shell")) === "1" || undefined,
  };
}

/** A ready shell becomes a clone: the fork that takes it is about to start it. */
export function takeShell(store: XenStore, domid: number): void {
  store.rm(familyPath(domid, "ready-shell"));
}

/** The agent's answer to the guest's request `seq`. */
export function writeReply(store: XenStore, domid: number, seq: string, answer: string): void {
  store.write(familyPath(domid, "reply"), `${seq} ${answer}`);
  store.setPermissions(familyPath(domid, "reply"), readOnlyFor(domid));
}
