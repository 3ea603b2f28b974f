/**
 * A machine's virtio devices over their life: opened for a boot (the user's disks, then the
 * network device) or from a descriptor (a frozen disk under an overlay, a fresh tap and MAC on
 * the same bridge), described for a descriptor, and closed.
 */
import { type DiskAttachment, type OpenDisk, openDiskImage } from "../../../disk/image.ts";
import { closeDisk, freezeDisk, openDescribedDisk } from "../../../disk/clone-disks.ts";
import { formatMac, randomMac } from "../../../net/mac.ts";
import { closeTap, type NetAttachment, openBridgedTap } from "../../../net/tap.ts";
import { ownFdPath } from "../../../sys/process.ts";
import { type BlockSlot, type NetSlot, type VirtioSlot, virtioPlacement } from "./devices.ts";
import { newVirtioMmioState } from "./mmio.ts";
import { Receive } from "./net-receive-protocol.ts";
import type { VirtioDeviceState } from "./persist.ts";

function netSlot(index: number, bridge: string): NetSlot {
  return {
    ...virtioPlacement(index),
    state: newVirtioMmioState(),
    kind: "net",
    tap: openBridgedTap(bridge),
    mac: randomMac(),
    receive: new SharedArrayBuffer(4 * Receive.WORDS),
  };
}

/** A disk's slot: `path` is what was opened (the image, or a frozen copy), `image` the user's image. */
function blockSlot(index: number, path: string, image: string, disk: OpenDisk): BlockSlot {
  return { ...virtioPlacement(index), state: newVirtioMmioState(), kind: "block", path, image, disk };
}

/** Opens slots one by one with `open`; if one fails, closes those opened and throws. */
function openAll<T>(items: T[], open: (item: T, index: number) => VirtioSlot): VirtioSlot[] {
  const slots: VirtioSlot[] = [];
  try {
    items.forEach((item, i) => slots.push(open(item, i)));
    return slots;
  } catch (error) {
    for (const slot of slots) closeSlot(slot);
    throw error;
  }
}

/** The devices of a booting machine: its disks in order, then its network device. */
export function openBootSlots(disks: DiskAttachment[], net: NetAttachment | undefined): VirtioSlot[] {
  const devices: Array<DiskAttachment | NetAttachment> = [...disks, ...(net ? [net] : [])];
  return openAll(devices, (device, i) =>
    "bridge" in device ? netSlot(i, device.bridge) : blockSlot(i, device.path, device.path, openDiskImage(device)),
  );
}

/** The devices of a restored machine: read-only disks shared, writable ones overlaid, a new tap and MAC. */
export function openRestoredSlots(devices: VirtioDeviceState[], scratchDirectory: string): VirtioSlot[] {
  return openAll(devices, (device, i) =>
    device.kind === "net"
      ? netSlot(i, device.bridge)
      : blockSlot(i, device.path, device.image ?? device.path, openDescribedDisk(device, scratchDirectory)),
  );
}

/**
 * `slot` for a descriptor, with its transport's registers. A writable disk is frozen into a file
 * whose fd goes to `frozen` (the caller closes it once no clone will open it).
 */
export function describeSlot(slot: VirtioSlot, state: Uint8Array, scratchDirectory: string, frozen: number[]): VirtioDeviceState {
  if (slot.kind === "net") return { kind: "net", bridge: slot.tap.bridge, mac: formatMac(slot.mac), state };
  if (slot.disk.readOnly) return { kind: "block", state, path: slot.path, readOnly: true };
  const fd = freezeDisk(slot.disk, slot.image, scratchDirectory);
  frozen.push(fd);
  return { kind: "block", state, path: ownFdPath(fd), readOnly: false, copyOnWrite: true, image: slot.image };
}

export function closeSlot(slot: VirtioSlot): void {
  if (slot.kind === "block") closeDisk(slot.disk);
  else closeTap(slot.tap);
}

/** The first disk the guest writes, if any. */
export function writableDisk(slots: VirtioSlot[]): string | undefined {
  for (const slot of slots) if (slot.kind === "block" && !slot.disk.readOnly) return slot.image;
  return undefined;
}
