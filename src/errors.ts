/**
 * Every error a user can see is a SnowflockError: a stable code for scripts, a message that says
 * what went wrong, and a hint that says what to do about it.
 */
export type ErrorCode =
  | "SYSCALL" // a libc call failed (see SyscallError)
  | "KVM_UNAVAILABLE" // no /dev/kvm, no permission, or a required capability missing
  | "XEN_UNAVAILABLE" // no Xen dom0 to drive: no hypervisor or privcmd, no libraries, a domU, an unknown release
  | "USAGE" // bad command-line input
  | "WORKLOAD" // unknown workload or bad workload parameters
  | "GUEST_IMAGE" // the guest ELF could not be loaded
  | "GUEST_CRASH" // the guest stopped in a way that is not a clean exit
  | "VM_STATE" // an operation that the VM's current state does not allow
  | "NOT_FOUND" // no VM by that name
  | "CONTROL" // the control socket of a VM failed or answered badly
  | "DESCRIPTOR" // a VM descriptor is malformed, corrupted, truncated or of another version
  | "MEMORY" // memory-on-demand failed: the memory server is unreachable, silent or sent bad pages
  | "DISK" // a disk image could not be frozen or overlaid for clones (a full filesystem, an I/O error)
  | "NET" // a VM's network device could not be made: no tap support, no permission, a bad bridge
  | "INTERNAL";

export class SnowflockError extends Error {
  override name = "SnowflockError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly hint?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }

  /** One line for the terminal: the message and, when there is one, what to do. */
  render(): string {
    return this.hint ? `${this.message} (${this.hint})` : this.message;
  }
}

/**
 * An untrusted value (from a guest, a peer or a file) made safe to put into an error message:
 * String() and JSON.stringify() can throw on such values (a "toString" key, deep nesting) or
 * print megabytes, so only short primitives are shown as they are.
 */
export function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint" || value === null || value === undefined)
    return String(value);
  return Array.isArray(value) ? "an array" : typeof value === "object" ? "an object" : `a ${typeof value}`;
}
