/** Synthetic bzImages for tests that must not depend on a real kernel. */

const MiB = 2 ** 20;

/** A bzImage as Debian's 6.1 kernel lays its header out (protocol 2.15), with `payload` as its protected-mode kernel. */
export function bzImage(payload: Uint8Array, change: (v: DataView) => void = () => {}): Uint8Array {
  const setupSectors = 3;
  const image = new Uint8Array((setupSectors + 1) * 512 + payload.byteLength);
  const v = new DataView(image.buffer);
  v.setUint8(0x1f1, setupSectors);
  v.setUint16(0x1fe, 0xaa55, true);
  v.setUint8(0x201, 0x6a); // header to 0x26c
  v.setUint32(0x202, 0x53726448, true); // "HdrS"
  v.setUint16(0x206, 0x020f, true);
  v.setUint8(0x211, 0x01); // LOADED_HIGH
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x22c, 0x7fffffff, true);
  v.setUint32(0x230, 0x200000, true);
  v.setUint8(0x234, 1);
  v.setUint16(0x236, 0x7f, true);
  v.setUint32(0x238, 2047, true);
  v.setUint32(0x260, 4 * MiB, true);
  image.set(payload, (setupSectors + 1) * 512);
  change(v);
  return image;
}
