/** Parsing of option values shared by several commands. */
import { SnowflockError } from "../errors.ts";
import { formatSize, parseSize } from "../size.ts";
import type { MemoryPath, RemoteTransport } from "../clone/fork-result.ts";
import { MAX_VCPUS } from "../backend/backend.ts";
import { MAX_MEMORY_BYTES } from "../descriptor/layout.ts";

export const MIN_MEMORY = 16 * 1024 * 1024;

export function memoryOption(value: unknown): number {
  const bytes = parseSize(String(value));
  if (bytes === undefined) throw new SnowflockError("USAGE", `bad --mem '${value}'`, "give a size such as 256M or 1G");
  if (bytes < MIN_MEMORY) throw new SnowflockError("USAGE", `--mem ${value} is too small`, `a VM needs at least ${formatSize(MIN_MEMORY)}`);
  // A VM's memory must fit in its descriptor, or it could not be cloned.
  if (bytes > MAX_MEMORY_BYTES)
    throw new SnowflockError("USAGE", `--mem ${value} is too large`, `a VM has at most ${formatSize(MAX_MEMORY_BYTES)}`);
  if (bytes % (2 * 1024 * 1024) !== 0)
    throw new SnowflockError("USAGE", `--mem ${value} is not a multiple of 2M`, "guest memory is mapped in 2 MiB pages");
  return bytes;
}

export function vcpusOption(value: unknown): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > MAX_VCPUS)
    throw new SnowflockError("USAGE", `bad --vcpus '${value}'`, `give a whole number from 1 to ${MAX_VCPUS}`);
  return n;
}

export function memoryPathOption(value: unknown): MemoryPath {
  if (value === "cow" || value === "ondemand") return value;
  throw new SnowflockError(
    "USAGE",
    `bad --memory '${value}'`,
    "use cow (copy-on-write of the frozen image) or ondemand (pages fetched on first touch)",
  );
}

/** `--transport`: how clones on other hosts get pages: mcdist over raw frames or UDP, or plain TCP. */
export function transportOption(value: unknown): RemoteTransport {
  if (value === "packet" || value === "udp" || value === "tcp") return value;
  throw new SnowflockError(
    "USAGE",
    `bad --transport '${value}'`,
    "use packet (mcdist over raw Ethernet frames), udp (mcdist over UDP multicast) or tcp (unicast, no multicast)",
  );
}
