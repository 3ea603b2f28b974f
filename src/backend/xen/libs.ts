/**
 * Xen's own libraries through bun:ffi: the sonames, every symbol snowflock calls with its C
 * signature, and a loader that opens each library on first use — importing this file loads
 * nothing, so a KVM host never touches them. A missing library is one XEN_UNAVAILABLE line.
 *
 * Signatures follow the 4.17 headers (xenctrl.h, xenforeignmemory.h, xenevtchn.h, xenstore.h,
 * libxl.h, xentoollog.h); test/unit/xen-libs.test.ts checks that every symbol exists.
 */
import { dlopen, type FFIFunction, FFIType as T, type Library, type Pointer } from "bun:ffi";
import type { XenReleaseAbi } from "./abi.ts";
import { xenUnavailable } from "./errors.ts";

const SYMBOLS = {
  xentoollog: {
    // xentoollog_logger_stdiostream *xtl_createlogger_stdiostream(FILE *f, xentoollog_level min_level, unsigned flags)
    xtl_createlogger_stdiostream: { args: [T.ptr, T.i32, T.u32], returns: T.ptr },
    xtl_logger_destroy: { args: [T.ptr], returns: T.void },
  },
  xenctrl: {
    // xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger, unsigned open_flags)
    xc_interface_open: { args: [T.ptr, T.ptr, T.u32], returns: T.ptr },
    xc_interface_close: { args: [T.ptr], returns: T.i32 },
    // int xc_version(xc_interface *xch, int cmd, void *arg)
    xc_version: { args: [T.ptr, T.i32, T.ptr], returns: T.i32 },
    // int xc_physinfo(xc_interface *xch, xc_physinfo_t *info)
    xc_physinfo: { args: [T.ptr, T.ptr], returns: T.i32 },
    // int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains, xc_domaininfo_t *info)
    xc_domain_getinfolist: { args: [T.ptr, T.u32, T.u32, T.ptr], returns: T.i32 },
    xc_domain_pause: { args: [T.ptr, T.u32], returns: T.i32 },
    xc_domain_unpause: { args: [T.ptr, T.u32], returns: T.i32 },
    // int xc_domain_hvm_getcontext(xc_interface *xch, uint32_t domid, uint8_t *ctxt_buf, uint32_t size)
    xc_domain_hvm_getcontext: { args: [T.ptr, T.u32, T.ptr, T.u32], returns: T.i32 },
    // int xc_domain_hvm_setcontext(xc_interface *xch, uint32_t domid, uint8_t *hvm_ctxt, uint32_t size)
    xc_domain_hvm_setcontext: { args: [T.ptr, T.u32, T.ptr, T.u32], returns: T.i32 },
    // int xc_hvm_param_get(xc_interface *handle, uint32_t dom, uint32_t param, uint64_t *value)
    xc_hvm_param_get: { args: [T.ptr, T.u32, T.u32, T.ptr], returns: T.i32 },
    // int xc_domain_maximum_gpfn(xc_interface *xch, uint32_t domid, xen_pfn_t *gpfns)
    xc_domain_maximum_gpfn: { args: [T.ptr, T.u32, T.ptr], returns: T.i32 },
    // int xc_vcpu_getcontext(xc_interface *xch, uint32_t domid, uint32_t vcpu, vcpu_guest_context_any_t *ctxt)
    xc_vcpu_getcontext: { args: [T.ptr, T.u32, T.u32, T.ptr], returns: T.i32 },
    // int xc_memshr_fork(xc_interface *xch, uint32_t pdomid, uint32_t domid, bool allow_with_iommu, bool block_interrupts)
    xc_memshr_fork: { args: [T.ptr, T.u32, T.u32, T.bool, T.bool], returns: T.i32 },
    // int xc_mem_paging_nominate(xc_interface *xch, uint32_t domain_id, uint64_t gfn); _evict likewise
    xc_mem_paging_nominate: { args: [T.ptr, T.u32, T.u64], returns: T.i32 },
    xc_mem_paging_evict: { args: [T.ptr, T.u32, T.u64], returns: T.i32 },
    // int xc_mem_paging_enable(xc_interface *xch, uint32_t domain_id, uint32_t *port)
    xc_mem_paging_enable: { args: [T.ptr, T.u32, T.ptr], returns: T.i32 },
    // int xc_mem_paging_load(xc_interface *xch, uint32_t domain_id, uint64_t gfn, void *buffer)
    xc_mem_paging_load: { args: [T.ptr, T.u32, T.u64, T.ptr], returns: T.i32 },
    // int xc_domain_populate_physmap_exact(xch, uint32_t domid, unsigned long nr_extents, unsigned int extent_order, unsigned int mem_flags, xen_pfn_t *extent_start)
    xc_domain_populate_physmap_exact: { args: [T.ptr, T.u32, T.u64, T.u32, T.u32, T.ptr], returns: T.i32 },
    // int xc_domain_decrease_reservation_exact(xch, uint32_t domid, unsigned long nr_extents, unsigned int extent_order, xen_pfn_t *extent_start)
    xc_domain_decrease_reservation_exact: { args: [T.ptr, T.u32, T.u64, T.u32, T.ptr], returns: T.i32 },
    // int xc_domain_setmaxmem(xc_interface *xch, uint32_t domid, uint64_t max_memkb)
    xc_domain_setmaxmem: { args: [T.ptr, T.u32, T.u64], returns: T.i32 },
  },
  xenforeignmemory: {
    // xenforeignmemory_handle *xenforeignmemory_open(struct xentoollog_logger *logger, unsigned open_flags)
    xenforeignmemory_open: { args: [T.ptr, T.u32], returns: T.ptr },
    xenforeignmemory_close: { args: [T.ptr], returns: T.i32 },
    // void *xenforeignmemory_map(fmem, uint32_t dom, int prot, size_t pages, const xen_pfn_t arr[], int err[])
    xenforeignmemory_map: { args: [T.ptr, T.u32, T.i32, T.u64, T.ptr, T.ptr], returns: T.ptr },
    // int xenforeignmemory_unmap(fmem, void *addr, size_t pages)
    xenforeignmemory_unmap: { args: [T.ptr, T.ptr, T.u64], returns: T.i32 },
  },
  xenevtchn: {
    // xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned open_flags)
    xenevtchn_open: { args: [T.ptr, T.u32], returns: T.ptr },
    xenevtchn_close: { args: [T.ptr], returns: T.i32 },
    xenevtchn_fd: { args: [T.ptr], returns: T.i32 },
    // xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xce, uint32_t domid, evtchn_port_t remote_port)
    xenevtchn_bind_interdomain: { args: [T.ptr, T.u32, T.u32], returns: T.i32 },
    // int xenevtchn_unbind(xce, evtchn_port_t port); _unmask and _notify likewise
    xenevtchn_unbind: { args: [T.ptr, T.u32], returns: T.i32 },
    xenevtchn_unmask: { args: [T.ptr, T.u32], returns: T.i32 },
    xenevtchn_notify: { args: [T.ptr, T.u32], returns: T.i32 },
    // xenevtchn_port_or_error_t xenevtchn_pending(xce): the port that fired (blocks until one does)
    xenevtchn_pending: { args: [T.ptr], returns: T.i32 },
  },
  xenstore: {
    // struct xs_handle *xs_open(unsigned long flags)
    xs_open: { args: [T.u64], returns: T.ptr },
    xs_close: { args: [T.ptr], returns: T.void },
    // void *xs_read(h, xs_transaction_t t, const char *path, unsigned int *len) — malloc'd
    xs_read: { args: [T.ptr, T.u32, T.cstring, T.ptr], returns: T.ptr },
    // bool xs_write(h, t, const char *path, const void *data, unsigned int len)
    xs_write: { args: [T.ptr, T.u32, T.cstring, T.ptr, T.u32], returns: T.bool },
    xs_mkdir: { args: [T.ptr, T.u32, T.cstring], returns: T.bool },
    xs_rm: { args: [T.ptr, T.u32, T.cstring], returns: T.bool },
    // char **xs_directory(h, t, const char *path, unsigned int *num) — one malloc'd block
    xs_directory: { args: [T.ptr, T.u32, T.cstring, T.ptr], returns: T.ptr },
    // bool xs_set_permissions(h, t, const char *path, struct xs_permissions *perms, unsigned int num_perms)
    xs_set_permissions: { args: [T.ptr, T.u32, T.cstring, T.ptr, T.u32], returns: T.bool },
    // bool xs_watch(h, const char *path, const char *token)
    xs_watch: { args: [T.ptr, T.cstring, T.cstring], returns: T.bool },
    xs_unwatch: { args: [T.ptr, T.cstring, T.cstring], returns: T.bool },
    xs_fileno: { args: [T.ptr], returns: T.i32 },
    // char **xs_read_watch(h, unsigned int *num) — blocks; char **xs_check_watch(h) does not
    xs_read_watch: { args: [T.ptr, T.ptr], returns: T.ptr },
    xs_check_watch: { args: [T.ptr], returns: T.ptr },
    // char *xs_get_domain_path(h, unsigned int domid) — malloc'd
    xs_get_domain_path: { args: [T.ptr, T.u32], returns: T.ptr },
    // xs_transaction_t xs_transaction_start(h); bool xs_transaction_end(h, t, bool abort)
    xs_transaction_start: { args: [T.ptr], returns: T.u32 },
    xs_transaction_end: { args: [T.ptr, T.u32, T.bool], returns: T.bool },
  },
  xenlight: {
    // int libxl_ctx_alloc(libxl_ctx **pctx, int version, unsigned flags, xentoollog_logger *lg)
    libxl_ctx_alloc: { args: [T.ptr, T.i32, T.u32, T.ptr], returns: T.i32 },
    libxl_ctx_free: { args: [T.ptr], returns: T.i32 },
    // void libxl_domain_config_init(libxl_domain_config *d_config); ..._dispose likewise
    libxl_domain_config_init: { args: [T.ptr], returns: T.void },
    libxl_domain_config_dispose: { args: [T.ptr], returns: T.void },
    // int libxl_retrieve_domain_configuration(ctx, uint32_t domid, libxl_domain_config *d_config, const libxl_asyncop_how *ao_how)
    libxl_retrieve_domain_configuration: { args: [T.ptr, T.u32, T.ptr, T.ptr], returns: T.i32 },
    // char *libxl_domain_config_to_json(ctx, libxl_domain_config *p) — malloc'd
    libxl_domain_config_to_json: { args: [T.ptr, T.ptr], returns: T.ptr },
    // int libxl_domain_config_from_json(ctx, libxl_domain_config *p, const char *s)
    libxl_domain_config_from_json: { args: [T.ptr, T.ptr, T.cstring], returns: T.i32 },
    // int libxl_domain_create_new(ctx, d_config, uint32_t *domid, ao_how, aop_console_how): leaves it paused
    libxl_domain_create_new: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
    // int libxl_domain_suspend_only(ctx, uint32_t domid, ao_how): the guest suspends itself and stays so
    libxl_domain_suspend_only: { args: [T.ptr, T.u32, T.ptr], returns: T.i32 },
    // int libxl_domain_resume(ctx, uint32_t domid, int suspend_cancel, ao_how)
    libxl_domain_resume: { args: [T.ptr, T.u32, T.i32, T.ptr], returns: T.i32 },
    // int libxl_domain_unpause(ctx, uint32_t domid, ao_how); libxl_domain_destroy likewise
    libxl_domain_unpause: { args: [T.ptr, T.u32, T.ptr], returns: T.i32 },
    libxl_domain_destroy: { args: [T.ptr, T.u32, T.ptr], returns: T.i32 },
  },
  libc: {
    // the Xen libraries hand out malloc'd strings and vectors
    free: { args: [T.ptr], returns: T.void },
  },
} as const satisfies Record<string, Record<string, FFIFunction>>;

