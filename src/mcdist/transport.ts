/**
 * The two ways mcdist frames travel, behind one small synchronous interface (for Worker threads
 * that block in poll): raw Ethernet frames under our own EtherType on an AF_PACKET socket, or UDP
 * datagrams to an IPv4 multicast group. "group" means every host of the family; anything else is
 * one peer's endpoint (a MAC address for packet, address:port for UDP). A TransportSpec is plain
 * JSON so it can cross to a Worker or another process.
 */
import { readFileSync } from "node:fs";
import { shown, SnowflockError } from "../errors.ts";
import {
  PACKET_ADD_MEMBERSHIP,
  PACKET_IGNORE_OUTGOING,
  PACKET_MR_MULTICAST,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_REUSEADDR,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOL_PACKET,
  SOL_SOCKET,
} from "../sys/constants.ts";
import { close } from "../sys/files.ts";
import { parseIpv4 } from "../sys/inet.ts";
import {
  bindPacketSocket,
  createPacketSocket,
  type PacketSocket,
  packetDestination,
  packetStatistics,
  receiveFrame,
  sendFrame,
  sendFrameTo,
} from "../sys/packet.ts";
import {
  closeRxRing,
  lastSource,
  openRxRing,
  type PacketRing,
  type RingGeometry,
  ringFromGeometry,
  ringGeometry,
  ringSlotSize,
  takeFrame,
} from "../sys/packet-ring.ts";
import {
  bindUdp,
  joinMulticastGroup,
  openUdpSocket,
  receiveUdp,
  sendUdp,
  setMulticastInterface,
  setMulticastLoop,
  setMulticastTtl,
  setSocketInt,
  setSocketOption,
  type UdpPeer,
} from "../sys/udp.ts";
import { keepGroupOffGuests } from "./bridge-group.ts";
import { ETHERTYPE_MCDIST } from "./frame.ts";

/** A MAC address "02:73:66:00:00:01" (packet) or "10.77.0.11:7789" (UDP). */
export type Endpoint = string;

export type TransportSpec =
  | { kind: "packet"; interface: string }
  /** `address` is the interface's own IPv4 address; `port` is the family's UDP port (default MCDIST_UDP_PORT). */
  | { kind: "udp"; interface: string; address: string; port?: number };

export interface Transport {
  readonly kind: TransportSpec["kind"];
  /** Readable when a frame is waiting. */
  readonly fd: number;
  /** Where peers reach this transport. */
  readonly localEndpoint: Endpoint;
  /** Largest frame send() takes (what frame.ts's `fragment` should be given as the MTU). */
  readonly maxFrame: number;
  send(to: Endpoint | "group", bytes: Uint8Array): void;
  /** One waiting frame into `buffer`: its length, or undefined when none is waiting. Never blocks. */
  receive(buffer: Uint8Array): number | undefined;
  /** Who sent the frame the last receive() returned (made only when asked: most frames' sender does not matter). */
  sender(): Endpoint;
  /**
   * Frames the kernel dropped since the last call because this transport's ring or buffer was
   * full; undefined where the transport cannot tell.
   */
  framesDropped(): number | undefined;
  close(): void;
}

export interface TransportOptions {
  family: number;
  /** The link MTU to use (at most the interface's). */
  mtu: number;
  /** Socket buffer sizes in bytes; bursts of a whole request's pages must fit. */
  bufferBytes?: number;
  /**
   * Receive what is sent to the group (clients; the default). A server only sends to the group:
   * with UDP it then listens on an ephemeral port of its own, so requests reach it even when a
   * client shares its host (clients on one host share the group's port).
   */
  joinGroup?: boolean;
  /**
   * Packet transport: read frames from a mapped ring (the default), or with one recvfrom(2) each,
   * for what reads few frames (a server reads requests; a descriptor is a few frames): setting up
   * a ring and tearing it down each wait for an RCU grace period, 10-30 ms apiece on a busy host,
   * while a parent forks or a clone starts.
   */
  ring?: boolean;
  /** A socket and ring made ahead for this interface (preparePacketRing); the transport owns it from now on, used or not. */
  prepared?: PreparedPacketRing;
}

