/**
 * A VM's network: a tap device of its own on its family's bridge (made if missing, and up), so a
 * VM and its clones on one host share one Ethernet segment (each VM with a MAC of its own:
 * mac.ts).
 */
import { existsSync } from "node:fs";
import { SnowflockError } from "../errors.ts";
import { EEXIST, ENOENT, EPERM } from "../sys/constants.ts";
import { SyscallError } from "../sys/errno.ts";
import { close } from "../sys/files.ts";
import { addBridge, addBridgePort, IFF_UP, IFNAMSIZ, interfaceFlags, openTap, setInterfaceFlags } from "../sys/net-devices.ts";

export const DEFAULT_BRIDGE = "snowflock0";
const TAP_TEMPLATE = "sf%d";
const BRIDGE_NAME = /^[A-Za-z0-9_.-]+$/;

/** What `run --net` asks for: a network device on this bridge. */
export interface NetAttachment {
  bridge: string;
}

export interface Tap {
  fd: number;
  name: string;
  bridge: string;
}

/** Why `name` cannot be a bridge's name, or undefined. */
export function badBridgeName(name: string): string | undefined {
  if (name.length === 0 || name.length >= IFNAMSIZ) return `a bridge name has 1 to ${IFNAMSIZ - 1} characters`;
  if (!BRIDGE_NAME.test(name)) return "a bridge name has letters, digits, '_', '.' and '-' only";
  return undefined;
}

export function checkBridgeName(name: string): string {
  const why = badBridgeName(name);
  if (why) throw new SnowflockError("USAGE", `bad bridge name '${name}': ${why}`);
  return name;
}

function netError(error: unknown, what: string): never {
  if (error instanceof SyscallError) {
    if (error.errno === ENOENT && error.call === "open")
      throw new SnowflockError("NET", `${what}: there is no /dev/net/tun`, "load the tun module (modprobe tun)", { cause: error });
    if (error.errno === EPERM)
      throw new SnowflockError("NET", `${what}: not permitted`, "run snowflock as root (tap devices and bridges need CAP_NET_ADMIN)", {
        cause: error,
      });
    throw new SnowflockError("NET", `${what}: ${error.message}`, undefined, { cause: error });
  }
  throw error;
}

function bringUp(name: string): void {
  const flags = interfaceFlags(name);
  if (!(flags & IFF_UP)) setInterfaceFlags(name, flags | IFF_UP);
}

/** Without udev (a minimal host) /dev/net/tun appears only once the tun module is loaded. */
export function ensureTunDevice(): void {
  if (!existsSync("/dev/net/tun")) Bun.spawnSync(["modprobe", "tun"], { stdout: "ignore", stderr: "ignore" });
}

/** A new tap device, up, as a port of `bridge` (made and brought up first if missing). */
export function openBridgedTap(bridge: string): Tap {
  checkBridgeName(bridge);
  try {
    addBridge(bridge);
  } catch (error) {
    if (!(error instanceof SyscallError && error.errno === EEXIST)) netError(error, `making the bridge ${bridge}`);
    if (!existsSync(`/sys/class/net/${bridge}/bridge`))
      throw new SnowflockError("NET", `${bridge} is a network interface but not a bridge`, "name a bridge, or a name not in use");
  }
  let tap: { fd: number; name: string } | undefined;
  try {
    bringUp(bridge);
    ensureTunDevice();
    tap = openTap(TAP_TEMPLATE);
    bringUp(tap.name);
    addBridgePort(bridge, tap.name);
    return { ...tap, bridge };
  } catch (error) {
    if (tap) close(tap.fd);
    netError(error, `a tap device on the bridge ${bridge}`);
  }
}

export function closeTap(tap: Tap): void {
  close(tap.fd);
}
