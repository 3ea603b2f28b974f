/**
 * src/sys/uffd.ts against <linux/userfaultfd.h>: struct layouts, ioctl numbers (re-encoded from
 * their comments and compared with the header's macros) and every other UFFD constant; plus the
 * few libc constants memtap relies on. One gcc compile. Then the wrappers against the running
 * kernel: API handshake, register, copy, zero page, EEXIST.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import * as consts from "../../src/sys/constants.ts";
import { close } from "../../src/sys/files.ts";
import { mmap, munmap, view } from "../../src/sys/memory.ts";
import { SyscallError } from "../../src/sys/errno.ts";
import type { StructLayout } from "../../src/sys/layout.ts";
import * as uffd from "../../src/sys/uffd.ts";
import { compareProbed, IOC_DIRECTION, ioc, layoutExpressions, parseIoctlComments, probeC, type CExpression } from "../support/c-abi.ts";

const HEADERS = ["linux/ioctl.h", "linux/userfaultfd.h", "sys/syscall.h", "sys/socket.h", "errno.h"];
const source = await Bun.file(new URL("../../src/sys/uffd.ts", import.meta.url)).text();
const ioctls = parseIoctlComments(source);
const commented = new Set(ioctls.map((c) => c.name));
const exported = Object.entries(uffd as Record<string, unknown>);
const layouts = exported.filter((e): e is [string, StructLayout] => typeof e[1] === "object" && e[1] !== null && "cType" in e[1]);
const constants = exported.filter((e): e is [string, number] => typeof e[1] === "number" && !commented.has(e[0]));
/** libc constants the memtap path uses, by their C names. */
const LIBC = {
  SYS_userfaultfd: "__NR_userfaultfd",
  AF_UNIX: "AF_UNIX",
  SOCK_STREAM: "SOCK_STREAM",
  SOCK_CLOEXEC: "SOCK_CLOEXEC",
  MSG_NOSIGNAL: "MSG_NOSIGNAL",
  EEXIST: "EEXIST",
  EAGAIN: "EAGAIN",
  EINTR: "EINTR",
} as const;

const required = process.env.SNOWFLOCK_REQUIRE_KVM === "1";
function gccUnavailable(): string | undefined {
  if (process.platform !== "linux" || process.arch !== "x64") return `uffd.ts is x86-64 Linux, this is ${process.platform}/${process.arch}`;
  if (!Bun.which("gcc")) return "gcc not found on PATH";
  const pre = Bun.spawnSync(["gcc", "-E", "-x", "c", "-o", "/dev/null", "-"], {
    stdin: new TextEncoder().encode("#include <linux/userfaultfd.h>\n"),
    stdout: "ignore",
    stderr: "pipe",
  });
  return pre.exitCode === 0 ? undefined : "gcc cannot find <linux/userfaultfd.h>";
}
const skipReason = gccUnavailable();
if (skipReason && required)
  test("<linux/userfaultfd.h> checks can run (SNOWFLOCK_REQUIRE_KVM=1)", () => {
    throw new Error(skipReason);
  });

