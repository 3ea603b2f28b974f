/**
 * Which backend a command works with, chosen once per command: `--backend kvm|xen`, else the
 * one this host calls for (Xen in a Xen dom0, else KVM). The chosen backend is imported only
 * then, so a KVM host never loads Xen's libraries and a dom0 never opens /dev/kvm.
 */
import { SnowflockError } from "../errors.ts";
import { BACKENDS, type Backend, type BackendName, type MachineFactory } from "./backend.ts";

export function parseBackend(value: unknown): BackendName | undefined {
  if (value === undefined) return undefined;
  if (!BACKENDS.includes(value as BackendName)) throw new SnowflockError("USAGE", `bad --backend '${String(value)}'`, "choose kvm or xen");
  return value as BackendName;
}

/** The backend this host calls for: Xen in a Xen dom0 (privcmd or xenfs's control_d), else KVM. */
export async function detectedBackend(): Promise<BackendName> {
  const { xenDetected } = await import("./xen/detect.ts");
  return xenDetected() ? "xen" : "kvm";
}

export async function loadBackend(name: BackendName): Promise<Backend> {
  return name === "kvm" ? (await import("./kvm/backend.ts")).kvmBackend : (await import("./xen/backend.ts")).xenBackend;
}

/** --backend as given, else the detected one; refuses a backend that does not serve `command`. */
export async function selectBackend(value: unknown, command: string): Promise<Backend> {
  const backend = await loadBackend(parseBackend(value) ?? (await detectedBackend()));
  if (!backend.commands.includes(command)) {
    throw new SnowflockError("USAGE", `snowflock ${command} does not run on ${backend.name}`, backend.usage);
  }
  return backend;
}

/** The machines of a backend that snowflock runs itself (a VMM process restoring a descriptor of that backend). */
export async function machineFactory(name: BackendName): Promise<MachineFactory> {
  const backend = await loadBackend(name);
  if (!backend.machines) throw new SnowflockError("USAGE", `snowflock does not run ${name} machines in its own processes`, backend.usage);
  return backend.machines;
}
