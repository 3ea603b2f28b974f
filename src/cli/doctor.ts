/**
 * `snowflock doctor [--backend kvm|xen] [--json]`: what this host offers each backend, and why
 * not where it offers nothing. Without --backend it reports the detected backend (xen in a Xen
 * dom0, else kvm), or one line per backend when neither works, and exits 0; a backend asked for
 * by name that is absent is that backend's one-line error and exit status 1. --json reports both
 * backends (or the one asked for). Where neither works it names the way to try snowflock here
 * anyway: the demo in the nested KVM host.
 */
import type { CAC } from "cac";
import type { Availability, XenFeatures } from "../backend/xen/features.ts";
import { SnowflockError } from "../errors.ts";
import { type Backend, BACKENDS, detectedBackend, parseBackend } from "./backend.ts";
import { printJson, printLine } from "../output.ts";


type Unavailable = { available: false; reason: string; error: SnowflockError };

interface KvmReport {
  backend: "kvm";
  available: true;
  device: string;
  apiVersion: number;
  userfaultfd: { available: true } | { available: false; reason: string };
  memoryOnDemand: boolean;
}

interface XenReport {
  backend: "xen";
  available: true;
  version: string;
  release: string;
  domctlInterfaceVersion: number;
  capabilities: string;
  guestTypes: { pv: boolean; hvm: boolean; hap: boolean; shadow: boolean };
  cpu: { count: number; mhz: number; vmx: boolean; svm: boolean };
  memory: { totalBytes: number; freeBytes: number };
  domains: number;
  memSharingFork: Availability;
  paging: Availability;
  memoryOnDemand: boolean;
  cloneMemory: XenFeatures["cloneMemory"];
}

type Report = KvmReport | XenReport | Unavailable;

function unavailable(error: SnowflockError): Unavailable {
  return { available: false, reason: error.render(), error };
}

async function kvmReport(): Promise<KvmReport | Unavailable> {
  const { kvmDevice, kvmHost } = await import("../backend/kvm/host.ts");
  const abi = await import("../backend/kvm/abi.ts");
  try {
    kvmHost(); // opens the device and checks the API version and every capability snowflock needs
  } catch (error) {
    if (error instanceof SnowflockError) return unavailable(error);
    throw error;
  }
  const userfaultfd = await userfaultfdAvailable();
  return { backend: "kvm", available: true, device: kvmDevice(), apiVersion: abi.KVM_API_VERSION, userfaultfd, memoryOnDemand: userfaultfd.available };
}

/** Memory-on-demand on KVM rests on userfaultfd: open one and do the API handshake, as memtap does. */
async function userfaultfdAvailable(): Promise<KvmReport["userfaultfd"]> {
  const { uffdApi, userfaultfd } = await import("../sys/uffd.ts");
  const { close } = await import("../sys/files.ts");
  const { O_CLOEXEC, O_NONBLOCK } = await import("../sys/constants.ts");
  try {
    const fd = userfaultfd(O_CLOEXEC | O_NONBLOCK);
    try {
      uffdApi(fd, 0);
    } finally {
      close(fd);
    }
    return { available: true };
  } catch (error) {
    if (error instanceof SnowflockError) return { available: false, reason: error.render() };
    throw error;
  }
}

async function xenReport(): Promise<XenReport | Unavailable> {
  const { openXen } = await import("../backend/xen/host.ts");
  const { xenFeatures } = await import("../backend/xen/features.ts");
  const { isXenUnavailable } = await import("../backend/xen/errors.ts");
  let host;
  try {
    host = openXen();
  } catch (error) {
    if (isXenUnavailable(error)) return unavailable(error);
    throw error;
  }
  try {
    const { version, abi } = host;
    const info = host.physinfo();
    const features = xenFeatures(host);
    return {
      backend: "xen",
      available: true,
      version: `${version.major}.${version.minor}${version.extra}`,
      release: abi.release,
      domctlInterfaceVersion: abi.constants.XEN_DOMCTL_INTERFACE_VERSION,
      capabilities: host.capabilities,
      guestTypes: { pv: features.pv, hvm: features.hvm, hap: features.hap, shadow: features.shadow },
      cpu: { count: info.nrCpus, mhz: Math.round(info.cpuKhz / 1000), vmx: info.cpu.vmx, svm: info.cpu.svm },
      memory: { totalBytes: info.totalPages * info.pageSize, freeBytes: info.freePages * info.pageSize },
      domains: host.listDomains().length,
      memSharingFork: features.memSharingFork,
      paging: features.paging,
      memoryOnDemand: features.cloneMemory === "ondemand",
      cloneMemory: features.cloneMemory,
    };
  } finally {
    host.close();
  }
}

