/**
 * What the agents of a cluster's dom0s tell each other about a family of domUs spread over their
 * hosts (the control plane's `family` operation, signed like every request): a clone on one host
 * ended (with sf exit's status and result, or killed), end a clone, deliver a family message.
 * A member is named by its parent's host, the parent's domid there, and its clone ID (0: the parent).
 * Checked field by field: the agent acts on it.
 */
import { SnowflockError } from "../errors.ts";
import { scaledTimeout } from "../timeouts.ts";
import { EXIT_RESULT } from "../guest/hypercalls.ts";

/**
 * How long an agent may take to end clones (kill, end-family): each `libxl destroy` takes seconds
 * on a busy host, longer than a control request's usual answer.
 */
export const END_CLONES_TIMEOUT_MS = scaledTimeout(60_000);

/** A family message between domUs (sf send): one word of printable ASCII. */
export const FAMILY_MESSAGE = /^[\x21-\x7e]{1,128}$/;

export type FamilyEvent =
  /** To the parent's host: clone `cloneId` of the parent domain ended (status from sf exit, or CloneStatus). */
  | { event: "ended"; parentDomain: number; cloneId: number; status: number; result?: string }
  /** End that clone, if it runs on this host. */
  | { event: "kill"; parentHost: string; parentDomain: number; cloneId: number }
  /** End every clone of that parent that runs on this host (`snowflock kill --cluster`). */
  | { event: "end-family"; parentHost: string; parentDomain: number }
  /** Put `message` from member `from` into member `to`'s inbox, if it runs on this host. */
  | { event: "message"; parentHost: string; parentDomain: number; to: number; from: number; message: string };

/** Whether the member was found here (for a message: whether its inbox took it; for end-family: the clones ended). */
export interface FamilyEventAnswer {
  found: boolean;
  full?: boolean;
  ended?: string[];
}

function fail(problem: string): never {
  throw new SnowflockError("USAGE", `bad family event: ${problem}`);
}

const isCloneId = (value: unknown, min: number) => Number.isInteger(value) && (value as number) >= min && (value as number) <= 1_000_000;
const isDomid = (value: unknown) => Number.isInteger(value) && (value as number) >= 1 && (value as number) <= 0x7fef;

export function checkFamilyEvent(value: unknown): FamilyEvent {
  if (typeof value !== "object" || value === null) fail("not an object");
  const e = value as Record<string, unknown>;
  if (!isDomid(e.parentDomain)) fail("parentDomain must be a domid");
  const parentDomain = e.parentDomain as number;
  const parentHost = () => (typeof e.parentHost === "string" && e.parentHost.length <= 64 ? e.parentHost : fail("no parentHost"));
  switch (e.event) {
    case "ended": {
      if (!isCloneId(e.cloneId, 1)) fail("cloneId must be a clone's");
      if (!Number.isInteger(e.status) || (e.status as number) < -255 || (e.status as number) > 255) fail("bad status");
      if (e.result !== undefined && (typeof e.result !== "string" || !EXIT_RESULT.test(e.result))) fail("bad result");
      return {
        event: "ended",
        parentDomain,
        cloneId: e.cloneId as number,
        status: e.status as number,
        ...(e.result !== undefined && { result: e.result as string }),
      };
    }
    case "kill":
      if (!isCloneId(e.cloneId, 1)) fail("cloneId must be a clone's");
      return { event: "kill", parentHost: parentHost(), parentDomain, cloneId: e.cloneId as number };
    case "end-family":
      return { event: "end-family", parentHost: parentHost(), parentDomain };
    case "message":
      if (!isCloneId(e.to, 0) || !isCloneId(e.from, 0)) fail("to and from must be clone IDs");
      if (typeof e.message !== "string" || !FAMILY_MESSAGE.test(e.message)) fail("bad message");
      return {
        event: "message",
        parentHost: parentHost(),
        parentDomain,
        to: e.to as number,
        from: e.from as number,
        message: e.message,
      };
    default:
      fail("event must be ended, kill, end-family or message");
  }
}
