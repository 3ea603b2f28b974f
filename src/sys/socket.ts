/** Blocking Unix and TCP stream sockets through libc, for threads that cannot use Bun's event loop. */
import { libc } from "./libc.ts";
import { check } from "./check.ts";
import { close } from "./files.ts";
import { AF_INET, AF_UNIX, IPPROTO_TCP, MSG_NOSIGNAL, SOCK_CLOEXEC, SOCK_STREAM, TCP_NODELAY } from "./constants.ts";

/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH_MAX = 108;

/** socket(AF_UNIX, SOCK_STREAM) + connect(path); returns the connected fd. */
export function connectUnix(path: string): number {
  const name = new TextEncoder().encode(path);
  if (name.byteLength >= SUN_PATH_MAX) throw new RangeError(`socket path is longer than ${SUN_PATH_MAX - 1} bytes: ${path}`);
  const address = new Uint8Array(2 + SUN_PATH_MAX);
  new DataView(address.buffer).setUint16(0, AF_UNIX, true);
  address.set(name, 2);
  const fd = check("socket", libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    check("connect", libc.connect(fd, address, 2 + name.byteLength + 1), path);
  } catch (error) {
    close(fd);
    throw error;
  }
  return fd;
}

/** send(2) with MSG_NOSIGNAL: a peer that went away gives EPIPE, not a process-killing SIGPIPE. */
export function send(fd: number, buffer: Uint8Array): number {
  return check("send", libc.send(fd, buffer, buffer.byteLength, MSG_NOSIGNAL) as number);
}

/** socket(AF_INET, SOCK_STREAM) + connect(address:port), TCP_NODELAY set; returns the connected fd. */
export function connectTcp(address: string, port: number): number {
  const octets = address.split(".").map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255))
    throw new RangeError(`not an IPv4 address: ${address}`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`not a TCP port: ${port}`);
  // struct sockaddr_in: family u16, port u16 (network order), address (network order), zero[8].
  const sockaddr = new Uint8Array(16);
  const view = new DataView(sockaddr.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  sockaddr.set(octets, 4);
  const fd = check("socket", libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    check("setsockopt", libc.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Int32Array([1]), 4), "TCP_NODELAY");
    check("connect", libc.connect(fd, sockaddr, sockaddr.byteLength), `${address}:${port}`);
  } catch (error) {
    close(fd);
    throw error;
  }
  return fd;
}
