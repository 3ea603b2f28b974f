/*
 * sf: the Impromptu Cluster API for a Linux guest, as a command, on both backends: in a VM of
 * snowflock's KVM VMM it makes hypercalls (sf-kvm.h); in a Xen domU it asks the snowflock agent
 * in dom0 through XenStore (sf-xen.h). Same commands, output and exit codes on both.
 *
 *   sf clone [--no-heuristic free-pages] N
 *                  fork this VM into N clones; prints the clone ID in every VM of the
 *                  family: 0 in the parent, 1..N in the clones (like fork()). First it holds
 *                  the guest's free memory (free pages, below) unless told not to.
 *   sf id          this VM's clone ID (0 in a parent or a VM never forked)
 *   sf join        (parent) wait until the clones of its rounds not yet joined have ended;
 *                  prints "<ended> <id>=<status>[:<result>]..."
 *   sf exit [S [RESULT]]  (clone) end this clone with status S (default 0) and a short result
 *                  for its parent's join (up to 64 of [0-9A-Za-z._+-], e.g. a digest)
 *   sf kill        (parent) end the running clones of its rounds not yet joined; prints how many
 *   sf send TO MESSAGE  put MESSAGE (one word, up to 128 printable characters) into family member
 *                  TO's inbox (0: the parent), on whichever host it runs
 *   sf recv [--nowait]  take the oldest message of this VM's inbox, waiting for one unless told not
 *                  to; prints "<from> <message>"
 *   sf renew       bind the virtio network devices' driver again, so that Linux reads the MAC
 *                  the clone's device has now (each clone gets its own); sf clone does it in
 *                  every clone. The interfaces come back down, without addresses.
 *   sf read PATH / sf write PATH VALUE   raw XenStore access (Xen; relative paths are this VM's)
 *
 * A refusal is one line "sf: refused: <why>" and exit status 1; bad arguments, the usage and 2.
 * Freestanding: no libc, raw Linux system calls, one static binary that runs in any initramfs
 * (as root on KVM: the port and /proc/self/pagemap).
 */
#define TOOL_NAME "sf"
#include "freestanding.h"

static void sleep_ms(long ms) {
    struct { long s, ns; } t = { ms / 1000, (ms % 1000) * 1000000L };
    syscall3(SYS_nanosleep, (long)&t, 0, 0);
}
static uint64_t now_ns(int clock) {
    struct { long s, ns; } t;
    syscall3(SYS_clock_gettime, clock, (long)&t, 0);
    return (uint64_t)t.s * 1000000000ull + (uint64_t)t.ns;
}
/* Waiting for an answer: every 20 ms at first; after two seconds (a join, a receive) every 250 ms. */
static long poll_pause(long waited) { return waited < 2000 ? 20 : 250; }

static __attribute__((noreturn)) void refused(const char *why) { die("refused: ", why); }

/*
 * The free-pages heuristic without a kernel patch: just before the clone instant sf takes the
 * guest's free memory for itself (one populated anonymous mapping, which Linux zeroes as it hands
 * the pages out) and gives it back right after, in the parent and in every clone. In the frozen
 * image those pages are zero, so a clone never fetches them: its pager zero-fills them. Unlike a
 * list of free frames read from /proc/kpageflags, nothing can go stale between the report and the
 * capture: what is spared is what the image holds as zero. It leaves the kernel a reserve above
 * its watermarks (4 x vm.min_free_kbytes, at least 4 MiB).
 */
#define O_RDONLY 0
#define PROT_READ_WRITE 3
#define MAP_PRIVATE 0x02
#define MAP_ANONYMOUS 0x20
#define MAP_NORESERVE 0x4000
#define MAP_POPULATE 0x8000
#define HUGE_PAGE_BYTES (2ull << 20)

