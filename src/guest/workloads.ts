/**
 * The workloads built into the guest image, as the host sees them: their parameters, how much
 * memory they need, and the guest command line that starts them. Checked on the host so that a
 * bad request fails with one clear line before any VM is made.
 */
import { SnowflockError } from "../errors.ts";
import { PAGE_SIZE } from "../guest-memory/layout.ts";
import { formatSize, parseSize } from "../size.ts";

type ParamKind = "size" | "u64";

interface WorkloadSpec {
  summary: string;
  params: Record<string, { kind: ParamKind; required: boolean; help: string; range?: [bigint, bigint] }>;
  /** Guest memory the workload needs beyond the kernel's own. */
  memoryNeed?: (params: Map<string, bigint>) => number;
}

/** The kernel image, page tables, stacks and allocator bitmap need a few MiB of their own. */
export const KERNEL_RESERVE = 8 * 1024 * 1024;

const datasetMemory = (p: Map<string, bigint>) => Math.ceil(Number(p.get("size")!) / PAGE_SIZE) * PAGE_SIZE;

/** The `compute` workload's dataset when no size= is given (guest/workloads/compute.c). */
export const COMPUTE_DEFAULT_SIZE = 1 << 20;

/** The workloads that clone themselves with sf_clone. */
const PARALLEL_PARAMS: WorkloadSpec["params"] = {
  size: { kind: "size", required: true, help: "bytes of the dataset (K/M/G suffixes)" },
  seed: { kind: "u64", required: false, help: "dataset seed (default 0)" },
  clones: { kind: "u64", required: true, help: "clones to ask for (1-256)", range: [1n, 256n] },
};

export const WORKLOADS: Record<string, WorkloadSpec> = {
  hello: { summary: "prints a greeting and exits", params: {} },
  sha256: {
    summary: "SHA-256 of SIZE bytes of the splitmix64 dataset for SEED",
    params: {
      size: { kind: "size", required: true, help: "bytes of the dataset to hash (K/M/G suffixes)" },
      seed: { kind: "u64", required: false, help: "dataset seed (default 0)" },
    },
    memoryNeed: datasetMemory,
  },
  "sha256-par": {
    summary: "clones hash slices of the dataset; prints `slice <i> <offset> <length> <hex>` per clone",
    params: PARALLEL_PARAMS,
    memoryNeed: datasetMemory,
  },
  "search-par": {
    summary: "every clone counts a 16-bit pattern in the dataset; prints `count <i> <pattern> <n>`",
    params: {
      ...PARALLEL_PARAMS,
      together: {
        kind: "u64",
        required: false,
        help: "1: the clones start reading together, once every one has told the parent it runs (default 0)",
        range: [0n, 1n],
      },
      quit: {
        kind: "u64",
        required: false,
        help: "test: the clone with this ID ends at once with status 3, before it reads or says it runs (default: none)",
        range: [1n, 256n],
      },
    },
    memoryNeed: datasetMemory,
  },
  "alloc-par": {
    summary:
      "clone i allocates SIZE bytes after sf_clone, fills them with the dataset for SEED+i; prints `alloc <i> <hex>` (their SHA-256)",
    params: PARALLEL_PARAMS,
    memoryNeed: (p) => 2 * datasetMemory(p), // SIZE/2 held + SIZE used and freed, rounded up
  },
  "mem-states": {
    summary: "test: clones read memory in every state the heuristics touch; prints `states <i> shared=<hex> nonzero=<n> allocated=<hex>`",
    params: PARALLEL_PARAMS,
    memoryNeed: (p) => 4 * datasetMemory(p) + 4 * 4096,
  },
  compute: {
    summary:
      "hashes SIZE bytes (default 1M) PASSES times (16) a round, ROUNDS rounds (8), again in each fresh clone; " +
      "prints `round <r> id <clone-id> ns <time> sha <hex>`, then `rounds done id <clone-id>`",
    params: {
      size: { kind: "size", required: false, help: "bytes of the dataset hashed (K/M/G suffixes; default 1M)" },
      passes: { kind: "u64", required: false, help: "hashes of the dataset a round (default 16)", range: [1n, 1_000_000n] },
      rounds: { kind: "u64", required: false, help: "rounds timed (default 8)", range: [1n, 1000n] },
      seed: { kind: "u64", required: false, help: "dataset seed (default 0)" },
    },
    memoryNeed: (p) => Math.ceil(Number(p.get("size") ?? COMPUTE_DEFAULT_SIZE) / PAGE_SIZE) * PAGE_SIZE,
  },
  serve: {
    summary: "prints `tick <k> id <clone-id>` every PERIOD ms (default 100) until stopped",
    params: { period: { kind: "u64", required: false, help: "milliseconds between ticks (default 100)", range: [10n, 60_000n] } },
  },
  crash: { summary: "test: triple-faults on purpose", params: {} },
  isolation: { summary: "test: members write one variable after sf_clone; each still sees its own", params: {} },
  misuse: { summary: "test: misuses the cluster API, checks each error", params: {} },
  hostile: { summary: "test: makes hypercalls with wild pointers, checks the answers", params: {} },
  quotas: { summary: "test: floods messages, tickets, checkpoints and console lines until the host's limits refuse them", params: {} },
};

