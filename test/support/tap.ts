/**
 * A tap device held open by the test process: a VM's port as a bridge sees it (tun_flags in sysfs,
 * carrier up while the fd is open). frames() drains what the bridge sent it.
 */
import { close, read } from "../../src/sys/files.ts";
import { ensureTunDevice } from "../../src/net/tap.ts";
import { openTap as openTapDevice } from "../../src/sys/net-devices.ts";

export interface Tap {
  name: string;
  /** The frames waiting, each as read (Ethernet header first); none left after. */
  frames(): Uint8Array[];
  close(): void;
}

export function openTap(name: string): Tap {
  ensureTunDevice();
  const { fd } = openTapDevice(name);
  const buffer = new Uint8Array(65536);
  return {
    name,
    frames() {
      const got: Uint8Array[] = [];
      for (;;) {
        try {
          got.push(buffer.slice(0, read(fd, buffer)));
        } catch {
          return got; // EAGAIN: nothing more waits
        }
      }
    },
    close: () => close(fd),
  };
}