describe.skipIf(skipReason !== undefined)("uffd.ts vs <linux/userfaultfd.h>", () => {
  const layoutChecks = new Map(layouts.map(([name, l]) => [name, layoutExpressions(l)]));
  const macro = (name: string) => `macro(${name})`;
  const expressions: CExpression[] = [
    ...[...layoutChecks.values()].flat(),
    ...[...new Set(ioctls.map((c) => c.argType!))].map((t) => ({ name: `sizeof(${t})`, expr: `sizeof(${t})` })),
    ...[...commented, ...constants.map(([n]) => n)].map((n) => ({ name: macro(n), expr: n, ifdef: n })),
    ...Object.values(LIBC).map((n) => ({ name: macro(n), expr: n })),
  ];
  let probed = new Map<string, bigint>();
  beforeAll(async () => {
    probed = await probeC(HEADERS, expressions);
  });

  for (const [name, layout] of layouts) {
    test(`${name} (${layout.cType})`, () => {
      const { expected, actual } = compareProbed(layoutChecks.get(name)!, probed);
      expect(actual).toEqual(expected);
    });
  }

  test("every ioctl is commented with its encoding", () => {
    expect(ioctls.map((c) => c.name).sort()).toEqual([
      "UFFDIO_API",
      "UFFDIO_COPY",
      "UFFDIO_REGISTER",
      "UFFDIO_UNREGISTER",
      "UFFDIO_WAKE",
      "UFFDIO_ZEROPAGE",
    ]);
  });

  for (const c of ioctls) {
    test(`${c.name} = ${c.text}`, () => {
      const ours = (uffd as Record<string, unknown>)[c.name];
      const encoded = ioc(IOC_DIRECTION[c.macro], uffd.UFFDIO, c.nr, Number(probed.get(`sizeof(${c.argType})`)));
      expect(ours).toBe(encoded);
      expect(BigInt(ours as number)).toBe(probed.get(macro(c.name))!);
    });
  }

  test("constants equal the header's", () => {
    const ours: Record<string, number | string> = Object.fromEntries(constants);
    const header = Object.fromEntries(
      constants.map(([n]) => [n, probed.has(macro(n)) ? Number(probed.get(macro(n))) : "not in the header"]),
    );
    expect(ours).toEqual(header);
  });

  test("libc constants memtap relies on", () => {
    // biome-ignore lint/performance/noDynamicNamespaceImportAccess: every constant, compared with C's
    const ours = Object.fromEntries(Object.keys(LIBC).map((k) => [k, consts[k as keyof typeof LIBC]]));
    const header = Object.fromEntries(Object.entries(LIBC).map(([k, c]) => [k, Number(probed.get(macro(c)))]));
    expect(ours).toEqual(header);
  });
});

// ---- the wrappers against the running kernel ----

function openUffd(): number | string {
  try {
    return uffd.userfaultfd(consts.O_CLOEXEC | consts.O_NONBLOCK);
  } catch (error) {
    return (error as Error).message;
  }
}
const probeFd = openUffd();
if (typeof probeFd === "number") close(probeFd);
const liveSkip = typeof probeFd === "string" ? `userfaultfd unavailable: ${probeFd}` : undefined;
if (liveSkip && required)
  test("userfaultfd works (SNOWFLOCK_REQUIRE_KVM=1)", () => {
    throw new Error(liveSkip);
  });

describe.skipIf(liveSkip !== undefined)("userfaultfd wrappers", () => {
  test("register, copy, zero page, EEXIST on a page already there, unregister", () => {
    const fd = uffd.userfaultfd(consts.O_CLOEXEC | consts.O_NONBLOCK);
    const size = 4 * 4096;
    const address = mmap(
      0,
      size,
      consts.PROT_READ | consts.PROT_WRITE,
      consts.MAP_PRIVATE | consts.MAP_ANONYMOUS | consts.MAP_NORESERVE,
      -1,
      0,
    );
    try {
      const api = uffd.uffdApi(fd, 0);
      expect(api.ioctls & (1n << BigInt(uffd._UFFDIO_REGISTER))).not.toBe(0n);
      const allowed = uffd.uffdRegister(fd, address, size, uffd.UFFDIO_REGISTER_MODE_MISSING);
      for (const bit of [uffd._UFFDIO_COPY, uffd._UFFDIO_ZEROPAGE, uffd._UFFDIO_WAKE]) expect(allowed & (1n << BigInt(bit))).not.toBe(0n);

      const page = new Uint8Array(4096).map((_, i) => i * 7);
      expect(uffd.uffdCopy(fd, address + 4096, page)).toBe(4096);
      expect(uffd.uffdZeropage(fd, address, 4096)).toBe(4096);
      // Installed before anyone touched them, so reading them here raises no fault.
      expect(view(address + 4096, 4096)).toEqual(page);
      expect(view(address, 4096).every((b) => b === 0)).toBe(true);

      let error: unknown;
      try {
        uffd.uffdCopy(fd, address + 4096, page);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(SyscallError);
      expect((error as SyscallError).errnoName).toBe("EEXIST");
      uffd.uffdWake(fd, address + 4096, 4096);
      uffd.uffdUnregister(fd, address, size);
      expect(view(address + 3 * 4096, 4096)[0]).toBe(0); // unregistered: an ordinary zero-fill fault
    } finally {
      munmap(address, size);
      close(fd);
    }
  });
});
