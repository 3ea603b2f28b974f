/**
 * What the fork benchmark forks: the built-in guest's `serve` workload (it prints a tick line
 * once a second: BUILTIN_WORKLOAD), or the user's own Linux (`--kernel`, `--initrd`, `--cmdline`), booted the same way
 * by snowflock and by the QEMU peer. A guest is ready once its console shows `ready` (a tick line;
 * for a kernel, the text given, else a console that has printed and then been quiet for a while).
 */
import { DEFAULT_KERNEL_CMDLINE } from "../guest/kernel-guest.ts";

export type BenchGuest = { kind: "builtin" } | { kind: "kernel"; kernel: string; initrd?: string; cmdline?: string; ready?: string };

const TICK = /tick \d+ id \d+/;

/**
 * The built-in guest as both snowflock and the QEMU peer run it. A tick a second, not serve's
 * default ten: each tick is two exits to the VMM, and ten a second in each of 32 running clones
 * took the nested host's one core from the clones still starting (T(32) cow 9.5 s there, ondemand 6.6 s).
 */
export const BUILTIN_WORKLOAD = ["serve", "period=1000"];
/** A kernel guest with no ready text counts as booted once its console has been quiet this long. */
export const QUIET_MS = 2000;

export function kernelCmdline(guest: Extract<BenchGuest, { kind: "kernel" }>): string {
  return guest.cmdline ?? DEFAULT_KERNEL_CMDLINE;
}

/** Whether a console log `text`, unchanged for `quietMs`, shows the guest ready. */
export function consoleReady(guest: BenchGuest, text: string, quietMs: number): boolean {
  if (guest.kind === "builtin") return TICK.test(text);
  if (guest.ready !== undefined) return text.includes(guest.ready);
  return text.length > 0 && quietMs >= QUIET_MS;
}

/** `snowflock run` arguments that boot the guest (before --detach, --name, --mem). */
export function runArguments(guest: BenchGuest): string[] {
  if (guest.kind === "builtin") return ["run", ...BUILTIN_WORKLOAD];
  return ["run", "--kernel", guest.kernel, ...(guest.initrd ? ["--initrd", guest.initrd] : []), "--cmdline", kernelCmdline(guest)];
}

/** How the guest reads in a report's title. */
export function guestTitle(guest: BenchGuest): string {
  return guest.kind === "builtin" ? "serve VM" : `Linux VM (${guest.kernel.split("/").pop()})`;
}

/**
 * Waits until `read()` (a console log) shows the guest ready; returns when (performance.now()) its
 * first byte was seen. `alive()` false ends the wait with an error, as does `timeoutMs`.
 */
export async function awaitConsole(
  guest: BenchGuest,
  read: () => Promise<string>,
  alive: () => boolean,
  timeoutMs: number,
  what: string,
): Promise<number> {
  const started = performance.now();
  let firstByteAt: number | undefined;
  let last = "";
  let changedAt = started;
  for (;;) {
    const text = await read();
    const now = performance.now();
    if (text.length > 0) firstByteAt ??= now;
    if (text !== last) {
      last = text;
      changedAt = now;
    }
    if (consoleReady(guest, text, now - changedAt)) return firstByteAt ?? now;
    if (!alive()) throw new Error(`${what} ended before its console showed it ready`);
    if (now - started > timeoutMs)
      throw new Error(`${what}'s console did not show it ready within ${timeoutMs / 1000} s; it ends: ${last.slice(-200)}`);
    await Bun.sleep(10);
  }
}
