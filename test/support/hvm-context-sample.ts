/** HVM save blobs built the way Xen's hvm_save() writes them (Xen 4.17's layouts), for tests of the blob walker and the Xen state. */
import { XEN_RELEASES } from "../../src/backend/xen/abi.ts";
import { StructView } from "../../src/sys/layout.ts";

export const abi = XEN_RELEASES["4.17"]!;
const { hvm_save_descriptor, hvm_save_header, hvm_hw_cpu } = abi.layouts;

export interface Piece {
  typecode: number;
  instance: number;
  payload: Uint8Array;
  /** Overrides the descriptor's length (to build a lying blob). */
  length?: number;
}

export function blob(pieces: Piece[]): Uint8Array {
  const parts = pieces.flatMap((p) => {
    const d = new StructView(hvm_save_descriptor)
      .set("typecode", p.typecode)
      .set("instance", p.instance)
      .set("length", p.length ?? p.payload.byteLength);
    return [d.bytes, p.payload];
  });
  return Buffer.concat(parts);
}

export function header(magic = abi.constants.HVM_FILE_MAGIC, version = abi.constants.HVM_FILE_VERSION): Piece {
  const h = new StructView(hvm_save_header)
    .set("magic", magic)
    .set("version", version)
    .set("changeset", 0x1234_5678_9abcn)
    .set("cpuid", 0x306c3)
    .set("gtsc_khz", 2_400_000);
  return { typecode: abi.hvmSaveTypes.HEADER, instance: 0, payload: h.bytes };
}

export function cpu(vcpu: number, rip: number): Piece {
  return { typecode: abi.hvmSaveTypes.CPU, instance: vcpu, payload: new StructView(hvm_hw_cpu).set("rip", rip).bytes };
}

export const end: Piece = { typecode: abi.hvmSaveTypes.END, instance: 0, payload: new Uint8Array(0) };
