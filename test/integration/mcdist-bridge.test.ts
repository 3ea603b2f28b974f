/**
 * mcdist's raw frames on a host whose cluster interface is a bridge with VMs on it: the bridge
 * floods a group it knows no members of into every port, so while a packet transport is open on
 * the bridge its family's group goes only to this host and the links to other hosts, never into a
 * guest's port (a tap here, as a KVM VM's or a Xen vif's). Namespaces: "host" holds the bridge with
 * an uplink (veth to "other", another host) and a guest's tap.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { ETHERTYPE_MCDIST } from "../../src/mcdist/frame.ts";
import { formatMac, groupMac } from "../../src/mcdist/transport.ts";
import { Peer } from "../support/mcdist-peers.ts";
import { describeNetns } from "../support/netns.ts";
import { openTap, type Tap } from "../support/tap.ts";

const PREFIX = `sfbg${process.pid % 1000}`;
const HOST = `${PREFIX}h`;
const OTHER = `${PREFIX}o`;
const TAP = `${PREFIX}t`;
const FAMILY = 0x5eed0001;
const GROUP = formatMac(groupMac(FAMILY));
const PEER = new URL("../support/bridge-group-peer.ts", import.meta.url).pathname;
const FRAMES = 20;

function ip(...args: string[]): string {
  const r = Bun.spawnSync(["ip", ...args], { stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.toString()}`);
  return r.stdout.toString();
}

/** The bridge's entries for the family's group: "port" names. */
function groupPorts(): string[] {
  const r = Bun.spawnSync(["ip", "netns", "exec", HOST, "bridge", "-j", "mdb", "show", "dev", "br0"], { stdout: "pipe" });
  const shown = JSON.parse(r.stdout.toString() || "[]") as Array<{ mdb: Array<{ port: string; grp: string }> }>;
  return shown
    .flatMap((b) => b.mdb)
    .filter((e) => e.grp === GROUP)
    .map((e) => e.port)
    .sort();
}

function startPeer(namespace: string, iface: string): Peer {
  return new Peer(
    Bun.spawn(["ip", "netns", "exec", namespace, process.execPath, PEER, iface, String(FAMILY)], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    }),
  );
}

async function ask(peer: Peer, line: string): Promise<Record<string, number>> {
  peer.say(line);
  return peer.next();
}

const mcdistFrames = (tap: Tap) => tap.frames().filter((f) => ((f[12]! << 8) | f[13]!) === ETHERTYPE_MCDIST).length;