async function report(backend: Backend): Promise<Report> {
  return backend === "kvm" ? kvmReport() : xenReport();
}

/** Host memory as people read it: 3.0G, 512M. */
const approximate = (bytes: number) => (bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)}G` : `${Math.round(bytes / 1024 ** 2)}M`);

const yesNo = (a: Availability) => (a.available === true ? `yes: ${a.detail}` : a.available === false ? `no: ${a.reason}` : `unknown: ${a.reason}`);

function printFields(fields: Array<[string, string]>): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [k, v] of fields) printLine(`${k.padEnd(width)}  ${v}`);
}

function printReport(r: KvmReport | XenReport): void {
  if (r.backend === "kvm") {
    printFields([
      ["backend", "kvm"],
      ["device", `${r.device} (opens, every capability snowflock needs)`],
      ["api version", String(r.apiVersion)],
      ["userfaultfd", r.userfaultfd.available ? "yes" : `no: ${r.userfaultfd.reason}`],
      ["memory-on-demand", r.memoryOnDemand ? "yes (userfaultfd)" : "no: --memory ondemand and clones on other hosts need userfaultfd"],
    ]);
    return;
  }
  const types = [r.guestTypes.pv && "pv", r.guestTypes.hvm && "hvm", r.guestTypes.hap && "hap", r.guestTypes.shadow && "shadow"].filter(Boolean).join(" ");
  printFields([
    ["backend", "xen (dom0)"],
    ["xen", `${r.version} (domctl interface 0x${r.domctlInterfaceVersion.toString(16)})`],
    ["capabilities", r.capabilities],
    ["virt caps", types || "none"],
    ["cpus", `${r.cpu.count} at ${r.cpu.mhz} MHz, ${r.cpu.vmx ? "Intel VT-x" : r.cpu.svm ? "AMD-V" : "no hardware virtualization"}`],
    ["memory", `${approximate(r.memory.totalBytes)} total, ${approximate(r.memory.freeBytes)} free`],
    ["domains", String(r.domains)],
    ["mem-sharing fork", yesNo(r.memSharingFork)],
    ["paging", yesNo(r.paging)],
    ["memory-on-demand", r.memoryOnDemand ? "yes (paging)" : 'no: clones get eager copies of their parent\'s memory (memory: "eager")'],
  ]);
}

/** Where neither backend works: how to see snowflock run on this machine anyway. */
export const NESTED_DEMO_HINT =
  "to try snowflock on this machine anyway: `bun run demo` in snowflock's repository runs its demo inside the nested KVM host (a VM under QEMU's software emulation whose kvm-amd gives a real /dev/kvm; 10-50x slower; test/nested/README.md)";

/** For JSON: an unavailable backend without its error object. */
function plain(r: Report): KvmReport | XenReport | Omit<Unavailable, "error"> {
  return r.available ? r : { available: false, reason: r.reason };
}

export function registerDoctor(cli: CAC): void {
  cli
    .command("doctor", "Check what this host offers each backend (KVM, Xen)")
    .option("--json", "Print a JSON object")
    .action(async (options: { backend?: string; json?: boolean }) => {
      const asked = parseBackend(options.backend);
      if (asked !== undefined) {
        const backend = asked;
        const r = await report(backend);
        if (options.json) {
          printJson({ backend, backends: { [backend]: plain(r) } });
          return r.available ? 0 : 1;
        }
        if (!r.available) throw r.error;
        printReport(r);
        return 0;
      }

      const detected = await detectedBackend();
      const reports = { kvm: await report("kvm"), xen: await report("xen") };
      const none = !reports.kvm.available && !reports.xen.available;
      if (options.json) {
        printJson({ backend: detected, backends: { kvm: plain(reports.kvm), xen: plain(reports.xen) }, ...(none ? { tryNested: NESTED_DEMO_HINT } : {}) });
        return 0;
      }
      const chosen = reports[detected];
      if (chosen.available) printReport(chosen);
      else for (const b of BACKENDS) printLine(`${b}: ${reports[b].available ? `available (snowflock doctor --backend ${b})` : reports[b].reason}`);
      if (none) printLine(NESTED_DEMO_HINT);
      return 0;
    });
}
