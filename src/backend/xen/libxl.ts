/**
 * libxenlight, the toolstack library `xl` is built on: a domain's configuration (as libxl's
 * JSON), creating a domain shell from one, the guest's own suspend and resume, unpause, destroy.
 * Thin: each method is one libxl call; every call is synchronous (no ao_how).
 */
import { CString } from "bun:ffi";
import { SnowflockError } from "../../errors.ts";
import { LIBXL_VERSION, type XenReleaseAbi } from "./abi.ts";
import { type NativePointer, xenLibrary, type XenSymbols } from "./libs.ts";

/** libxl's error numbers (_libxl_types.h) that a user may meet, for the message. */
const ERROR_DOMAIN_NOTFOUND = -21;
const LIBXL_ERRORS: Record<number, string> = {
  [-1]: "ERROR_NONSPECIFIC",
  [-3]: "ERROR_FAIL",
  [-5]: "ERROR_NOMEM",
  [-6]: "ERROR_INVAL",
  [-21]: "ERROR_DOMAIN_NOTFOUND",
  [-22]: "ERROR_ABORTED",
  [-23]: "ERROR_NOTFOUND",
};

export class LibxlError extends SnowflockError {
  constructor(
    readonly call: string,
    readonly result: number,
    detail: string,
  ) {
    super(
      result === ERROR_DOMAIN_NOTFOUND ? "NOT_FOUND" : "INTERNAL",
      `${call} failed for ${detail}: ${LIBXL_ERRORS[result] ?? `libxl error ${result}`}`,
      "libxl's own lines are in /var/log/xen; `xl dmesg` shows the hypervisor's",
    );
  }
}

export class Libxl {
  private constructor(
    private context: NativePointer | null,
    private readonly xl: XenSymbols<"xenlight">,
    private readonly libc: XenSymbols<"libc">,
    private readonly abi: XenReleaseAbi,
  ) {}

  /** `logger` is an xentoollog_logger* (libxl needs one). */
  static open(abi: XenReleaseAbi, logger: NativePointer): Libxl {
    const xl = xenLibrary("xenlight", abi);
    const out = new BigUint64Array(1);
    const result = xl.libxl_ctx_alloc(out, LIBXL_VERSION, 0, logger);
    if (result !== 0 || out[0] === 0n) throw new LibxlError("libxl_ctx_alloc", result, "this dom0");
    return new Libxl(out[0]!, xl, xenLibrary("libc", abi), abi);
  }

  close(): void {
    if (this.context !== null) this.xl.libxl_ctx_free(this.context);
    this.context = null;
  }

  /** The configuration libxl keeps for a running domU, as libxl JSON (what `xl list -l` shows). */
  configurationJson(domid: number): string {
    return this.withConfig((config) => {
      this.check(
        "libxl_retrieve_domain_configuration",
        this.xl.libxl_retrieve_domain_configuration(this.live(), domid, config, null),
        `domain ${domid}`,
      );
      const json = this.xl.libxl_domain_config_to_json(this.live(), config);
      if (json === null) throw new LibxlError("libxl_domain_config_to_json", -5, `domain ${domid}`);
      try {
        return new CString(json as never).toString();
      } finally {
        this.libc.free(json);
      }
    });
  }

  /** Builds a domain from libxl JSON and leaves it paused; its domid. */
  createPaused(json: string, what: string): number {
    return this.withConfig((config) => {
      this.check(
        "libxl_domain_config_from_json",
        this.xl.libxl_domain_config_from_json(this.live(), config, Buffer.from(`${json}\0`)),
        what,
      );
      const domid = new Uint32Array(1);
      this.check("libxl_domain_create_new", this.xl.libxl_domain_create_new(this.live(), config, domid, null, null), what);
      return domid[0]!;
    });
  }

  /** Asks the guest to suspend itself (XenStore control/shutdown) and waits until it has. */
  suspend(domid: number): void {
    this.check("libxl_domain_suspend_only", this.xl.libxl_domain_suspend_only(this.live(), domid, null), `domain ${domid}`);
  }

  /** Resumes a suspended guest; `cancelled`: it carries on in the same domain, as after a checkpoint. */
  resume(domid: number, cancelled: boolean): void {
    this.check("libxl_domain_resume", this.xl.libxl_domain_resume(this.live(), domid, cancelled ? 1 : 0, null), `domain ${domid}`);
  }

  unpause(domid: number): void {
    this.check("libxl_domain_unpause", this.xl.libxl_domain_unpause(this.live(), domid, null), `domain ${domid}`);
  }

  destroy(domid: number): void {
    this.check("libxl_domain_destroy", this.xl.libxl_domain_destroy(this.live(), domid, null), `domain ${domid}`);
  }

  private withConfig<R>(use: (config: Uint8Array) => R): R {
    const config = new Uint8Array(this.abi.layouts.libxl_domain_config.size);
    this.xl.libxl_domain_config_init(config);
    try {
      return use(config);
    } finally {
      this.xl.libxl_domain_config_dispose(config);
    }
  }

  private check(call: string, result: number, detail: string): void {
    if (result !== 0) throw new LibxlError(call, result, detail);
  }

  private live(): NativePointer {
    if (this.context === null) throw new Error("Libxl used after close()");
    return this.context;
  }
}