describeNetns("mcdist on a bridge with guests: the family's frames stay off the guests' ports", () => {
  let tap: Tap;
  let other: Peer;

  beforeAll(async () => {
    ip("netns", "add", HOST);
    ip("netns", "add", OTHER);
    ip("-n", HOST, "link", "add", "br0", "type", "bridge");
    ip("-n", HOST, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", OTHER);
    tap = openTap(TAP);
    ip("link", "set", TAP, "netns", HOST);
    for (const port of ["up0", TAP]) ip("-n", HOST, "link", "set", port, "master", "br0");
    for (const link of ["br0", "up0", TAP]) ip("-n", HOST, "link", "set", link, "up");
    ip("-n", OTHER, "link", "set", "eth0", "up");
    other = startPeer(OTHER, "eth0");
    expect((await other.next()).ready).toBe(true);
    // Ports forward once the bridge's forwarding delay (15 s by default) would have passed: none here.
    ip("-n", HOST, "link", "set", "br0", "type", "bridge", "forward_delay", "0");
    await Bun.sleep(500);
    tap.frames();
  });

  afterAll(() => {
    other?.end();
    tap?.close();
    for (const n of [HOST, OTHER]) Bun.spawnSync(["ip", "netns", "del", n], { stderr: "ignore" });
  });

  test("without an mcdist transport on the bridge, the group floods into the guest's tap (what the entries prevent)", async () => {
    expect(await ask(other, `send ${FRAMES}`)).toEqual({ sent: FRAMES });
    await Bun.sleep(300);
    expect(mcdistFrames(tap)).toBe(FRAMES);
  });

  test("with one open, the group reaches this host and the other host, not the guest; closing it removes its entries", async () => {
    const here = startPeer(HOST, "br0");
    expect((await here.next()).ready).toBe(true);
    expect(groupPorts()).toEqual(["br0", "up0"]);

    expect(await ask(other, `send ${FRAMES}`)).toEqual({ sent: FRAMES });
    await Bun.sleep(300);
    expect(await ask(here, "count")).toEqual({ received: FRAMES });
    expect(await ask(here, `send ${FRAMES}`)).toEqual({ sent: FRAMES });
    await Bun.sleep(300);
    expect(await ask(other, "count")).toEqual({ received: FRAMES });
    expect(mcdistFrames(tap)).toBe(0);

    here.end();
    expect(await here.next()).toEqual({ closed: true });
    expect(groupPorts()).toEqual([]);
  });

  test("two transports of the family on the bridge: the entries stay until the last closes", async () => {
    const first = startPeer(HOST, "br0");
    const second = startPeer(HOST, "br0");
    expect((await first.next()).ready).toBe(true);
    expect((await second.next()).ready).toBe(true);
    expect(groupPorts()).toEqual(["br0", "up0"]);
    first.end();
    expect(await first.next()).toEqual({ closed: true });
    expect(groupPorts()).toEqual(["br0", "up0"]);
    expect(await ask(other, `send ${FRAMES}`)).toEqual({ sent: FRAMES });
    await Bun.sleep(300);
    expect(await ask(second, "count")).toEqual({ received: FRAMES });
    expect(mcdistFrames(tap)).toBe(0);
    second.end();
    expect(await second.next()).toEqual({ closed: true });
    expect(groupPorts()).toEqual([]);
  });

  test("six transports of the family opening at once and five closing at once: the entries stay for the sixth, then go", async () => {
    const peers = Array.from({ length: 6 }, () => startPeer(HOST, "br0"));
    for (const peer of peers) expect((await peer.next()).ready).toBe(true);
    expect(groupPorts()).toEqual(["br0", "up0"]);
    const last = peers.pop()!;
    for (const peer of peers) peer.end();
    for (const peer of peers) expect(await peer.next()).toEqual({ closed: true });
    expect(groupPorts()).toEqual(["br0", "up0"]);
    last.end();
    expect(await last.next()).toEqual({ closed: true });
    expect(groupPorts()).toEqual([]);
  });

  test("a transport killed with SIGKILL leaves its entries; the next transport opened on the bridge removes them", async () => {
    const killed = startPeer(HOST, "br0");
    expect((await killed.next()).ready).toBe(true);
    killed.process.kill("SIGKILL");
    await killed.process.exited;
    expect(groupPorts()).toEqual(["br0", "up0"]);
    // Another family's transport on the same bridge finds the group held by no live process.
    const next = new Peer(
      Bun.spawn(["ip", "netns", "exec", HOST, process.execPath, PEER, "br0", String(FAMILY + 1)], {
        stdin: "pipe",
        stdout: "pipe",
        stderr: "pipe",
      }),
    );
    expect((await next.next()).ready).toBe(true);
    expect(groupPorts()).toEqual([]);
    next.end();
    expect(await next.next()).toEqual({ closed: true });
  });

  test("with multicast snooping off, the transport still works and says once why the group floods", async () => {
    ip("-n", HOST, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0");
    const here = startPeer(HOST, "br0");
    expect((await here.next()).ready).toBe(true);
    expect(await ask(other, `send ${FRAMES}`)).toEqual({ sent: FRAMES });
    await Bun.sleep(300);
    expect(await ask(here, "count")).toEqual({ received: FRAMES });
    expect(mcdistFrames(tap)).toBe(FRAMES);
    here.end();
    await here.next();
    expect(await new Response(here.process.stderr).text()).toContain("multicast snooping is off on bridge br0");
  });
});
