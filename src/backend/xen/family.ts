/**
 * Families of domains on this Xen host, as XenStore records them (family-keys.ts): listing them
 * for `snowflock ls`, and ending clones for `snowflock kill` and the guest's `sf kill`/`sf exit`.
 */
import { SnowflockError } from "../../errors.ts";
import { type FamilyKeys, readMember } from "./family-keys.ts";
import type { XenDomain, XenHost } from "./host.ts";

export interface XenMember {
  domain: XenDomain;
  name: string;
  /** Undefined for a domain no fork has touched. */
  member: FamilyKeys | undefined;
}

/** Every domU, each with its family keys. */
export function listMembers(host: XenHost): XenMember[] {
  const store = host.xenstore();
  return host
    .listDomains()
    .filter((d) => d.domid !== 0 && !d.dying)
    .map((domain) => ({ domain, name: domain.name ?? `domain-${domain.domid}`, member: readMember(store, domain.domid) }));
}

/**
 * The clones whose family is `parent` (its domid on this host); with `readyShells`, also the shells
 * kept ready for its forks. Clones of parents on other hosts are never among them.
 */
export function clonesOf(members: XenMember[], parent: number, { readyShells = false } = {}): XenMember[] {
  return members.filter(
    (m) =>
      m.member &&
      m.member.family === parent &&
      m.member.parentHost === undefined &&
      m.member.cloneId > 0 &&
      m.domain.domid !== parent &&
      (readyShells || !m.member.readyShell),
  );
}

/**
 * The domain of family member `cloneId` (0: the parent) of the parent `family` on `parentHost`
 * (undefined: this host), if it runs here.
 */
export function familyMember(members: XenMember[], parentHost: string | undefined, family: number, cloneId: number): number | undefined {
  if (cloneId === 0) return parentHost === undefined && members.some((m) => m.domain.domid === family) ? family : undefined;
  return members.find(
    (m) =>
      m.member && !m.member.readyShell && m.member.family === family && m.member.parentHost === parentHost && m.member.cloneId === cloneId,
  )?.domain.domid;
}

/** A domU by name or domid. */
export function findMember(members: XenMember[], nameOrId: string): XenMember {
  const found =
    members.find((m) => m.name === nameOrId) ??
    (/^\d+$/.test(nameOrId) ? members.find((m) => m.domain.domid === Number(nameOrId)) : undefined);
  if (!found) throw new SnowflockError("NOT_FOUND", `no Xen domU named '${nameOrId}'`, "`snowflock ls --backend xen` lists them");
  return found;
}

/** Ends domains (libxl destroys them: XenStore entries, console, memory). */
export function destroyDomains(host: XenHost, domids: number[]): void {
  for (const domid of domids) host.libxl().destroy(domid);
}
