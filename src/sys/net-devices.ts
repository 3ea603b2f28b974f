/**
 * Network devices through ioctls: tap devices (/dev/net/tun, TUNSETIFF), Linux bridges
 * (SIOCBRADDBR, SIOCBRADDIF) and interface flags. struct ifreq: name[16], then a 24-byte union
 * (ifr_flags as a short, ifr_ifindex as an int, both at offset 16).
 */
import { AF_INET, O_NONBLOCK, O_RDWR, SOCK_CLOEXEC, SOCK_DGRAM } from "./constants.ts";
import { check } from "./check.ts";
import { close, open } from "./files.ts";
import { ioctl } from "./ioctl.ts";
import { libc } from "./libc.ts";

export const IFNAMSIZ = 16;
const IFREQ_BYTES = 40;
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFINDEX = 0x8933;
const SIOCBRADDBR = 0x89a0;
const SIOCBRADDIF = 0x89a2;
export const IFF_UP = 0x1;

function ifreq(name: string): { bytes: Uint8Array; view: DataView } {
  const encoded = new TextEncoder().encode(name);
  if (encoded.byteLength >= IFNAMSIZ) throw new RangeError(`interface name '${name}' is longer than ${IFNAMSIZ - 1} bytes`);
  const bytes = new Uint8Array(IFREQ_BYTES);
  bytes.set(encoded);
  return { bytes, view: new DataView(bytes.buffer) };
}

function nameOf(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(bytes.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end));
}

/** A socket for interface ioctls; the caller closes it. */
function controlSocket(): number {
  return check("socket", libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "AF_INET");
}

function withControlSocket<T>(body: (fd: number) => T): T {
  const fd = controlSocket();
  try {
    return body(fd);
  } finally {
    close(fd);
  }
}

/**
 * A tap device (frames without packet information), non-blocking, named after `template`
 * ("sf%d": the kernel picks the number). It exists while the descriptor is open.
 */
export function openTap(template: string): { fd: number; name: string } {
  const fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  try {
    const request = ifreq(template);
    request.view.setUint16(16, IFF_TAP | IFF_NO_PI, true);
    ioctl(fd, TUNSETIFF, request.bytes, "TUNSETIFF");
    return { fd, name: nameOf(request.bytes) };
  } catch (error) {
    close(fd);
    throw error;
  }
}

export function addBridge(name: string): void {
  withControlSocket((fd) => ioctl(fd, SIOCBRADDBR, ifreq(name).bytes, `SIOCBRADDBR ${name}`));
}

export function interfaceIndexOf(name: string): number {
  return withControlSocket((fd) => {
    const request = ifreq(name);
    ioctl(fd, SIOCGIFINDEX, request.bytes, `SIOCGIFINDEX ${name}`);
    return request.view.getInt32(16, true);
  });
}

export function addBridgePort(bridge: string, port: string): void {
  const index = interfaceIndexOf(port);
  withControlSocket((fd) => {
    const request = ifreq(bridge);
    request.view.setInt32(16, index, true);
    ioctl(fd, SIOCBRADDIF, request.bytes, `SIOCBRADDIF ${bridge} ${port}`);
  });
}

export function interfaceFlags(name: string): number {
  return withControlSocket((fd) => {
    const request = ifreq(name);
    ioctl(fd, SIOCGIFFLAGS, request.bytes, `SIOCGIFFLAGS ${name}`);
    return request.view.getUint16(16, true);
  });
}

export function setInterfaceFlags(name: string, flags: number): void {
  withControlSocket((fd) => {
    const request = ifreq(name);
    request.view.setUint16(16, flags, true);
    ioctl(fd, SIOCSIFFLAGS, request.bytes, `SIOCSIFFLAGS ${name}`);
  });
}
