/**
 * A tap device held open by the test process: a VM's port as a bridge sees it (tun_flags in sysfs,
 * carrier up while the fd is open). frames() drains what the bridge sent it.
 */
import { existsSync } from "node:fs";
import { close, open, read } from "../../src/sys/files.ts";
import { ioctl } from "../../src/sys/ioctl.ts";
import { O_NONBLOCK, O_RDWR } from "../../src/sys/constants.ts";

const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;

export interface Tap {
  name: string;
  /** The frames waiting, each as read (Ethernet header first); none left after. */
  frames(): Uint8Array[];
  close(): void;
}

export function openTap(name: string): Tap {
  // Without udev (the nested test host) /dev/net/tun appears once the module is loaded.
  if (!existsSync("/dev/net/tun")) Bun.spawnSync(["modprobe", "tun"], { stderr: "ignore" });
  const fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  const request = new Uint8Array(40); // struct ifreq: ifr_name[16], then ifr_flags
  request.set(new TextEncoder().encode(name), 0);
  new DataView(request.buffer).setUint16(16, IFF_TAP | IFF_NO_PI, true);
  try {
    ioctl(fd, TUNSETIFF, request, "TUNSETIFF");
  } catch (error) {
    close(fd);
    throw error;
  }
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
