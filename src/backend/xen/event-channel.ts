/**
 * An event channel to a domain (libxenevtchn): the pager binds the port Xen gave it when paging
 * was enabled, waits for its events on the fd, unmasks after each and notifies Xen after
 * publishing responses. Mechanical, as xenevtchn.h has it.
 */
import { SyscallError } from "../../sys/errno.ts";
import { lastErrno } from "../../sys/libc.ts";
import type { XenReleaseAbi } from "./abi.ts";
import { type NativePointer, xenLibrary, type XenSymbols } from "./libs.ts";

export class EventChannel {
  private constructor(
    private handle: NativePointer | null,
    private readonly ev: XenSymbols<"xenevtchn">,
    /** This end's port. */
    readonly port: number,
    /** Readable when an event is pending. */
    readonly fd: number,
  ) {}

  /** Binds domain `domid`'s `remotePort` to a new port here; `logger` an xentoollog_logger* (null: the library's). */
  static bind(abi: XenReleaseAbi, logger: NativePointer | null, domid: number, remotePort: number): EventChannel {
    const ev = xenLibrary("xenevtchn", abi);
    const handle = ev.xenevtchn_open(logger, 0);
    if (handle === null) throw new SyscallError("xenevtchn_open", lastErrno());
    const port = ev.xenevtchn_bind_interdomain(handle, domid, remotePort);
    if (port < 0) {
      const errno = lastErrno();
      ev.xenevtchn_close(handle);
      throw new SyscallError("xenevtchn_bind_interdomain", errno, `domain ${domid} port ${remotePort}`);
    }
    return new EventChannel(handle, ev, port, ev.xenevtchn_fd(handle));
  }

  /** After the fd turned readable: takes the pending event and unmasks the port for the next one. */
  acknowledge(): void {
    const port = this.ev.xenevtchn_pending(this.live());
    if (port < 0) throw new SyscallError("xenevtchn_pending", lastErrno());
    if (this.ev.xenevtchn_unmask(this.live(), port) < 0) throw new SyscallError("xenevtchn_unmask", lastErrno(), `port ${port}`);
  }

  notify(): void {
    if (this.ev.xenevtchn_notify(this.live(), this.port) < 0) throw new SyscallError("xenevtchn_notify", lastErrno(), `port ${this.port}`);
  }

  close(): void {
    if (this.handle === null) return;
    this.ev.xenevtchn_unbind(this.handle, this.port);
    this.ev.xenevtchn_close(this.handle);
    this.handle = null;
  }

  private live(): NativePointer {
    if (this.handle === null) throw new Error("EventChannel used after close()");
    return this.handle;
  }
}