/**
 * A packet socket with its receive ring, not yet bound: what a ready VMM (pool/) makes before its
 * clone needs it, since setting up a ring waits for an RCU grace period, 10-30 ms on a busy host.
 * Plain numbers, so it can cross to a Worker of the same process.
 */
export interface PreparedPacketRing {
  fd: number;
  interface: string;
  ring: RingGeometry;
}

export const MCDIST_UDP_PORT = 7789;
/** IPv4 + UDP headers: what a datagram loses of the MTU. */
const UDP_OVERHEAD = 28;
const DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024;
const INTERFACE_NAME = /^(?!\.{1,2}$)[A-Za-z0-9_.:-]{1,15}$/;
/** Bridges whose flooding was reported once in this process (see bridge-group.ts). */
const floodReported = new Set<string>();

/** 03:73:…: multicast + locally administered, "s", then the family (u32). */
export function groupMac(family: number): Uint8Array {
  return Uint8Array.from([0x03, 0x73, (family >>> 24) & 0xff, (family >>> 16) & 0xff, (family >>> 8) & 0xff, family & 0xff]);
}

/** 239.77.x.y (organization-local scope): the family's low 16 bits. Families that share one still drop each other's frames. */
export function groupAddress(family: number): string {
  return `239.77.${(family >>> 8) & 0xff}.${family & 0xff}`;
}

const HEX_BYTES = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export function formatMac(mac: Uint8Array): string {
  return `${HEX_BYTES[mac[0]!]}:${HEX_BYTES[mac[1]!]}:${HEX_BYTES[mac[2]!]}:${HEX_BYTES[mac[3]!]}:${HEX_BYTES[mac[4]!]}:${HEX_BYTES[mac[5]!]}`;
}

function sameMac(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function parseMac(text: string): Uint8Array {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(text)) throw new RangeError(`not a MAC address: ${text}`);
  return Uint8Array.from(text.split(":"), (h) => parseInt(h, 16));
}

export function parseUdpEndpoint(text: string): { address: string; port: number } {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || port < 1 || port > 65535) throw new RangeError(`not an IPv4 address:port: ${text}`);
  parseIpv4(match[1]!);
  return { address: match[1]!, port };
}

/** Checks a TransportSpec that came as JSON from elsewhere. */
export function checkTransportSpec(value: unknown): TransportSpec {
  const spec = value as Partial<Record<string, unknown>> | null;
  const bad = (why: string) =>
    new SnowflockError(
      "USAGE",
      `bad mcdist transport ${shown(value)}: ${why}`,
      'give {"kind":"packet","interface":IF} or {"kind":"udp","interface":IF,"address":IPV4}',
    );
  if (typeof spec !== "object" || spec === null) throw bad("not an object");
  if (typeof spec.interface !== "string" || !INTERFACE_NAME.test(spec.interface)) throw bad("no valid interface name");
  if (spec.kind === "packet") return { kind: "packet", interface: spec.interface };
  if (spec.kind !== "udp") throw bad("kind is neither packet nor udp");
  if (typeof spec.address !== "string") throw bad("no interface address");
  try {
    parseIpv4(spec.address);
  } catch (error) {
    throw bad((error as Error).message);
  }
  const port = spec.port ?? MCDIST_UDP_PORT;
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) throw bad(`bad port ${shown(spec.port)}`);
  return { kind: "udp", interface: spec.interface, address: spec.address, port };
}

function interfaceFile(name: string, file: string): string {
  try {
    return readFileSync(`/sys/class/net/${name}/${file}`, "utf8").trim();
  } catch (error) {
    throw new SnowflockError(
      "USAGE",
      `network interface ${name} not found (${(error as Error).message})`,
      "give an interface of this host (network namespace), see `ip link`",
    );
  }
}

/** The interface's own MTU, once `mtu` is checked against it. */
function checkMtu(spec: TransportSpec, mtu: number): number {
  const linkMtu = Number(interfaceFile(spec.interface, "mtu"));
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > linkMtu) {
    throw new SnowflockError("USAGE", `bad mcdist MTU ${mtu} for ${spec.interface}`, `give 576 to the interface's MTU (${linkMtu})`);
  }
  return linkMtu;
}

