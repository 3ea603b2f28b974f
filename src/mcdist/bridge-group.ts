/**
 * Keeps a family's raw mcdist frames off the guests' ports of a Linux bridge. When the packet
 * transport's interface is a bridge that also carries VMs (a Xen dom0's bridge with the domUs'
 * vifs, a KVM host's with taps), the bridge floods multicast of a group it knows no members of
 * into every port: each guest then takes a frame per page it never asked for (under emulation
 * that made mcdist several times slower than TCP). Two kinds of permanent L2 MDB entries for the
 * family's group MAC (`bridge mdb`, kernel 5.11 and later) end that: the bridge itself (this
 * host's socket hears the group) and each port that is not a guest's (the links to the other
 * hosts). A guest's port is a Xen backend vif (on the xen-backend bus) or a tun/tap device.
 *
 * Several transports of one family may share a host (a KVM host's clones, a dom0's pagers, each in
 * a process or Worker of its own): each leaves a holder file under HOLDERS (named by the network
 * namespace, the bridge and the group) while it is open, and the last to close removes the
 * entries. A holder whose process died (SIGKILL) holds nothing: the next transport to open on the
 * bridge removes the entries of groups with no live holder left. Opening and releasing hold a lock
 * on HOLDERS (flock), so that a transport closing never removes the entries one opening beside it
 * counts on, nor a sweep the directory of a group being joined. Without multicast snooping on the
 * bridge or the `bridge` tool, the frames flood as before: a one-line reason says so.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { processAlive } from "../run-dir.ts";
import { LOCK_EX, O_CREAT, O_RDWR } from "../sys/constants.ts";
import { close, flock, open } from "../sys/files.ts";

/** Where the transports on this machine's bridges say which groups they hold (one directory per namespace, bridge and group). */
const HOLDERS = "/run/snowflock-bridge-groups";

export interface BridgeGroup {
  /** Why the group's frames still flood into every port (undefined: they go to this host and the links only). */
  readonly problem?: string;
  release(): void;
}

const isBridge = (name: string) => existsSync(`/sys/class/net/${name}/bridge`);

/** A Xen backend vif (its device is on the xen-backend bus) or a tun/tap device: a VM's end of the bridge. */
export function isGuestPort(name: string): boolean {
  if (existsSync(`/sys/class/net/${name}/tun_flags`)) return true;
  try {
    return realpathSync(`/sys/class/net/${name}/device/subsystem`).endsWith("/bus/xen-backend");
  } catch {
    return false; // no device: a veth, a bond, a VLAN...
  }
}

function bridgeMdb(verb: "add" | "del", bridge: string, port: string, group: string): { ok: boolean; exists: boolean; why: string } {
  try {
    const r = Bun.spawnSync(["bridge", "mdb", verb, "dev", bridge, "port", port, "grp", group, "permanent"], {
      stdin: "ignore",
      stdout: "ignore",
      stderr: "pipe",
    });
    const why = r.stderr.toString().trim();
    // Another transport's entry: "File exists" for a port, "Group is already joined by host" for the bridge itself.
    return { ok: r.exitCode === 0, exists: /exists|already joined/i.test(why), why: why || `exit status ${r.exitCode}` };
  } catch (error) {
    return { ok: false, exists: false, why: `cannot run bridge (iproute2): ${(error as Error).message}` };
  }
}

/** The bridge and the ports that are not guests': where the group's entries go. */
const memberPorts = (bridge: string) => [bridge, ...readdirSync(`/sys/class/net/${bridge}/brif`).filter((port) => !isGuestPort(port))];

/** Runs `work` holding the lock on HOLDERS, or without it where the lock file cannot be opened (the holders cannot be written there either). */
function underLock<R>(work: () => R): R {
  let fd: number;
  try {
    mkdirSync(HOLDERS, { recursive: true, mode: 0o700 });
    fd = open(join(HOLDERS, ".lock"), O_RDWR | O_CREAT);
  } catch {
    return work();
  }
  try {
    flock(fd, LOCK_EX);
    return work();
  } finally {
    close(fd); // and with it the lock
  }
}

/** A holder file's name: "<pid>-<random>"; the live ones in `dir` (dead ones are removed). */
function liveHolders(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter((name) => {
    if (processAlive(Number(name.split("-")[0]))) return true;
    rmSync(join(dir, name), { force: true });
    return false;
  });
}

/** This namespace's groups on `bridge` held by no live transport (their holders were killed): their entries go. */
function sweepLeftovers(prefix: string, bridge: string): void {
  let dirs: string[];
  try {
    dirs = readdirSync(HOLDERS).filter((d) => d.startsWith(prefix));
  } catch {
    return;
  }
  for (const dir of dirs) {
    if (liveHolders(join(HOLDERS, dir)).length > 0) continue;
    const group = dir.slice(prefix.length).replace(/(..)(?!$)/g, "$1:");
    for (const port of memberPorts(bridge)) bridgeMdb("del", bridge, port, group);
    rmSync(join(HOLDERS, dir), { recursive: true, force: true });
  }
}

/** This transport's holder file for `group` on `bridge`, and the directory of the group's holders; undefined where it cannot be written. */
function hold(bridge: string, group: string): { dir: string; file: string } | undefined {
  try {
    const prefix = `${readlinkSync("/proc/self/ns/net").replace(/\D/g, "")}-${bridge}-`;
    sweepLeftovers(prefix, bridge);
    const dir = join(HOLDERS, `${prefix}${group.replaceAll(":", "")}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `${process.pid}-${randomBytes(6).toString("hex")}`);
    writeFileSync(file, "");
    return { dir, file };
  } catch {
    return undefined;
  }
}

/**
 * On bridge `interfaceName`, sends the group MAC `group` ("03:73:...") only to this host and the
 * ports that are not guests'; undefined when the interface is not a bridge (nothing to keep off).
 */
export function keepGroupOffGuests(interfaceName: string, group: string): BridgeGroup | undefined {
  if (!isBridge(interfaceName)) return undefined;
  const unchanged = (problem: string): BridgeGroup => ({ problem: `${problem}: mcdist frames reach its guests' ports too`, release() {} });
  let snooping: string;
  try {
    snooping = readFileSync(`/sys/class/net/${interfaceName}/bridge/multicast_snooping`, "utf8").trim();
  } catch (error) {
    return unchanged(`cannot read ${interfaceName}'s multicast snooping (${(error as Error).message})`);
  }
  if (snooping !== "1") return unchanged(`multicast snooping is off on bridge ${interfaceName}`);
  return underLock(() => {
    const holder = hold(interfaceName, group);
    const added: string[] = [];
    let released = false;
    // Called with the lock held.
    const releaseHeld = () => {
      if (released) return;
      released = true;
      if (holder) {
        rmSync(holder.file, { force: true });
        if (liveHolders(holder.dir).length > 0) return;
        rmSync(holder.dir, { recursive: true, force: true });
      }
      // The last holder (or, where holders cannot be written, the adder) removes the entries.
      const ports = holder ? new Set([...added, ...memberPorts(interfaceName)]) : added;
      for (const port of ports) bridgeMdb("del", interfaceName, port, group);
    };
    for (const port of memberPorts(interfaceName)) {
      const r = bridgeMdb("add", interfaceName, port, group);
      if (r.ok) added.push(port);
      else if (!r.exists) {
        releaseHeld();
        return unchanged(`\`bridge mdb add dev ${interfaceName} port ${port} grp ${group}\` failed (${r.why})`);
      }
    }
    return { release: () => underLock(releaseHeld) };
  });
}
