/** x86-64 Linux constants used through bun:ffi. Values from the kernel's uapi headers. */

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_TRUNC = 0o1000;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
/** An unnamed file in a directory (O_TMPFILE, which includes O_DIRECTORY). */
export const O_TMPFILE = 0o20200000;
/** flock(2): an exclusive lock. */
export const LOCK_EX = 2;

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
/** ioctl: share `source`'s extents (a reflink), on filesystems that can. */
export const FICLONE = 0x40049409;

export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const PROT_EXEC = 4;

export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_POPULATE = 0x8000;
export const MAP_FAILED = -1;
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;

export const MFD_CLOEXEC = 0x0001;
export const MFD_ALLOW_SEALING = 0x0002;

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const EFD_SEMAPHORE = 1;

export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;

export const AF_UNIX = 1;
export const AF_INET = 2;
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const MSG_NOSIGNAL = 0x4000;

export const SA_RESTART = 0x10000000;
export const SIGTERM = 15;
export const SIGKILL = 9;

/** x86-64 syscall numbers for calls libc has no wrapper for (or whose wrapper we avoid). */
export const SYS_gettid = 186;
export const SYS_tgkill = 234;
export const SYS_userfaultfd = 323;
export const SYS_memfd_create = 319;

export const EPERM = 1;
export const ENOENT = 2;
export const ESRCH = 3;
export const EINTR = 4;
export const EAGAIN = 11;
export const EACCES = 13;
export const EEXIST = 17;

export const AF_PACKET = 17;
export const SOCK_DGRAM = 2;
export const MSG_DONTWAIT = 0x40;

/** UDP and multicast socket options (mcdist's UDP transport), packet-socket options (its Ethernet one). */
export const INADDR_ANY = 0;
export const IPPROTO_IP = 0;
export const IP_MULTICAST_IF = 32;
export const IP_MULTICAST_TTL = 33;
export const IP_MULTICAST_LOOP = 34;
export const IP_ADD_MEMBERSHIP = 35;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SOL_PACKET = 263;
export const PACKET_ADD_MEMBERSHIP = 1;
export const PACKET_MR_MULTICAST = 0;
export const PACKET_IGNORE_OUTGOING = 23;
export const PACKET_RX_RING = 5;
export const PACKET_STATISTICS = 6;
export const PACKET_VERSION = 10;
export const TPACKET_V2 = 1;

export const CLOCK_THREAD_CPUTIME_ID = 3;
