/**
 * The virtio devices in a descriptor: JSON, one entry per device in window order, each with its
 * kind, its transport's registers and: for a disk, its image (a read-only one, or the frozen copy
 * of a writable one that a restored machine overlays: disk/clone-disks.ts); for a network device,
 * its bridge and the MAC it had (a restored machine gets a tap on that bridge and a new MAC).
 * Read back with every field checked: a descriptor is input like any other.
 */
import { refuse } from "../../../sections.ts";
import type { DescribedDisk } from "../../../disk/clone-disks.ts";
import { parseMac } from "../../../net/mac.ts";
import { badBridgeName } from "../../../net/tap.ts";
import { MAX_VIRTIO_DEVICES } from "./devices.ts";
import { checkVirtioMmioState, VIRTIO_MMIO_STATE_BYTES } from "./mmio.ts";

export type VirtioDeviceState = ({ kind: "block" } & DescribedDisk & { state: Uint8Array }) | NetDeviceState;

export interface NetDeviceState {
  kind: "net";
  bridge: string;
  mac: string;
  state: Uint8Array;
}

const MAX_PATH = 4096;
export const MAX_VIRTIO_SECTION_BYTES = MAX_VIRTIO_DEVICES * (MAX_PATH + 2 * VIRTIO_MMIO_STATE_BYTES + 128);

export function encodeVirtioSection(devices: VirtioDeviceState[]): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify(
      devices.map((d) =>
        d.kind === "net"
          ? { kind: d.kind, bridge: d.bridge, mac: d.mac, state: Buffer.from(d.state).toString("base64") }
          : {
              kind: d.kind,
              path: d.path,
              readOnly: d.readOnly,
              copyOnWrite: d.copyOnWrite,
              image: d.image,
              state: Buffer.from(d.state).toString("base64"),
            },
      ),
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
  return value.map((entry: unknown, i): VirtioDeviceState => {
    const fields = (typeof entry === "object" && entry !== null ? entry : {}) as Record<string, unknown>;
    if (typeof fields.state !== "string") refuse(`virtio device ${i} has no transport state`);
    const state = new Uint8Array(Buffer.from(fields.state, "base64"));
    checkVirtioMmioState(state);
    if (fields.kind === "net") return { ...decodeNet(fields, i), state };
    if (fields.kind === "block") return { ...decodeDisk(fields, i), state };
    refuse(`virtio device ${i} is of an unknown kind`);
  });
}

function decodeNet(fields: Record<string, unknown>, i: number): Omit<NetDeviceState, "state"> {
  const { bridge, mac } = fields;
  if (typeof bridge !== "string" || badBridgeName(bridge)) refuse(`virtio device ${i} names no usable bridge`);
  if (typeof mac !== "string" || !parseMac(mac)) refuse(`virtio device ${i} has no MAC`);
  return { kind: "net", bridge, mac };
}

function decodeDisk(fields: Record<string, unknown>, i: number): { kind: "block" } & DescribedDisk {
  const { path, readOnly, copyOnWrite, image } = fields;
  if (typeof path !== "string" || !path.startsWith("/") || path.length > MAX_PATH || path.includes("\0"))
    refuse(`virtio device ${i} has no absolute image path`);
  if (typeof readOnly !== "boolean" || (copyOnWrite !== undefined && copyOnWrite !== true))
    refuse(`virtio device ${i} has no read-only or copy-on-write flag`);
  if (!readOnly && copyOnWrite !== true) refuse(`virtio device ${i}'s image is writable: clones never share a writable image`);
  if (readOnly && copyOnWrite) refuse(`virtio device ${i} is both read-only and copy-on-write`);
  if (image !== undefined && (typeof image !== "string" || image.length > MAX_PATH || image.includes("\0")))
    refuse(`virtio device ${i} names its image badly`);
  return { kind: "block", path, readOnly, ...(copyOnWrite ? { copyOnWrite } : {}), ...(image === undefined ? {} : { image }) };
}