/** Large socket buffers: FORCE (needs CAP_NET_ADMIN) ignores net.core.*mem_max; else the capped size. */
function setBuffers(fd: number, bytes: number): void {
  for (const [force, plain, what] of [
    [SO_RCVBUFFORCE, SO_RCVBUF, "SO_RCVBUF"],
    [SO_SNDBUFFORCE, SO_SNDBUF, "SO_SNDBUF"],
  ] as const) {
    try {
      setSocketInt(fd, SOL_SOCKET, force, bytes, what);
    } catch {
      setSocketInt(fd, SOL_SOCKET, plain, bytes, what);
    }
  }
}

export function openTransport(input: TransportSpec, options: TransportOptions): Transport {
  let spec: TransportSpec;
  let linkMtu: number;
  let adopted: AdoptedRing | undefined;
  try {
    spec = checkTransportSpec(input);
    linkMtu = checkMtu(spec, options.mtu);
    adopted = spec.kind === "packet" && options.ring !== false ? adoptPrepared(options.prepared, spec.interface, linkMtu) : undefined;
  } finally {
    if (options.prepared && !adopted) closePreparedPacketRing(options.prepared);
  }
  try {
    return spec.kind === "packet" ? openPacketTransport(spec, options, linkMtu, adopted) : openUdpTransport(spec, options);
  } catch (error) {
    if (error instanceof SnowflockError && error.code !== "SYSCALL") throw error;
    throw new SnowflockError(
      "MEMORY",
      `cannot open the mcdist ${spec.kind} transport on ${spec.interface}: ${(error as Error).message}`,
      spec.kind === "packet" ? "AF_PACKET sockets need root (CAP_NET_RAW)" : undefined,
      { cause: error },
    );
  }
}

/** A socket and ring for packet transports on `interfaceName`, made now and bound only once a transport takes it. */
export function preparePacketRing(interfaceName: string, bufferBytes = DEFAULT_BUFFER_BYTES): PreparedPacketRing {
  const mtu = Number(interfaceFile(interfaceName, "mtu"));
  const fd = createPacketSocket();
  try {
    // Its geometry only: the ring's views, posted to the memtap Worker with it, cost a clone 10 ms copying 16 MiB.
    return { fd, interface: interfaceName, ring: ringGeometry(openRxRing(fd, mtu, bufferBytes)) };
  } catch (error) {
    close(fd);
    throw error;
  }
}

export function closePreparedPacketRing(prepared: PreparedPacketRing): void {
  closeRxRing(ringFromGeometry(prepared.ring));
  close(prepared.fd);
}

interface AdoptedRing {
  fd: number;
  ring: PacketRing;
}

/** The prepared socket and ring, when made for `interfaceName` at its present MTU (`linkMtu`). */
function adoptPrepared(prepared: PreparedPacketRing | undefined, interfaceName: string, linkMtu: number): AdoptedRing | undefined {
  if (prepared?.interface !== interfaceName || prepared.ring.slotSize !== ringSlotSize(linkMtu)) return undefined;
  return { fd: prepared.fd, ring: ringFromGeometry(prepared.ring) };
}

