/**
 * The parent of a round frozen for clones on other hosts: its RAM copied once into an image file
 * while it is suspended (a part per helper thread, as for memory on demand), the frames a clone
 * needs first read out of it, and then the file handed to whoever serves it (exported()).
 */
import { close } from "../../sys/files.ts";
import type { ExportedImage } from "../backend.ts";
import { XC_PAGE_SIZE } from "./abi.ts";
import { type ForkHelpers, workerError } from "./fork-helpers.ts";
import {
  createImageFile,
  discardImageFile,
  type ImageFile,
  imagePages,
  imageParts,
  imageView,
  joinImageParts,
  type MemoryImage,
  trimImageFile,
} from "./memory-image.ts";
import { eagerFrames, type XenState } from "./persist.ts";

/** With `parent` suspended: its frames [0, file.pages) into `file`, a part per helper; and the frames a clone of `state` needs first. */
export async function captureOnHelpers(
  helpers: ForkHelpers,
  parent: number,
  file: ImageFile,
  state: XenState,
): Promise<{ image: MemoryImage; eager: number[] }> {
  const parts = imageParts(file.pages, helpers.count);
  const replies = await Promise.all(
    parts.map((range, w) => helpers.call(w, { kind: "capture", parent, image: { pages: file.pages, address: file.address }, ...range })),
  );
  const failed = replies.find((reply) => reply.error);
  if (failed?.error) throw workerError(failed.error);
  const image = joinImageParts(
    file,
    replies.map((reply) => reply.part!),
  );
  return { image, eager: eagerFrames(state, imageView(file)) };
}

export class ImageExport {
  private file: ImageFile | undefined;
  private result: ExportedImage | undefined;

  constructor(
    private readonly parentName: string,
    private readonly ramPages: number,
  ) {}

  /** While the parent runs: the file, its pages allocated. */
  prepare(): void {
    this.file ??= createImageFile(`${this.parentName}.export`, this.ramPages);
  }

  async capture(helpers: ForkHelpers, parent: number, state: XenState, cmdline: string): Promise<void> {
    this.prepare();
    const file = this.file!;
    const { image, eager } = await captureOnHelpers(helpers, parent, file, state);
    const pages = imagePages(file, eager);
    // Zero frames become holes and the mapping goes: a server reads the file through its own.
    trimImageFile(file, image.nonZeroPages);
    this.file = undefined;
    let open = true;
    this.result = {
      // The image is the domain's RAM: the special pages above it (XenStore, console) are every shell's own.
      snapshot: {
        name: this.parentName,
        cmdline,
        state: { ...state, memorySize: this.ramPages * XC_PAGE_SIZE },
        nonZeroPages: image.nonZeroPages,
        pages,
        pausedMs: 0,
      },
      fd: image.fd,
      close: () => {
        if (open) close(image.fd);
        open = false;
      },
    };
  }

  exported(): ExportedImage | undefined {
    return this.result;
  }

  /** Ends what was made; after exported() was taken, its taker closes it. */
  discard(): void {
    if (this.file) discardImageFile(this.file);
    this.file = undefined;
  }
}
