/**
 * The one error a Xen command gives where there is no Xen dom0 it can drive: no hypervisor or
 * privcmd device, missing libraries, a domU instead of dom0, or a release it does not know.
 */
import { SnowflockError } from "../../errors.ts";

const XEN_UNAVAILABLE = "XEN_UNAVAILABLE";

export function xenUnavailable(message: string, hint?: string, cause?: unknown): SnowflockError {
  return new SnowflockError(XEN_UNAVAILABLE, message, hint, cause === undefined ? undefined : { cause });
}

export function isXenUnavailable(error: unknown): error is SnowflockError {
  return error instanceof SnowflockError && error.code === XEN_UNAVAILABLE;
}
