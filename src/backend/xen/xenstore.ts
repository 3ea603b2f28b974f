/**
 * XenStore through libxenstore: one wrapper per call, typed, with the library's malloc'd results
 * copied out and freed. A failed call throws a SyscallError naming the call and the path; a read
 * of a missing node is undefined, not an error.
 *
 * Written to xenstore.h; exercised only in a dom0 (test/xen), since nothing here can answer
 * without xenstored.
 */
import { CString, read, toArrayBuffer } from "bun:ffi";
import { EAGAIN, ENOENT } from "../../sys/constants.ts";
import { SyscallError } from "../../sys/errno.ts";
import { lastErrno } from "../../sys/libc.ts";
import { XBT_NULL, XS_WATCH_PATH, XS_WATCH_TOKEN, xs_permissions, type XenReleaseAbi } from "./abi.ts";
import { type NativePointer, xenLibrary, type XenSymbols } from "./libs.ts";

const encoder = new TextEncoder();
const cstring = (s: string) => encoder.encode(`${s}\0`);

export interface XenStorePermission {
  /** The domain the entry is for; the first entry names the owner and everyone else's access. */
  domid: number;
  /** XS_PERM_NONE / XS_PERM_READ / XS_PERM_WRITE, or'ed. */
  perms: number;
}

export interface XenStoreWatchEvent {
  path: string;
  token: string;
}

export class XenStore {
  private constructor(
    private handle: NativePointer | null,
    private readonly xs: XenSymbols<"xenstore">,
    private readonly libc: XenSymbols<"libc">,
  ) {}

  /** xs_open: xenstored's socket, else the xenbus device. */
  static open(abi: XenReleaseAbi, flags = 0): XenStore {
    const xs = xenLibrary("xenstore", abi);
    const handle = xs.xs_open(flags);
    if (handle === null) throw new SyscallError("xs_open", lastErrno(), "is xenstored running?");
    return new XenStore(handle, xs, xenLibrary("libc", abi));
  }

  close(): void {
    if (this.handle !== null) this.xs.xs_close(this.handle);
    this.handle = null;
  }

  /** The node's value, or undefined when it does not exist. */
  read(path: string, transaction = XBT_NULL): Uint8Array | undefined {
    const length = new Uint32Array(1);
    const data = this.xs.xs_read(this.live(), transaction, cstring(path), length);
    if (data === null) return this.absent("xs_read", path);
    // An empty node (a directory, a cleared request) is a value of length 0, which toArrayBuffer refuses.
    return this.take(data, (p) => (length[0] === 0 ? new Uint8Array(0) : new Uint8Array(toArrayBuffer(p, 0, length[0]!)).slice()));
  }

  readString(path: string, transaction = XBT_NULL): string | undefined {
    const value = this.read(path, transaction);
    return value === undefined ? undefined : new TextDecoder().decode(value);
  }

  write(path: string, value: string | Uint8Array, transaction = XBT_NULL): void {
    const data = typeof value === "string" ? encoder.encode(value) : value;
    // A zero-length value still needs a valid pointer.
    const buffer = data.byteLength === 0 ? new Uint8Array(1) : data;
    this.ok("xs_write", path, this.xs.xs_write(this.live(), transaction, cstring(path), buffer, data.byteLength));
  }

  mkdir(path: string, transaction = XBT_NULL): void {
    this.ok("xs_mkdir", path, this.xs.xs_mkdir(this.live(), transaction, cstring(path)));
  }

  /** Removes the node and everything under it. */
  rm(path: string, transaction = XBT_NULL): void {
    this.ok("xs_rm", path, this.xs.xs_rm(this.live(), transaction, cstring(path)));
  }

  /** The names of the node's children, or undefined when it does not exist. */
  directory(path: string, transaction = XBT_NULL): string[] | undefined {
    const count = new Uint32Array(1);
    const vector = this.xs.xs_directory(this.live(), transaction, cstring(path), count);
    if (vector === null) return this.absent("xs_directory", path);
    return this.take(vector, (p) => strings(p, count[0]!));
  }