/* The number after `key` at the start of a line of a /proc file (`key` "" : the file's first number); 0 when absent. */
static uint64_t proc_number(const char *path, const char *key) {
    static char text[8192];
    long fd = syscall3(SYS_open, (long)path, O_RDONLY, 0);
    if (fd < 0) return 0;
    long got = 0, n;
    while (got < (long)sizeof text - 1 && (n = syscall3(SYS_read, fd, (long)(text + got), (long)(sizeof text - 1 - got))) > 0) got += n;
    syscall3(SYS_close, fd, 0, 0);
    text[got < 0 ? 0 : got] = 0;
    for (char *line = text; *line; line++) {
        if ((line == text || line[-1] == '\n') && starts(line, key)) {
            uint64_t v = 0;
            for (line += slen(key); *line == ' ' || *line == '\t'; line++) {}
            for (; *line >= '0' && *line <= '9'; line++) v = v * 10 + (uint64_t)(*line - '0');
            return v;
        }
    }
    return 0;
}

static long held_address;
static uint64_t held_bytes;

/* Takes the guest's free memory (less the kernel's reserve); nothing when there is none to take. */
static void hold_free_memory(void) {
    uint64_t free_kb = proc_number("/proc/meminfo", "MemFree:");
    uint64_t keep_kb = 4 * proc_number("/proc/sys/vm/min_free_kbytes", "");
    if (keep_kb < 4096) keep_kb = 4096;
    if (free_kb <= keep_kb) return;
    uint64_t bytes = ((free_kb - keep_kb) * 1024) & ~(HUGE_PAGE_BYTES - 1);
    if (bytes == 0) return;
    long address = syscall6(SYS_mmap, 0, (long)bytes, PROT_READ_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_POPULATE, -1, 0);
    if (address < 0 && address > -4096) return; /* no memory to hold: the clones simply fetch more */
    held_address = address;
    held_bytes = bytes;
}

static void release_free_memory(void) {
    if (held_bytes) syscall3(SYS_munmap, held_address, (long)held_bytes, 0);
    held_bytes = 0;
}

#include "sf-xen.h"
#include "sf-kvm.h"

#define O_WRONLY 1
#define VIRTIO_NET_DRIVER "/sys/bus/virtio/drivers/virtio_net/"

/* Writes `text` to a sysfs file; whether it took it. */
static int sysfs_write(const char *path, const char *text) {
    long fd = syscall3(SYS_open, (long)path, O_WRONLY, 0);
    if (fd < 0) return 0;
    long written = syscall3(SYS_write, fd, (long)text, (long)slen(text));
    syscall3(SYS_close, fd, 0, 0);
    return written == (long)slen(text);
}

/*
 * A clone's network devices have MACs of their own, which Linux reads when its driver binds a
 * device: unbind and bind each virtio device the network driver holds (virtio0, virtio1, ...;
 * unbinding one it does not hold fails and is skipped). Nothing to do without the driver.
 */
static void renew_network_devices(void) {
    for (uint64_t i = 0; i < 32; i++) {
        char number[24];
        char name[32] = "virtio";
        const char *digits = fmt_u64(number + sizeof number, i);
        size_t at = slen(name);
        for (const char *d = digits; *d; d++) name[at++] = *d;
        name[at] = 0;
        if (sysfs_write(VIRTIO_NET_DRIVER "unbind", name) && !sysfs_write(VIRTIO_NET_DRIVER "bind", name))
            die("could not bind the network driver again to ", name);
    }
}

/* Which host serves this VM: snowflock's VMM says so in CPUID; else a Xen domU's xenbus. */
static int on_kvm(void) {
    static int kvm = -1;
    if (kvm < 0) kvm = kvm_present();
    if (!kvm && !xen_present()) die("no snowflock host: not a VM of snowflock's KVM VMM, and no /dev/xen/xenbus (a Xen domU with xenfs/xenbus)", 0);
    return kvm;
}