/** `linkMtu`: the interface's; `adopted`: a socket and ring made ahead, which it then owns. */
function openPacketTransport(
  spec: Extract<TransportSpec, { kind: "packet" }>,
  options: TransportOptions,
  linkMtu: number,
  adopted: AdoptedRing | undefined,
): Transport {
  const group = groupMac(options.family);
  let ring = adopted?.ring;
  const fd = adopted?.fd ?? createPacketSocket();
  let socket: PacketSocket;
  let own: Uint8Array;
  try {
    own = parseMac(interfaceFile(spec.interface, "address"));
    const bufferBytes = options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
    // Every frame on the segment is read: from a ring, not one recvfrom(2) each. Slots fit the link's largest frame.
    if (options.ring !== false) ring ??= openRxRing(fd, linkMtu, bufferBytes);
    // Bound only now, with its ring in place: hooked up once, no second grace period.
    socket = bindPacketSocket(fd, spec.interface, ETHERTYPE_MCDIST);
    setBuffers(socket.fd, bufferBytes);
    // struct packet_mreq: ifindex i32, type u16, alen u16, address[8]. Real NICs filter multicast MACs not joined.
    const mreq = new Uint8Array(16);
    const view = new DataView(mreq.buffer);
    view.setInt32(0, socket.ifindex, true);
    view.setUint16(4, PACKET_MR_MULTICAST, true);
    view.setUint16(6, 6, true);
    mreq.set(group, 8);
    setSocketOption(socket.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq, "PACKET_ADD_MEMBERSHIP");
    try {
      setSocketInt(socket.fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING");
    } catch {} // older kernels: our own frames come back and are dropped below
  } catch (error) {
    if (ring) closeRxRing(ring);
    close(fd);
    throw error;
  }
  const ownText = formatMac(own);
  const frames = ring;
  const groupDestination = packetDestination(socket, group);
  let sender: Uint8Array = own;
  const bridgeGroup = keepGroupOffGuests(spec.interface, formatMac(group));
  if (bridgeGroup?.problem && !floodReported.has(spec.interface)) {
    floodReported.add(spec.interface);
    process.stderr.write(`snowflock: mcdist on ${spec.interface}: ${bridgeGroup.problem}\n`);
  }
  return {
    kind: "packet",
    fd: socket.fd,
    localEndpoint: ownText,
    maxFrame: options.mtu,
    send(to, bytes) {
      if (to === "group") sendFrameTo(socket, groupDestination, bytes);
      else sendFrame(socket, parseMac(to), bytes);
    },
    receive(buffer) {
      for (;;) {
        if (frames) {
          const length = takeFrame(frames, buffer);
          if (length === undefined || !sameMac(lastSource(frames), own)) return length;
          continue;
        }
        const frame = receiveFrame(socket, buffer);
        if (frame === undefined) return undefined;
        if (!sameMac(frame.source, own)) {
          sender = frame.source;
          return frame.length;
        }
      }
    },
    sender: () => formatMac(frames ? lastSource(frames) : sender),
    framesDropped: () => packetStatistics(socket.fd).dropped,
    close() {
      bridgeGroup?.release();
      if (frames) closeRxRing(frames);
      close(socket.fd);
    },
  };
}

function openUdpTransport(spec: Extract<TransportSpec, { kind: "udp" }>, options: TransportOptions): Transport {
  const port = spec.port ?? MCDIST_UDP_PORT;
  const group = groupAddress(options.family);
  const joinGroup = options.joinGroup ?? true;
  const fd = openUdpSocket();
  let from: UdpPeer = { address: "0.0.0.0", port: 0 };
  let localPort: number;
  try {
    setBuffers(fd, options.bufferBytes ?? DEFAULT_BUFFER_BYTES);
    if (joinGroup) {
      // Every client listens on the family's port (multicast needs it); several on one host share it.
      setSocketInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
      localPort = bindUdp(fd, "0.0.0.0", port);
      joinMulticastGroup(fd, group, spec.address);
    } else {
      localPort = bindUdp(fd, spec.address, 0);
    }
    setMulticastInterface(fd, spec.address);
    setMulticastLoop(fd, true); // a clone on the parent's own host is family too
    setMulticastTtl(fd, 1);
  } catch (error) {
    close(fd);
    throw error;
  }
  const localEndpoint = `${spec.address}:${localPort}`;
  return {
    kind: "udp",
    fd,
    localEndpoint,
    maxFrame: options.mtu - UDP_OVERHEAD,
    send(to, bytes) {
      if (to === "group") sendUdp(fd, group, port, bytes);
      else {
        const peer = parseUdpEndpoint(to);
        sendUdp(fd, peer.address, peer.port, bytes);
      }
    },
    // Our own multicasts come back (loop is on); receivers drop them by frame type.
    receive(buffer) {
      const got = receiveUdp(fd, buffer);
      if (got === undefined) return undefined;
      from = got.from;
      return got.length;
    },
    sender: () => `${from.address}:${from.port}`,
    framesDropped: () => undefined,
    close() {
      close(fd);
    },
  };
}