  setPermissions(path: string, permissions: XenStorePermission[], transaction = XBT_NULL): void {
    const buffer = new Uint8Array(xs_permissions.size * Math.max(1, permissions.length));
    const view = new DataView(buffer.buffer);
    permissions.forEach((p, i) => {
      view.setUint32(i * xs_permissions.size + xs_permissions.fields.id.offset, p.domid, true);
      view.setUint32(i * xs_permissions.size + xs_permissions.fields.perms.offset, p.perms, true);
    });
    this.ok("xs_set_permissions", path, this.xs.xs_set_permissions(this.live(), transaction, cstring(path), buffer, permissions.length));
  }

  watch(path: string, token: string): void {
    this.ok("xs_watch", path, this.xs.xs_watch(this.live(), cstring(path), cstring(token)));
  }

  unwatch(path: string, token: string): void {
    this.ok("xs_unwatch", path, this.xs.xs_unwatch(this.live(), cstring(path), cstring(token)));
  }

  /** Readable when a watch event is queued: poll it, then checkWatch(). */
  fileno(): number {
    const fd = this.xs.xs_fileno(this.live());
    if (fd < 0) throw new SyscallError("xs_fileno", lastErrno());
    return fd;
  }

  /** The next watch event; blocks the thread until there is one. */
  readWatch(): XenStoreWatchEvent {
    const count = new Uint32Array(1);
    const vector = this.xs.xs_read_watch(this.live(), count);
    if (vector === null) throw new SyscallError("xs_read_watch", lastErrno());
    return this.take(vector, (p) => watchEvent(strings(p, count[0]!)));
  }

  /** A queued watch event, or undefined when there is none; never blocks. */
  checkWatch(): XenStoreWatchEvent | undefined {
    const vector = this.xs.xs_check_watch(this.live());
    if (vector === null) {
      const errno = lastErrno();
      if (errno === EAGAIN) return undefined;
      throw new SyscallError("xs_check_watch", errno);
    }
    // xs_check_watch does not report the vector's length; a watch event has exactly two strings.
    return this.take(vector, (p) => watchEvent(strings(p, XS_WATCH_TOKEN + 1)));
  }

  /** "/local/domain/<domid>". */
  domainPath(domid: number): string {
    const path = this.xs.xs_get_domain_path(this.live(), domid);
    if (path === null) throw new SyscallError("xs_get_domain_path", lastErrno(), `domain ${domid}`);
    return this.take(path, (p) => new CString(p).toString());
  }

  transactionStart(): number {
    const t = this.xs.xs_transaction_start(this.live());
    if (t === XBT_NULL) throw new SyscallError("xs_transaction_start", lastErrno());
    return t;
  }

  /** Ends a transaction; false when it must be retried (another writer got in: EAGAIN). */
  transactionEnd(transaction: number, abort = false): boolean {
    if (this.xs.xs_transaction_end(this.live(), transaction, abort)) return true;
    const errno = lastErrno();
    if (errno === EAGAIN && !abort) return false;
    throw new SyscallError("xs_transaction_end", errno);
  }

  private live(): NativePointer {
    if (this.handle === null) throw new Error("XenStore used after close()");
    return this.handle;
  }

  private absent(call: string, path: string): undefined {
    const errno = lastErrno();
    if (errno === ENOENT) return undefined;
    throw new SyscallError(call, errno, path);
  }

  private ok(call: string, path: string, done: boolean): void {
    if (!done) throw new SyscallError(call, lastErrno(), path);
  }

  /** Copies out of a malloc'd result, then frees it. */
  private take<R>(pointer: NativePointer, copy: (p: NativePointer) => R): R {
    try {
      return copy(pointer);
    } finally {
      this.libc.free(pointer);
    }
  }
}

/** `count` C strings from a char* vector (libxenstore puts vector and strings in one block). */
function strings(vector: NativePointer, count: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(new CString(read.ptr(vector, i * 8)).toString());
  return out;
}

function watchEvent(vector: string[]): XenStoreWatchEvent {
  return { path: vector[XS_WATCH_PATH]!, token: vector[XS_WATCH_TOKEN]! };
}
