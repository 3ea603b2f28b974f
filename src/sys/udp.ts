/**
 * Blocking UDP sockets (and the IPv4 multicast options they need) through libc, for Worker
 * threads that cannot use Bun's event loop. Mechanics only: which group, port or interface to use
 * is the caller's business. Addresses are dotted-quad strings; ports are host-order numbers.
 */
import { dlopen, FFIType as T, ptr } from "bun:ffi";
import { check } from "./check.ts";
import {
  AF_INET,
  EAGAIN,
  IP_ADD_MEMBERSHIP,
  IP_MULTICAST_IF,
  IP_MULTICAST_LOOP,
  IP_MULTICAST_TTL,
  IPPROTO_IP,
  MSG_DONTWAIT,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
} from "./constants.ts";
import { SyscallError } from "./errno.ts";
import { parseIpv4 } from "./inet.ts";
import { lastErrno, libc } from "./libc.ts";

/** getsockname is not among libc.ts's symbols yet; bound here (same libc, same per-thread errno). */
const extra = dlopen("libc.so.6", {
  getsockname: { args: [T.i32, T.ptr, T.ptr], returns: T.i32 },
}).symbols;

const SOCKADDR_IN_SIZE = 16;

export interface UdpPeer {
  address: string;
  port: number;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`not a UDP port: ${port}`);
}

/** struct sockaddr_in: family u16, port u16 (network order), address (network order), zero[8]. */
function sockaddrIn(address: string, port: number): Uint8Array {
  checkPort(port);
  const out = new Uint8Array(SOCKADDR_IN_SIZE);
  const view = new DataView(out.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  out.set(parseIpv4(address), 4);
  return out;
}

function peerOf(sockaddr: Uint8Array): UdpPeer {
  return {
    address: Array.from(sockaddr.subarray(4, 8)).join("."),
    port: new DataView(sockaddr.buffer, sockaddr.byteOffset).getUint16(2, false),
  };
}

/** socket(AF_INET, SOCK_DGRAM): a blocking UDP socket (close-on-exec). */
export function openUdpSocket(): number {
  return check("socket", libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "AF_INET/SOCK_DGRAM");
}

/** bind(address:port); port 0 takes an ephemeral port. Returns the port actually bound. */
export function bindUdp(fd: number, address: string, port: number): number {
  check("bind", libc.bind(fd, sockaddrIn(address, port), SOCKADDR_IN_SIZE), `${address}:${port}`);
  return localUdpAddress(fd).port;
}

/** getsockname(2). */
export function localUdpAddress(fd: number): UdpPeer {
  const out = new Uint8Array(SOCKADDR_IN_SIZE);
  const length = new Uint32Array([SOCKADDR_IN_SIZE]);
  check("getsockname", extra.getsockname(fd, out, ptr(length)));
  return peerOf(out);
}

/** setsockopt(2) with raw option bytes (any level; e.g. SOL_SOCKET buffers or SOL_PACKET options). */
export function setSocketOption(fd: number, level: number, name: number, value: Uint8Array, what: string): void {
  check("setsockopt", libc.setsockopt(fd, level, name, value, value.byteLength), what);
}

export function setSocketInt(fd: number, level: number, name: number, value: number, what: string): void {
  setSocketOption(fd, level, name, new Uint8Array(new Int32Array([value]).buffer), what);
}

/** IP_ADD_MEMBERSHIP: join `group` on the interface that has address `interfaceAddress`. */
export function joinMulticastGroup(fd: number, group: string, interfaceAddress: string): void {
  const mreq = new Uint8Array(8);
  mreq.set(parseIpv4(group), 0);
  mreq.set(parseIpv4(interfaceAddress), 4);
  setSocketOption(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, mreq, `IP_ADD_MEMBERSHIP ${group} on ${interfaceAddress}`);
}

/** IP_MULTICAST_IF: multicast datagrams leave through the interface that has this address. */
export function setMulticastInterface(fd: number, interfaceAddress: string): void {
  setSocketOption(fd, IPPROTO_IP, IP_MULTICAST_IF, parseIpv4(interfaceAddress), `IP_MULTICAST_IF ${interfaceAddress}`);
}

export function setMulticastLoop(fd: number, loop: boolean): void {
  setSocketInt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, loop ? 1 : 0, "IP_MULTICAST_LOOP");
}

export function setMulticastTtl(fd: number, ttl: number): void {
  setSocketInt(fd, IPPROTO_IP, IP_MULTICAST_TTL, ttl, "IP_MULTICAST_TTL");
}

/** sendto(address:port); blocks while the socket's send buffer is full. */
export function sendUdp(fd: number, address: string, port: number, payload: Uint8Array): number {
  return check(
    "sendto",
    libc.sendto(fd, payload, payload.byteLength, 0, sockaddrIn(address, port), SOCKADDR_IN_SIZE) as number,
    `${address}:${port}`,
  );
}

/** One waiting datagram and its sender, or undefined if none is waiting (never blocks). */
export function receiveUdp(fd: number, buffer: Uint8Array): { length: number; from: UdpPeer } | undefined {
  const from = new Uint8Array(SOCKADDR_IN_SIZE);
  const fromLength = new Uint32Array([SOCKADDR_IN_SIZE]);
  const n = libc.recvfrom(fd, buffer, buffer.byteLength, MSG_DONTWAIT, from, ptr(fromLength)) as number;
  if (n < 0) {
    const errno = lastErrno();
    if (errno === EAGAIN) return undefined;
    throw new SyscallError("recvfrom", errno);
  }
  return { length: n, from: peerOf(from) };
}