/** A non-null C pointer as bun:ffi returns it (typed as either form). */
export type NativePointer = Pointer | bigint;

export type XenLibraryName = keyof typeof SYMBOLS;
export type XenSymbols<N extends XenLibraryName> = Library<(typeof SYMBOLS)[N]>["symbols"];

/** Where each library comes from on Debian, for the error that says what to install. */
const PACKAGES: Record<XenLibraryName, (release: string) => string> = {
  xentoollog: () => "libxentoollog1",
  xenctrl: (release) => `libxenmisc${release}`,
  xenforeignmemory: () => "libxenforeignmemory1",
  xenevtchn: () => "libxenevtchn1",
  xenstore: () => "libxenstore4",
  xenlight: (release) => `libxenmisc${release}`,
  libc: () => "libc6",
};

/** The soname of a library as built for this release. */
export function sonameOf(name: XenLibraryName, abi: XenReleaseAbi): string {
  switch (name) {
    case "xenctrl":
      return abi.sonames.xenctrl;
    case "xenlight":
      return abi.sonames.xenlight;
    case "xentoollog":
      return "libxentoollog.so.1";
    case "xenforeignmemory":
      return "libxenforeignmemory.so.1";
    case "xenevtchn":
      return "libxenevtchn.so.1";
    case "xenstore":
      return "libxenstore.so.4";
    case "libc":
      return "libc.so.6";
  }
}

