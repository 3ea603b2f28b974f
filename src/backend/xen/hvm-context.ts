/**
 * The HVM save blob that xc_domain_hvm_getcontext returns: a HEADER record, then one record per
 * device or vCPU, each behind a struct hvm_save_descriptor, ending with an END record. This walks
 * it and checks its bounds; it does not interpret the records beyond the header.
 */
import { SnowflockError } from "../../errors.ts";
import { StructView } from "../../sys/layout.ts";
import type { XenReleaseAbi } from "./abi.ts";

export interface HvmRecord {
  typecode: number;
  /** The record's name in <xen/hvm/save.h> (CPU, LAPIC, ...), when this release knows it. */
  type: string | undefined;
  /** Which one of its type: the vCPU id for per-vCPU records. */
  instance: number;
  /** Where the record's payload starts in the blob, after its descriptor. */
  offset: number;
  length: number;
}

export interface HvmSaveHeader {
  magic: number;
  version: number;
  changeset: bigint;
  cpuid: number;
  gtscKhz: number;
}

export interface HvmContext {
  blob: Uint8Array;
  header: HvmSaveHeader;
  /** Every record in blob order, the HEADER first and the END last. */
  records: HvmRecord[];
}

function malformed(what: string): SnowflockError {
  return new SnowflockError("INTERNAL", `the hypervisor's HVM context is malformed: ${what}`);
}

export function parseHvmContext(blob: Uint8Array, abi: XenReleaseAbi): HvmContext {
  const { hvm_save_descriptor: descriptor, hvm_save_header: headerLayout } = abi.layouts;
  const names = new Map(Object.entries(abi.hvmSaveTypes).map(([name, code]) => [code, name]));
  const records: HvmRecord[] = [];
  let at = 0;
  for (;;) {
    if (at + descriptor.size > blob.byteLength) throw malformed(`it ends at byte ${blob.byteLength} without an END record`);
    const d = new StructView(descriptor, blob, at);
    const record: HvmRecord = {
      typecode: d.get("typecode"),
      type: names.get(d.get("typecode")),
      instance: d.get("instance"),
      offset: at + descriptor.size,
      length: d.get("length"),
    };
    if (record.offset + record.length > blob.byteLength) {
      throw malformed(
        `record ${record.type ?? record.typecode} at byte ${at} claims ${record.length} bytes, past the end at ${blob.byteLength}`,
      );
    }
    records.push(record);
    at = record.offset + record.length;
    if (record.typecode === abi.hvmSaveTypes.END) break;
  }

  const first = records[0]!;
  if (first.typecode !== abi.hvmSaveTypes.HEADER || first.length < headerLayout.size)
    throw malformed("it does not start with a HEADER record");
  const h = new StructView(headerLayout, blob, first.offset);
  const header: HvmSaveHeader = {
    magic: h.get("magic"),
    version: h.get("version"),
    changeset: h.get64("changeset"),
    cpuid: h.get("cpuid"),
    gtscKhz: h.get("gtsc_khz"),
  };
  if (header.magic !== abi.constants.HVM_FILE_MAGIC) throw malformed(`its magic is 0x${header.magic.toString(16)}, not HVM_FILE_MAGIC`);
  if (header.version !== abi.constants.HVM_FILE_VERSION)
    throw malformed(`its format version is ${header.version}, not ${abi.constants.HVM_FILE_VERSION}`);
  return { blob, header, records };
}
