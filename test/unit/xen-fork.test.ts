/** The parts of the Xen fork that need no Xen: clone configurations, the disk rule, the shell kernel, agent requests. */
import { describe, expect, test } from "bun:test";
import { parseRequest } from "../../src/backend/xen/agent.ts";
import { cloneConfig, type LibxlConfig, refuseWritableDisks } from "../../src/backend/xen/shells.ts";
import { shellKernelImage } from "../../src/backend/xen/shell-kernel.ts";

const parent: LibxlConfig = {
  c_info: { type: "pvh", name: "web", uuid: "e678863c-6f11-4737-ab9d-98a8bef13926" },
  b_info: { kernel: "/boot/vmlinuz", ramdisk: "/boot/initrd.gz", cmdline: "console=hvc0" },
  nics: [{ mac: "00:16:3e:00:00:01" }, { mac: "00:16:3e:00:00:02" }],
  disks: [{ vdev: "xvda", pdev_path: "/img/root.img" }],
};

describe("a clone's libxl configuration", () => {
  test("its own name, UUID and MACs (Xen's OUI), the shell kernel, no initramfs or command line; the parent's untouched", () => {
    const before = structuredClone(parent);
    const a = cloneConfig(parent, "web.1", "/run/snowflock/xen-clone-shell.elf");
    const b = cloneConfig(parent, "web.2", "/run/snowflock/xen-clone-shell.elf");
    const [ca, cb] = [JSON.parse(a.json), JSON.parse(b.json)] as LibxlConfig[];
    expect(ca!.c_info.name).toBe("web.1");
    expect(ca!.c_info.uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(ca!.c_info.uuid).not.toBe(cb!.c_info.uuid);
    expect(ca!.c_info.uuid).not.toBe(parent.c_info.uuid);
    expect(ca!.b_info).toEqual({ kernel: "/run/snowflock/xen-clone-shell.elf" });
    const macs = [...ca!.nics!, ...cb!.nics!].map((n) => n.mac!);
    for (const mac of macs) expect(mac).toMatch(/^00:16:3e:[0-7][0-9a-f]:[0-9a-f]{2}:[0-9a-f]{2}$/);
    expect(new Set([...macs, "00:16:3e:00:00:01", "00:16:3e:00:00:02"]).size).toBe(6);
    expect(a.mac).toBe(ca!.nics![0]!.mac!);
    expect(parent).toEqual(before);
  });

  test("a domain without NICs still gets a MAC of its own (for XenStore)", () => {
    expect(cloneConfig({ ...parent, nics: undefined }, "web.1", "/k").mac).toMatch(/^00:16:3e:/);
  });
});

describe("a clone never writes its parent's disk", () => {
  test("read-only disks (readwrite absent or 0) are fine", () => {
    expect(() => refuseWritableDisks("web", parent)).not.toThrow();
    expect(() => refuseWritableDisks("web", { ...parent, disks: [{ vdev: "xvda", readwrite: 0 }] })).not.toThrow();
  });

  test("a writable disk refuses the fork, naming it", () => {
    const config = {
      ...parent,
      disks: [
        { vdev: "xvda", pdev_path: "/img/root.img", readwrite: 1 },
        { vdev: "xvdb", pdev_path: "/img/ro.img" },
      ],
    };
    expect(() => refuseWritableDisks("web", config)).toThrow(
      "domain web has a writable disk: xvda (/img/root.img); its clones would write it too",
    );
  });
});

describe("the clone shell kernel", () => {
  test("an ELF64 x86-64 executable loading one page at 1 MiB, with Xen's PHYS32_ENTRY note pointing there", () => {
    const image = shellKernelImage();
    const v = new DataView(image.buffer);
    expect([...image.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]);
    expect(v.getUint16(18, true)).toBe(62);
    expect(v.getBigUint64(24, true)).toBe(0x100000n);
    const phoff = Number(v.getBigUint64(32, true));
    const types = [0, 1].map((i) => v.getUint32(phoff + i * 56, true));
    expect(types).toEqual([1, 4]); // PT_LOAD, PT_NOTE
    const noteAt = Number(v.getBigUint64(phoff + 56 + 8, true));
    expect(v.getUint32(noteAt + 8, true)).toBe(18); // XEN_ELFNOTE_PHYS32_ENTRY
    expect(new TextDecoder().decode(image.subarray(noteAt + 12, noteAt + 15))).toBe("Xen");
    expect(v.getUint32(noteAt + 16, true)).toBe(0x100000);
    expect(image.byteLength).toBeLessThan(8192);
  });
});

describe("agent requests", () => {
  test("verb, sequence number and arguments", () => {
    expect(parseRequest(5, "clone 1234 3")).toEqual({ domain: 5, verb: "clone", seq: "1234", args: ["3"] });
    expect(parseRequest(5, "join 99\n")).toEqual({ domain: 5, verb: "join", seq: "99", args: [] });
  });

  test("empty, sequence-less or forged-looking text is no request", () => {
    for (const text of ["", "clone", "clone abc 3", "kill -1", `clone ${"9".repeat(40)} 1`]) expect(parseRequest(5, text)).toBeUndefined();
  });
});
