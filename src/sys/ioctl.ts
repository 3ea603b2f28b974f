import { ptr } from "bun:ffi";
import { libc } from "./libc.ts";
import { check } from "./check.ts";

export type IoctlArgument = number | bigint | NodeJS.TypedArray | DataView;

/** ioctl(2); a buffer argument is passed by address, a number by value. */
export function ioctl(fd: number, request: number, argument: IoctlArgument = 0, name?: string): number {
  const value = ArrayBuffer.isView(argument) ? ptr(argument) : argument;
  return check("ioctl", libc.ioctl(fd, request, value), name ?? `0x${request.toString(16)}`);
}
