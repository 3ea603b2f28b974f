/** Every WebAssembly kernel a clone's VMM uses, compiled and instantiated ahead (a ready VMM's: pool/). */
import { prepareDescriptorCodec } from "./descriptor-codec.ts";
import { getKernel as pageBitmapKernel } from "./page-bitmap.ts";
import { prepareReassemblyKernel } from "./reassembly.ts";

export function prepareWasmKernels(): void {
  prepareDescriptorCodec();
  pageBitmapKernel();
  prepareReassemblyKernel();
}
