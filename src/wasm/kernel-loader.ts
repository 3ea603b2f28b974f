// Loading of the AssemblyScript kernels in wasm/ (built by `bun wasm/build.ts`).
//
// Each wrapper imports its .wasm as a file, so that `bun build --compile` embeds it in the
// executable; from source it is read from wasm/build/. Modules are compiled once, lazily and
// synchronously, on first use. The modules import only `env.abort` (the allocator's failure).

import { readFileSync } from "node:fs";

const compiled = new Map<string, WebAssembly.Module>();

/** The compiled module of kernel `name`, read from `path` on first use. */
export function kernelModule(name: string, path: string): WebAssembly.Module {
  let module = compiled.get(path);
  if (module === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(path);
    } catch (cause) {
      throw new Error(`${name}: cannot read the WebAssembly kernel at ${path}; build it with \`bun wasm/build.ts\``, { cause });
    }
    module = new WebAssembly.Module(bytes);
    compiled.set(path, module);
  }
  return module;
}

/** Decodes an AssemblyScript string (UTF-16LE, byte length stored at ptr - 4). */
function readAsString(memory: WebAssembly.Memory, ptr: number): string {
  const buf = memory.buffer;
  const p = ptr >>> 0;
  if (p < 4 || p > buf.byteLength) return "?";
  const len = new DataView(buf).getUint32(p - 4, true);
  if (p + len > buf.byteLength) return "?";
  return new TextDecoder("utf-16le").decode(new Uint8Array(buf, p, len));
}

/** A new instance of kernel `name`, checked to export its memory and every one of `functions`. */
export function instantiateKernel<Kernel>(name: string, module: WebAssembly.Module, functions: readonly string[]): Kernel {
  let memory: WebAssembly.Memory | undefined;
  const imports = {
    env: {
      abort(msg: number, file: number, line: number, column: number): never {
        const text = (p: number): string => (p === 0 || memory === undefined ? "?" : readAsString(memory, p));
        throw new Error(`${name} kernel aborted: ${text(msg)} (${text(file)}:${line}:${column})`);
      },
    },
  };
  const exports = new WebAssembly.Instance(module, imports).exports;
  if (!(exports.memory instanceof WebAssembly.Memory)) {
    throw new Error(`${name}: the wasm module does not export its memory`);
  }
  memory = exports.memory;
  for (const fn of functions) {
    if (typeof exports[fn] !== "function") {
      throw new Error(`${name}: the wasm module does not export ${fn}() (stale build? run \`bun wasm/build.ts\`)`);
    }
  }
  return exports as unknown as Kernel;
}
