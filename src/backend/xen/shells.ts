/**
 * Clone shells: the paused domains a fork starts its clones in, built from the parent's own libxl
 * configuration (its name, UUID and MACs their own, the shell kernel instead of the parent's) by
 * a fork while its parent still runs (fork.ts) or ahead of any fork (ready-shells.ts).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { availableParallelism } from "node:os";
import { SnowflockError } from "../../errors.ts";
import { formatMac } from "../../net/mac.ts";
import type { StartedDomain } from "../backend.ts";
import { publishMember, readMember } from "./family-keys.ts";
import { ForkHelpers, workerError } from "./fork-helpers.ts";
import type { XenDomain, XenHost } from "./host.ts";
import { shellKernelPath } from "./shell-kernel.ts";

interface LibxlNic {
  mac?: string;
}
interface LibxlDisk {
  vdev?: string;
  pdev_path?: string;
  readwrite?: number | boolean;
}
export interface LibxlConfig {
  c_info: { name?: string; uuid?: string; type?: string };
  b_info: { kernel?: string; ramdisk?: string; cmdline?: string; max_memkb?: number; target_memkb?: number };
  nics?: LibxlNic[];
  disks?: LibxlDisk[];
}

/** A running PVH domU that can be forked now: its domain, name and libxl configuration; refused in words otherwise. */
export function forkableParent(host: XenHost, domid: number): { parent: XenDomain; parentName: string; config: LibxlConfig } {
  const parent = host.domain(domid);
  if (parent === undefined || parent.domid === 0)
    throw new SnowflockError("NOT_FOUND", `no Xen domU ${domid}`, "`snowflock ls --backend xen` or `xl list` shows the domains");
  checkForkable(parent);
  const parentName = parent.name ?? `domain-${parent.domid}`;
  const config = JSON.parse(host.libxl().configurationJson(parent.domid)) as LibxlConfig;
  if (config.c_info.type !== "pvh") {
    throw new SnowflockError(
      "VM_STATE",
      `domain ${parentName} is of type ${config.c_info.type ?? "unknown"}: snowflock forks PVH domains on Xen`,
      config.c_info.type === "hvm"
        ? 'an HVM domain\'s device model (QEMU) would have to be cloned too; run the guest as type = "pvh"'
        : 'run the guest as type = "pvh"',
    );
  }
  refuseWritableDisks(parentName, config);
  return { parent, parentName, config };
}

/**
 * Builds paused domain shells for clone IDs `cloneIds` of `parentName` from its configuration, on
 * the helpers' threads (each takes every k-th), and publishes each one's family keys. On a
 * failure the shells built so far are in `built` for the caller to end.
 */
export async function buildShells(
  host: XenHost,
  helpers: ForkHelpers,
  family: { parent: number; parentName: string; parentHost?: string; config: LibxlConfig; workDirectory: string },
  cloneIds: number[],
  keys: { memory?: "ondemand"; readyShell?: boolean },
  built: StartedDomain[],
): Promise<void> {
  const kernel = shellKernelPath(family.workDirectory);
  const specs = cloneIds.map((cloneId) => {
    const name = `${family.parentName}.${cloneId}`;
    return { cloneId, name, ...cloneConfig(family.config, name, kernel) };
  });
  const share = (w: number) => specs.map((_, i) => i).filter((i) => i % helpers.count === w);
  const replies = await Promise.all(
    Array.from({ length: helpers.count }, (_, w) =>
      helpers.call(w, { kind: "shells", shells: share(w).map((i) => ({ name: specs[i]!.name, json: specs[i]!.json })) }),
    ),
  );
  const domids = new Map<number, number>();
  replies.forEach((reply, w) => reply.domids.forEach((domid, k) => domids.set(share(w)[k]!, domid)));
  specs.forEach((spec, i) => domids.has(i) && built.push({ name: spec.name, domid: domids.get(i)!, cloneId: spec.cloneId, mac: spec.mac }));
  const failed = replies.find((reply) => reply.error);
  if (failed?.error) throw workerError(failed.error);
  const store = host.xenstore();
  for (const shell of built)
    publishMember(store, shell.domid, {
      cloneId: shell.cloneId,
      family: family.parent,
      parentName: family.parentName,
      parentHost: family.parentHost,
      mac: shell.mac,
      ...keys,
    });
}

/** Helper threads for `count` shells: one per CPU (or `threads`), at most one per shell. */
export function startHelpers(count: number, threads?: number): ForkHelpers {
  return ForkHelpers.start(Math.max(1, Math.min(count, threads ?? availableParallelism())));
}

/** PV and HVM domains are refused by their libxl type (below); this is about their state. */
function checkForkable(domain: XenDomain): void {
  if (domain.dying || domain.shutdown)
    throw new SnowflockError(
      "VM_STATE",
      `domain ${domain.name ?? domain.domid} is ${domain.dying ? "dying" : "shut down"}: only a running domain can be forked`,
    );
}

/** A clone must never write its parent's disk; without copy-on-write overlays, refuse. */
export function refuseWritableDisks(name: string, config: LibxlConfig): void {
  const writable = (config.disks ?? []).filter((d) => d.readwrite !== undefined && d.readwrite !== 0 && d.readwrite !== false);
  if (writable.length > 0) {
    const which = writable.map((d) => `${d.vdev ?? "?"} (${d.pdev_path ?? "?"})`).join(", ");
    throw new SnowflockError(
      "VM_STATE",
      `domain ${name} has a writable disk: ${which}; its clones would write it too`,
      "give the parent its disks read-only (e.g. 'file:/img,xvda,r') or keep writable state in memory",
    );
  }
}

/**
 * The parent's configuration for one clone: its own name, UUID and MAC addresses, and the
 * shell kernel instead of the parent's kernel and initramfs (the clone never boots).
 */
export function cloneConfig(parent: LibxlConfig, name: string, kernel: string): { json: string; mac: string } {
  const config = structuredClone(parent);
  config.c_info.name = name;
  config.c_info.uuid = randomUUID();
  config.b_info.kernel = kernel;
  delete config.b_info.ramdisk;
  delete config.b_info.cmdline;
  // Every clone has its own MAC (published in XenStore); its first NIC, if any, carries it.
  const mac = xenMac();
  (config.nics ?? []).forEach((nic, i) => (nic.mac = i === 0 ? mac : xenMac()));
  return { json: JSON.stringify(config), mac };
}

/** A random address in Xen's OUI (00:16:3e), as xl gives a NIC without one. */
function xenMac(): string {
  const tail = [...randomBytes(3)];
  tail[0]! &= 0x7f;
  return formatMac([0x00, 0x16, 0x3e, ...tail]);
}

/** The next free clone ID in the parent's family: clones of earlier forks keep theirs. */
export function nextCloneId(host: XenHost, parent: number): number {
  const store = host.xenstore();
  let highest = 0;
  for (const domain of host.listDomains()) {
    const member = domain.domid === 0 ? undefined : readMember(store, domain.domid);
    if (member && member.family === parent && member.parentHost === undefined && member.cloneId > highest) highest = member.cloneId;
  }
  return highest + 1;
}
