/**
 * What one VM's guest may make its host keep: queued family messages, console lines and log,
 * checkpoints, tickets. The guest is untrusted, so each of these is capped; a guest past a cap
 * gets SF_EDQUOT from the call (guest/ABI.md), or loses its oldest console lines, and the VMM goes on.
 * SNOWFLOCK_GUEST_LIMITS (e.g. `inbox-messages=64,console-log=1M`) overrides the defaults.
 */
import { SnowflockError } from "../errors.ts";
import { formatSize, parseSize } from "../size.ts";

export const GUEST_LIMITS_VARIABLE = "SNOWFLOCK_GUEST_LIMITS";

export interface GuestLimits {
  /** Messages waiting in one VM's inbox for its sf_recv, and their bytes. */
  inboxMessages: number;
  inboxBytes: number;
  /** Recent console lines the VMM keeps in memory (for --json and status), in bytes. */
  consoleMemory: number;
  /** Bytes of NAME.log before it is rotated to NAME.log.1 (so at most twice this on disk). */
  consoleLog: number;
  /** Checkpoints (sf_checkpoint_parent) one VM holds: each keeps a frozen image of its memory. */
  checkpoints: number;
  /** Tickets one VM holds that are not yet joined. */
  tickets: number;
}

export const DEFAULT_GUEST_LIMITS: GuestLimits = {
  inboxMessages: 1024,
  inboxBytes: 16 * 2 ** 20,
  consoleMemory: 4 * 2 ** 20,
  consoleLog: 8 * 2 ** 20,
  checkpoints: 4,
  tickets: 64,
};

/** Each limit's name in SNOWFLOCK_GUEST_LIMITS, and whether it is a size (K/M/G) or a count. */
const KEYS: Record<string, { field: keyof GuestLimits; size: boolean }> = {
  "inbox-messages": { field: "inboxMessages", size: false },
  "inbox-bytes": { field: "inboxBytes", size: true },
  "console-memory": { field: "consoleMemory", size: true },
  "console-log": { field: "consoleLog", size: true },
  checkpoints: { field: "checkpoints", size: false },
  tickets: { field: "tickets", size: false },
};

/** The limits from the environment; a bad entry is an error naming the variable. */
export function guestLimits(env: Record<string, string | undefined> = process.env): GuestLimits {
  const limits = { ...DEFAULT_GUEST_LIMITS };
  const text = env[GUEST_LIMITS_VARIABLE] ?? "";
  for (const entry of text.split(",").filter((e) => e.trim() !== "")) {
    const [key = "", value = ""] = entry.split("=").map((part) => part.trim());
    const spec = KEYS[key];
    const parsed = spec?.size ? parseSize(value) : /^\d+$/.test(value) ? Number(value) : undefined;
    if (!spec || parsed === undefined || !Number.isSafeInteger(parsed) || parsed < 0) {
      const hint = `give KEY=VALUE pairs separated by commas; keys: ${describeDefaults()}`;
      throw new SnowflockError("USAGE", `bad ${GUEST_LIMITS_VARIABLE} entry '${entry}'`, hint);
    }
    limits[spec.field] = parsed;
  }
  return limits;
}

/** `inbox-messages=1024, inbox-bytes=16M, ...`: every key with its default. */
function describeDefaults(): string {
  return Object.entries(KEYS)
    .map(([key, { field, size }]) => `${key}=${size ? formatSize(DEFAULT_GUEST_LIMITS[field]) : DEFAULT_GUEST_LIMITS[field]}`)
    .join(", ");
}