/** Every library and the symbols declared for it: for the symbol check, never for calls. */
export function declaredSymbols(abi: XenReleaseAbi): Array<{ name: XenLibraryName; soname: string; symbols: Record<string, FFIFunction> }> {
  return (Object.keys(SYMBOLS) as XenLibraryName[]).map((name) => ({ name, soname: sonameOf(name, abi), symbols: SYMBOLS[name] }));
}

const loaded = new Map<string, unknown>();

/** Opens one library (once per thread) and returns its functions. */
export function xenLibrary<N extends XenLibraryName>(name: N, abi: XenReleaseAbi): XenSymbols<N> {
  const soname = sonameOf(name, abi);
  const cached = loaded.get(soname);
  if (cached) return cached as XenSymbols<N>;
  let library: Library<(typeof SYMBOLS)[N]>;
  try {
    library = dlopen(soname, SYMBOLS[name]);
  } catch (error) {
    const missingSymbol = /Symbol "([^"]+)" not found/.exec((error as Error).message)?.[1];
    throw missingSymbol
      ? xenUnavailable(
          `${soname} lacks ${missingSymbol}: it is not the Xen ${abi.release} build snowflock expects`,
          `install Debian's ${PACKAGES[name](abi.release)}`,
          error,
        )
      : xenUnavailable(
          `Xen's libraries are missing: cannot load ${soname}`,
          `install Debian's ${PACKAGES[name](abi.release)} (xen-utils-${abi.release} brings all of them)`,
          error,
        );
  }
  loaded.set(soname, library.symbols);
  return library.symbols;
}