static void usage(void) {
    out(2, "usage: sf clone [--no-heuristic free-pages] N | sf id | sf join | sf exit [STATUS [RESULT]] | sf kill | sf send TO MESSAGE | "
           "sf recv [--nowait] | sf renew | sf read PATH | sf write PATH VALUE\n");
    quit(2);
}

static void line(const char *text) {
    out(1, text);
    out(1, "\n");
}

static int tool_main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *cmd = argv[1];
    uint64_t n;
    if (same(cmd, "id") && argc == 2) {
        line(on_kvm() ? kvm_clone_id() : xen_clone_id());
    } else if (same(cmd, "clone") && (argc == 3 || (argc == 5 && same(argv[2], "--no-heuristic")))) {
        const char *count = argv[argc - 1];
        if (argc == 5 && !same(argv[3], "free-pages")) die("sf clone can switch off only the free-pages heuristic, not ", argv[3]);
        if (!parse_u64(count, &n) || n == 0 || n > 64) die("bad clone count (give 1 to 64): ", count);
        int kvm = on_kvm(); /* a VM with no snowflock host fails before it holds anything */
        if (kvm) kvm_setup();
        if (argc == 3) hold_free_memory();
        const char *id = kvm ? kvm_clone(n) : xen_clone(count, held_bytes / 4096);
        release_free_memory();
        if (!same(id, "0")) renew_network_devices();
        line(id);
    } else if (same(cmd, "join") && argc == 2) {
        line(on_kvm() ? kvm_join() : ask_agent("join", 0, 24L * 3600 * 1000));
    } else if (same(cmd, "kill") && argc == 2) {
        line(on_kvm() ? kvm_kill() : ask_agent("kill", 0, 10 * 60 * 1000));
    } else if (same(cmd, "exit") && argc <= 4) {
        if (argc >= 3 && (!parse_u64(argv[2], &n) || n > 255)) die("bad exit status (give 0 to 255): ", argv[2]);
        const char *result = argc == 4 ? argv[3] : "";
        if (slen(result) > 64) die("result too long (at most 64 characters): ", result);
        for (const char *c = result; *c; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || *c == '.' || *c == '_' || *c == '+' || *c == '-'))
                die("a result is made of 0-9 A-Z a-z . _ + -: ", result);
        if (on_kvm()) kvm_exit(argc >= 3 ? n : 0, result);
        xen_exit(argc >= 3 ? argv[2] : "0", result);
    } else if (same(cmd, "send") && argc == 4) {
        if (!parse_u64(argv[2], &n) || n > 1000000) die("bad family member (a clone ID, 0 for the parent): ", argv[2]);
        size_t ml = slen(argv[3]);
        if (ml == 0 || ml > 128) die("a message is 1 to 128 characters: ", argv[3]);
        for (size_t i = 0; i < ml; i++)
            if (argv[3][i] <= ' ' || argv[3][i] > '~') die("a message is one word of printable characters: ", argv[3]);
        if (on_kvm()) kvm_send(n, argv[3]);
        else xen_send(argv[2], argv[3]);
    } else if (same(cmd, "recv") && (argc == 2 || (argc == 3 && same(argv[2], "--nowait")))) {
        line(on_kvm() ? kvm_recv(argc == 3) : ask_agent("recv", argc == 3 ? "nowait" : 0, 24L * 3600 * 1000));
    } else if (same(cmd, "renew") && argc == 2) {
        renew_network_devices();
    } else if ((same(cmd, "read") && argc == 3) || (same(cmd, "write") && argc == 4)) {
        if (on_kvm()) die("sf read and sf write are XenStore commands; this VM runs on snowflock's KVM VMM", 0);
        if (argc == 3) {
            const char *r = xs_call(XS_READ, argv[2], 0);
            if (!r) die("read failed: ", xs_error);
            line(r);
        } else if (!xs_call(XS_WRITE, argv[2], argv[3])) die("write failed: ", xs_error);
    } else {
        usage();
    }
    return 0;
}
