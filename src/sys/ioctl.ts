import { ptr } from "bun:ffi";
import { lastErrno, libc } from "./libc.ts";
import { check } from "./check.ts";
import { EINTR } from "./constants.ts";

export type IoctlArgument = number | bigint | NodeJS.TypedArray | DataView;

function address(argument: IoctlArgument): number | bigint {
  return ArrayBuffer.isView(argument) ? ptr(argument) : argument;
}

/** What an error names the request by: its name where the caller gives one, else its number. */
function label(request: number, name: string | undefined): string {
  return name ?? `0x${request.toString(16)}`;
}

/** ioctl(2); a buffer argument is passed by address, a number by value. */
export function ioctl(fd: number, request: number, argument: IoctlArgument = 0, name?: string): number {
  return check("ioctl", libc.ioctl(fd, request, address(argument)), label(request, name));
}

/**
 * ioctl(2) made again when a signal interrupted it (EINTR): only for requests that either
 * happen whole or leave nothing behind, such as creating a VM or a vCPU.
 */
export function ioctlRestarting(fd: number, request: number, argument: IoctlArgument = 0, name?: string): number {
  for (;;) {
    const result = libc.ioctl(fd, request, address(argument)) as number;
    if (result !== -1 || lastErrno() !== EINTR) return check("ioctl", result, label(request, name));
  }
}
