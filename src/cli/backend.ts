/**
 * `--backend kvm|xen`, which every command takes: by default the backend this host calls for
 * (Xen in a Xen dom0, else KVM). Commands that only exist on KVM refuse xen in one line.
 */
import { SnowflockError } from "../errors.ts";

export const BACKENDS = ["kvm", "xen"] as const;
export type Backend = (typeof BACKENDS)[number];

/** Commands with a Xen implementation; the rest are KVM only. */
export const XEN_COMMANDS = ["fork", "ls", "kill", "agent", "doctor", "bench"];

export function parseBackend(value: unknown): Backend | undefined {
  if (value === undefined) return undefined;
  if (!BACKENDS.includes(value as Backend)) throw new SnowflockError("USAGE", `bad --backend '${String(value)}'`, "choose kvm or xen");
  return value as Backend;
}

/** The backend this host calls for: Xen in a Xen dom0 (privcmd or xenfs's control_d), else KVM. */
export async function detectedBackend(): Promise<Backend> {
  const { xenDetected } = await import("../backend/xen/detect.ts");
  return xenDetected() ? "xen" : "kvm";
}

/** --backend as given, else the detected one; refuses xen for a KVM-only command. */
export async function chosenBackend(value: unknown, command: string): Promise<Backend> {
  const backend = parseBackend(value) ?? (await detectedBackend());
  if (backend === "xen" && !XEN_COMMANDS.includes(command)) {
    throw new SnowflockError("USAGE", `snowflock ${command} runs on KVM only`, `on Xen: start domains with xl create, then use ${XEN_COMMANDS.filter((c) => c !== "bench").join(", ")} (--backend xen)`);
  }
  return backend;
}
