/**
 * The virtio devices in a descriptor: JSON, one entry per device in window order, each with its
 * kind, its image (a read-only one, or the frozen copy of a writable one that a restored machine
 * overlays: disk/clone-disks.ts) and its transport's registers. Read back with every field
 * checked: a descriptor is input like any other.
 */
import { refuse } from "../../../sections.ts";
import type { DescribedDisk } from "../../../disk/clone-disks.ts";
import { MAX_VIRTIO_DEVICES } from "./devices.ts";
import { checkVirtioMmioState, VIRTIO_MMIO_STATE_BYTES } from "./mmio.ts";

export interface VirtioDeviceState extends DescribedDisk {
  kind: "block";
  state: Uint8Array;
}

const MAX_PATH = 4096;
export const MAX_VIRTIO_SECTION_BYTES = MAX_VIRTIO_DEVICES * (MAX_PATH + 2 * VIRTIO_MMIO_STATE_BYTES + 128);

export function encodeVirtioSection(devices: VirtioDeviceState[]): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify(
      devices.map((d) => ({
        kind: d.kind,
        path: d.path,
        readOnly: d.readOnly,
        copyOnWrite: d.copyOnWrite,
        image: d.image,
        state: Buffer.from(d.state).toString("base64"),
      })),
    ),
  );
}

export function decodeVirtioSection(body: Uint8Array): VirtioDeviceState[] {
  if (body.byteLength > MAX_VIRTIO_SECTION_BYTES) refuse(`a virtio section of ${body.byteLength} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    refuse("the virtio section is not JSON");
  }
  if (!Array.isArray(value) || value.length > MAX_VIRTIO_DEVICES)
    refuse(`the virtio section must list at most ${MAX_VIRTIO_DEVICES} devices`);
  return value.map((entry: unknown, i) => {
    const { kind, path, readOnly, copyOnWrite, image, state } = (typeof entry === "object" && entry !== null ? entry : {}) as Record<
      string,
      unknown
    >;
    if (kind !== "block") refuse(`virtio device ${i} is of an unknown kind`);
    if (typeof path !== "string" || !path.startsWith("/") || path.length > MAX_PATH || path.includes("\0"))
      refuse(`virtio device ${i} has no absolute image path`);
    if (typeof readOnly !== "boolean" || (copyOnWrite !== undefined && copyOnWrite !== true))
      refuse(`virtio device ${i} has no read-only or copy-on-write flag`);
    if (!readOnly && copyOnWrite !== true) refuse(`virtio device ${i}'s image is writable: clones never share a writable image`);
    if (readOnly && copyOnWrite) refuse(`virtio device ${i} is both read-only and copy-on-write`);
    if (image !== undefined && (typeof image !== "string" || image.length > MAX_PATH || image.includes("\0")))
      refuse(`virtio device ${i} names its image badly`);
    if (typeof state !== "string") refuse(`virtio device ${i} has no transport state`);
    const bytes = new Uint8Array(Buffer.from(state, "base64"));
    checkVirtioMmioState(bytes);
    return { kind, path, readOnly, ...(copyOnWrite ? { copyOnWrite } : {}), ...(image === undefined ? {} : { image }), state: bytes };
  });
}