export interface WorkloadRequest {
  name: string;
  params: Map<string, bigint>;
  /** The guest command line, without the host's own keys. */
  cmdline: string;
  /** Least guest memory this request can run in. */
  minimumMemory: number;
}

function parseValue(kind: ParamKind, text: string): bigint | undefined {
  if (kind === "size") {
    const bytes = parseSize(text);
    return bytes === undefined ? undefined : BigInt(bytes);
  }
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) return undefined;
  const value = BigInt(text);
  return value < 1n << 64n ? value : undefined;
}

/** Parses `WORKLOAD key=value ...` from the command line. */
export function parseWorkload(name: string, args: string[]): WorkloadRequest {
  const spec = WORKLOADS[name];
  if (!spec) {
    throw new SnowflockError("WORKLOAD", `unknown workload '${name}'`, `choose one of: ${Object.keys(WORKLOADS).join(", ")}`);
  }
  const params = new Map<string, bigint>();
  for (const arg of args) {
    const eq = arg.indexOf("=");
    const key = eq < 0 ? arg : arg.slice(0, eq);
    const param = spec.params[key];
    if (eq < 0 || !param) {
      const takes = Object.keys(spec.params);
      throw new SnowflockError(
        "WORKLOAD",
        `workload ${name} does not take '${arg}'`,
        takes.length ? `it takes ${takes.map((k) => `${k}=…`).join(" ")}` : "it takes no parameters",
      );
    }
    const value = parseValue(param.kind, arg.slice(eq + 1));
    if (value === undefined) {
      const expected = param.kind === "size" ? "a size such as 4096, 64K, 256M or 1G" : "a whole number from 0 to 2^64-1";
      throw new SnowflockError("WORKLOAD", `bad ${key} '${arg.slice(eq + 1)}' for workload ${name}`, `expected ${expected}`);
    }
    if (param.range && (value < param.range[0] || value > param.range[1])) {
      const expected = `expected a whole number from ${param.range[0]} to ${param.range[1]}`;
      throw new SnowflockError("WORKLOAD", `bad ${key} '${arg.slice(eq + 1)}' for workload ${name}`, expected);
    }
    params.set(key, value);
  }
  for (const [key, param] of Object.entries(spec.params)) {
    if (param.required && !params.has(key)) throw new SnowflockError("WORKLOAD", `workload ${name} needs ${key}=…`, param.help);
  }
  const minimumMemory = KERNEL_RESERVE + (spec.memoryNeed?.(params) ?? 0);
  const cmdline = [name, ...[...params].map(([k, v]) => `${k}=${v}`)].join(" ");
  return { name, params, cmdline, minimumMemory };
}

/** Throws the one-line error a user sees when `memoryBytes` is too little for the request. */
export function checkMemory(request: WorkloadRequest, memoryBytes: number): void {
  if (memoryBytes >= request.minimumMemory) return;
  throw new SnowflockError(
    "WORKLOAD",
    `${request.cmdline} needs at least ${formatSize(request.minimumMemory)} of guest memory, but the VM has ${formatSize(memoryBytes)}`,
    `raise --mem (e.g. --mem ${formatSize(Math.ceil(request.minimumMemory / 2 ** 20 / 64) * 64 * 2 ** 20)})`,
  );
}

export function workloadHelp(): string {
  return Object.entries(WORKLOADS)
    .map(([name, spec]) => {
      const params = Object.entries(spec.params).map(([k, p]) => (p.required ? `${k}=…` : `[${k}=…]`));
      return `  ${[name, ...params].join(" ").padEnd(30)} ${spec.summary}`;
    })
    .join("\n");
}
