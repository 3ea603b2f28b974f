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
 * The transport that added an entry removes it at close; one that found it there leaves it (another
 * transport of the family on this host owns it). Without multicast snooping on the bridge or the
 * `bridge` tool, the frames flood as before: a one-line reason says so.
 */
import { existsSync, readdirSync, readFileSync, realpathSync } from "node:fs";

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
    return { ok: r.exitCode === 0, exists: /exists/i.test(why), why: why || `exit status ${r.exitCode}` };
  } catch (error) {
    return { ok: false, exists: false, why: `cannot run bridge (iproute2): ${(error as Error).message}` };
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
  const ports = [interfaceName, ...readdirSync(`/sys/class/net/${interfaceName}/brif`).filter((port) => !isGuestPort(port))];
  const added: string[] = [];
  const release = () => {
    for (const port of added.splice(0)) bridgeMdb("del", interfaceName, port, group);
  };
  for (const port of ports) {
    const r = bridgeMdb("add", interfaceName, port, group);
    if (r.ok) added.push(port);
    else if (!r.exists) {
      release();
      return unchanged(`\`bridge mdb add dev ${interfaceName} port ${port} grp ${group}\` failed (${r.why})`);
    }
  }
  return { release };
}
