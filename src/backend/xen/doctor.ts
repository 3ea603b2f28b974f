/** `snowflock doctor` on Xen: the hypervisor, its capabilities and what clones' memory can be here. */
import type { DoctorReport } from "../backend.ts";
import { isXenUnavailable } from "./errors.ts";
import { type Availability, xenFeatures } from "./features.ts";
import { openXen, type XenHost } from "./host.ts";

const yesNo = (a: Availability) =>
  a.available === true ? `yes: ${a.detail}` : a.available === false ? `no: ${a.reason}` : `unknown: ${a.reason}`;

/** Host memory as people read it: 3.0G, 512M. */
const approximate = (bytes: number) => (bytes >= 1024 ** 3 ? `${(bytes / 1024 ** 3).toFixed(1)}G` : `${Math.round(bytes / 1024 ** 2)}M`);

export async function xenDoctor(): Promise<DoctorReport> {
  let host: XenHost;
  try {
    host = openXen();
  } catch (error) {
    if (isXenUnavailable(error)) return { backend: "xen", available: false, reason: error.render(), error };
    throw error;
  }
  try {
    const { version, abi } = host;
    const info = host.physinfo();
    const features = xenFeatures(host);
    const facts = {
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
      cloneMemory: features.cloneMemory,
    };
    const types = Object.entries(facts.guestTypes)
      .flatMap(([type, has]) => (has ? [type] : []))
      .join(" ");
    const cpu = facts.cpu;
    return {
      backend: "xen",
      available: true,
      memoryOnDemand: features.cloneMemory === "ondemand",
      facts,
      lines: [
        ["backend", "xen (dom0)"],
        ["xen", `${facts.version} (domctl interface 0x${facts.domctlInterfaceVersion.toString(16)})`],
        ["capabilities", facts.capabilities],
        ["virt caps", types || "none"],
        ["cpus", `${cpu.count} at ${cpu.mhz} MHz, ${cpu.vmx ? "Intel VT-x" : cpu.svm ? "AMD-V" : "no hardware virtualization"}`],
        ["memory", `${approximate(facts.memory.totalBytes)} total, ${approximate(facts.memory.freeBytes)} free`],
        ["domains", String(facts.domains)],
        ["mem-sharing fork", yesNo(features.memSharingFork)],
        ["paging", yesNo(features.paging)],
        [
          "memory-on-demand",
          features.cloneMemory === "ondemand"
            ? "yes (paging): fork --memory ondemand and the domUs' sf clone, through snowflock agent"
            : 'no: clones get eager copies of their parent\'s memory (memory: "eager")',
        ],
      ],
    };
  } finally {
    host.close();
  }
}
