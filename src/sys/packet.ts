/**
 * AF_PACKET sockets (SOCK_DGRAM: the kernel writes the Ethernet header from the address we give;
 * the frame on the wire is a plain Ethernet frame with our EtherType). struct sockaddr_ll:
 * family u16, protocol u16 (network order), ifindex i32, hatype u16, pkttype u8, halen u8, addr[8].
 */
import { check } from "./check.ts";
import { AF_PACKET, EAGAIN, MSG_DONTWAIT, PACKET_STATISTICS, SOCK_CLOEXEC, SOCK_DGRAM, SOL_PACKET } from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { close } from "./files.ts";
import { lastErrno, libc } from "./libc.ts";

const SOCKADDR_LL_SIZE = 20;

export interface PacketSocket {
  fd: number;
  ifindex: number;
  ethertype: number;
}

function sockaddrLl(ethertype: number, ifindex: number, mac?: Uint8Array): Uint8Array {
  const address = new Uint8Array(SOCKADDR_LL_SIZE);
  const v = new DataView(address.buffer);
  v.setUint16(0, AF_PACKET, true);
  v.setUint16(2, ethertype, false);
  v.setInt32(4, ifindex, true);
  if (mac) {
    v.setUint8(11, mac.byteLength);
    address.set(mac, 12);
  }
  return address;
}

export function interfaceIndex(name: string): number {
  const index = libc.if_nametoindex(new TextEncoder().encode(`${name}\0`));
  if (index === 0) throw new SyscallError("if_nametoindex", lastErrno(), name);
  return index;
}

/**
 * A packet socket that receives nothing yet: made with protocol 0, it is hooked up once, by
 * bindPacketSocket(). One made listening to an EtherType would be unhooked again by bind(),
 * which waits for an RCU grace period (10-30 ms on a busy host). A receive ring is set up between
 * the two (packet-ring.ts).
 */
export function createPacketSocket(): number {
  return check("socket", libc.socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "AF_PACKET");
}

/** Binds `fd` (from createPacketSocket) to one interface and one EtherType: from now on it receives. */
export function bindPacketSocket(fd: number, interfaceName: string, ethertype: number): PacketSocket {
  const ifindex = interfaceIndex(interfaceName);
  check("bind", libc.bind(fd, sockaddrLl(ethertype, ifindex), SOCKADDR_LL_SIZE), interfaceName);
  return { fd, ifindex, ethertype };
}

/** A packet socket bound to one interface and one EtherType. */
export function openPacketSocket(interfaceName: string, ethertype: number): PacketSocket {
  const fd = createPacketSocket();
  try {
    return bindPacketSocket(fd, interfaceName, ethertype);
  } catch (error) {
    close(fd);
    throw error;
  }
}

/** The struct sockaddr_ll that sends on `socket` to Ethernet address `mac` (6 bytes): made once for a destination sent to often. */
export function packetDestination(socket: PacketSocket, mac: Uint8Array): Uint8Array {
  return sockaddrLl(socket.ethertype, socket.ifindex, mac);
}

/** Sends one frame with `payload` to `destination` (packetDestination's). */
export function sendFrameTo(socket: PacketSocket, destination: Uint8Array, payload: Uint8Array): number {
  return check("sendto", libc.sendto(socket.fd, payload, payload.byteLength, 0, destination, SOCKADDR_LL_SIZE) as number);
}

/** Sends one frame with `payload` to Ethernet address `destination` (6 bytes). */
export function sendFrame(socket: PacketSocket, destination: Uint8Array, payload: Uint8Array): number {
  return sendFrameTo(socket, packetDestination(socket, destination), payload);
}

/** Where recvfrom writes the sender's address: one per thread, reused (a receiver reads every frame on its segment). */
const from = new Uint8Array(SOCKADDR_LL_SIZE);
const fromView = new DataView(from.buffer);
const fromLength = new Uint32Array(1);

/**
 * One received frame (its length in `buffer`, the sender's Ethernet address and the EtherType), or
 * undefined if none is waiting. `source` is a view that the next receiveFrame() overwrites.
 */
export function receiveFrame(
  socket: PacketSocket,
  buffer: Uint8Array,
): { length: number; source: Uint8Array; protocol: number } | undefined {
  fromLength[0] = SOCKADDR_LL_SIZE;
  const n = libc.recvfrom(socket.fd, buffer, buffer.byteLength, MSG_DONTWAIT, from, fromLength) as number;
  if (n < 0) {
    const errno = lastErrno();
    if (errno === EAGAIN) return undefined;
    throw new SyscallError("recvfrom", errno);
  }
  return { length: n, source: from.subarray(12, 18), protocol: fromView.getUint16(2, false) };
}

/**
 * The frames the kernel received for packet socket `fd`, and those it dropped because the socket's
 * ring or buffer was full, since the last call (PACKET_STATISTICS resets them on each read).
 */
export function packetStatistics(fd: number): { received: number; dropped: number } {
  // struct tpacket_stats: tp_packets u32 (counting drops), tp_drops u32 (TPACKET_V3 adds a third).
  const stats = new Uint32Array(3);
  const length = new Uint32Array([stats.byteLength]);
  check("getsockopt", libc.getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, stats, length), "PACKET_STATISTICS");
  return { received: stats[0]! - stats[1]!, dropped: stats[1]! };
}
