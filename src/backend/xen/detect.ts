/**
 * Is this a Xen host? Answered from the filesystem alone, so that the CLI can pick its default
 * backend without loading any Xen library.
 */
import { existsSync, readFileSync } from "node:fs";

/** Linux's privcmd device; libxencall tries the first, then the xenfs one. */
export const PRIVCMD_PATHS = ["/dev/xen/privcmd", "/proc/xen/privcmd"] as const;

/** The privcmd node libxenctrl would open, or undefined when there is none. */
export function privcmdPath(): string | undefined {
  return PRIVCMD_PATHS.find((path) => existsSync(path));
}

/** xenfs says "control_d" in /proc/xen/capabilities in dom0 (and only there). */
export function isControlDomain(): boolean {
  try {
    return readFileSync("/proc/xen/capabilities", "utf8").split(/\s+/).includes("control_d");
  } catch {
    return false;
  }
}

/** Linux's name for the hypervisor it runs on ("xen"), when it has CONFIG_XEN_SYS_HYPERVISOR. */
export function hypervisorType(): string | undefined {
  try {
    return readFileSync("/sys/hypervisor/type", "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Whether Xen is the backend this host calls for (a domU with privcmd counts: it is told why not). */
export function xenDetected(): boolean {
  return privcmdPath() !== undefined || isControlDomain();
}
