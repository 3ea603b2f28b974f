/*
 * sf: the Impromptu Cluster API for a Linux domU on Xen, as a command.
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
 *   sf read PATH / sf write PATH VALUE   raw XenStore access (relative paths are this VM's)
 *
 * It talks to XenStore through the xenbus device: requests go to snowflock/request, which the
 * snowflock agent in dom0 watches; its answer comes back in snowflock/reply. Freestanding: no
 * libc, raw Linux system calls, one static binary that runs in any initramfs.
 */
#define TOOL_NAME "sf"
#include "freestanding.h"

/* xen/io/xs_wire.h */
#define XS_READ 2
#define XS_WRITE 11
#define XS_ERROR 16
struct xsd_sockmsg {
    uint32_t type, req_id, tx_id, len;
};
#define XENSTORE_PAYLOAD_MAX 4096

static void sleep_ms(long ms) {
    struct { long s, ns; } t = { ms / 1000, (ms % 1000) * 1000000L };
    syscall3(SYS_nanosleep, (long)&t, 0, 0);
}
static uint64_t now_ns(int clock) {
    struct { long s, ns; } t;
    syscall3(SYS_clock_gettime, clock, (long)&t, 0);
    return (uint64_t)t.s * 1000000000ull + (uint64_t)t.ns;
}

/*
 * The free-pages heuristic without a kernel patch: just before the clone instant sf takes the
 * guest's free memory for itself (one populated anonymous mapping, which Linux zeroes as it hands
 * the pages out) and gives it back right after, in the parent and in every clone. In the frozen
 * image those pages are zero, so a clone never fetches them: its pager zero-fills them (Xen) and
 * the eager copy skips them. Unlike a list of free frames read from /proc/kpageflags, nothing can
 * go stale between the report and the suspend: what is spared is what the image holds as zero.
 * It leaves the kernel a reserve above its watermarks (4 x vm.min_free_kbytes, at least 4 MiB).
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

static int xenbus = -1;
static char reply[XENSTORE_PAYLOAD_MAX + 1];
static const char *xs_error; /* e.g. "ENOENT" after a failed call */

/* One XenStore request; the reply's payload (NUL-terminated) in `reply`, or 0 with xs_error set. */
static const char *xs_call(uint32_t type, const char *path, const char *value) {
    static uint8_t message[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
    size_t plen = slen(path) + 1, vlen = value ? slen(value) : 0;
    if (plen + vlen > XENSTORE_PAYLOAD_MAX) die("request too long for XenStore: ", path);
    struct xsd_sockmsg header = { type, 1, 0, (uint32_t)(plen + vlen) };
    memcpy(message, &header, sizeof header);
    memcpy(message + sizeof header, path, plen);
    if (vlen) memcpy(message + sizeof header + plen, value, vlen);
    if (xenbus < 0) {
        xenbus = (int)syscall3(SYS_open, (long)"/dev/xen/xenbus", O_RDWR, 0);
        if (xenbus < 0) die("cannot open /dev/xen/xenbus (is this a Xen domU with xenfs/xenbus?)", 0);
    }
    if (syscall3(SYS_write, xenbus, (long)message, (long)(sizeof header + plen + vlen)) < 0) die("cannot write to /dev/xen/xenbus", 0);
    size_t got = 0;
    while (got < sizeof header) {
        long n = syscall3(SYS_read, xenbus, (long)((uint8_t *)&header + got), (long)(sizeof header - got));
        if (n <= 0) die("cannot read from /dev/xen/xenbus", 0);
        got += (size_t)n;
    }
    if (header.len > XENSTORE_PAYLOAD_MAX) die("oversized reply from XenStore", 0);
    for (got = 0; got < header.len;) {
        long n = syscall3(SYS_read, xenbus, (long)(reply + got), (long)(header.len - got));
        if (n <= 0) die("cannot read from /dev/xen/xenbus", 0);
        got += (size_t)n;
    }
    reply[header.len] = 0;
    if (header.type == XS_ERROR) {
        xs_error = reply;
        return 0;
    }
    return reply;
}

/* Sends `verb args` to the agent and waits for its reply; returns what follows "<seq> ok ". */
static const char *ask_agent(const char *verb, const char *args, long timeout_ms) {
    static char request[256], seq_text[32];
    char *seq = fmt_u64(seq_text + sizeof seq_text, now_ns(CLOCK_REALTIME) ^ (now_ns(CLOCK_MONOTONIC) << 20));
    size_t at = 0;
    for (const char *parts[] = { verb, " ", seq, args ? " " : "", args ? args : "", 0 }, **p = parts; *p; p++) {
        size_t n = slen(*p);
        if (at + n >= sizeof request) die("request too long", 0);
        memcpy(request + at, *p, n);
        at += n;
    }
    request[at] = 0;
    if (!xs_call(XS_WRITE, "snowflock/request", request))
        die("no snowflock agent serves this domain: cannot write snowflock/request: ", xs_error);
    static char prefix[40];
    size_t sl = slen(seq);
    memcpy(prefix, seq, sl);
    prefix[sl] = ' ';
    prefix[sl + 1] = 0;
    /* Polled, not watched: the VM may be suspended and resumed as a clone in between, and a
       plain read works the same before and after. Every 20 ms at first; a long wait (a join, a
       receive) every 250 ms after two seconds, so that waiting guests do not keep dom0 busy. */
    for (long waited = 0; waited <= timeout_ms;) {
        const char *r = xs_call(XS_READ, "snowflock/reply", 0);
        if (r && starts(r, prefix)) {
            r += sl + 1;
            if (starts(r, "ok")) return r[2] == ' ' ? r + 3 : r + 2;
            die("the agent refused: ", r);
        }
        long pause = waited < 2000 ? 20 : 250;
        sleep_ms(pause);
        waited += pause;
    }
    die("no answer from the snowflock agent in dom0 (is `snowflock agent --backend xen` running?)", 0);
}

static const char *clone_id(void) {
    const char *r = xs_call(XS_READ, "snowflock/clone-id", 0);
    return r ? r : "0";
}

static void usage(void) {
    out(2, "usage: sf clone [--no-heuristic free-pages] N | sf id | sf join | sf exit [STATUS [RESULT]] | sf kill | sf send TO MESSAGE | "
           "sf recv [--nowait] | sf read PATH | sf write PATH VALUE\n");
    quit(2);
}

static int tool_main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *cmd = argv[1];
    uint64_t n;
    if (same(cmd, "id") && argc == 2) {
        out(1, clone_id());
        out(1, "\n");
    } else if (same(cmd, "clone") && (argc == 3 || (argc == 5 && same(argv[2], "--no-heuristic")))) {
        const char *count = argv[argc - 1];
        if (argc == 5 && !same(argv[3], "free-pages")) die("sf clone can switch off only the free-pages heuristic, not ", argv[3]);
        if (!parse_u64(count, &n) || n == 0 || n > 64) die("bad clone count (give 1 to 64): ", count);
        clone_id(); /* opens the xenbus device, so a VM without one fails before it holds anything */
        if (argc == 3) hold_free_memory();
        /* The agent logs how many pages the guest held free. */
        static char args[64], pages_text[32];
        char *pages = fmt_u64(pages_text + sizeof pages_text, held_bytes / 4096);
        size_t cl = slen(count);
        memcpy(args, count, cl);
        memcpy(args + cl, " free=", 6);
        memcpy(args + cl + 6, pages, slen(pages) + 1);
        const char *id = ask_agent("clone", args, 30 * 60 * 1000);
        release_free_memory();
        out(1, id);
        out(1, "\n");
    } else if (same(cmd, "join") && argc == 2) {
        out(1, ask_agent("join", 0, 24L * 3600 * 1000));
        out(1, "\n");
    } else if (same(cmd, "kill") && argc == 2) {
        out(1, ask_agent("kill", 0, 10 * 60 * 1000));
        out(1, "\n");
    } else if (same(cmd, "exit") && argc <= 4) {
        if (argc >= 3 && (!parse_u64(argv[2], &n) || n > 255)) die("bad exit status (give 0 to 255): ", argv[2]);
        static char args[128];
        const char *result = argc == 4 ? argv[3] : "";
        if (slen(result) > 64) die("result too long (at most 64 characters): ", result);
        size_t sl = argc >= 3 ? slen(argv[2]) : 1, rl = slen(result);
        memcpy(args, argc >= 3 ? argv[2] : "0", sl);
        if (rl) {
            args[sl] = ' ';
            memcpy(args + sl + 1, result, rl);
        }
        ask_agent("exit", args, 10 * 60 * 1000);
        for (;;) sleep_ms(1000); /* the agent ends this domain */
    } else if (same(cmd, "send") && argc == 4) {
        if (!parse_u64(argv[2], &n) || n > 1000000) die("bad family member (a clone ID, 0 for the parent): ", argv[2]);
        size_t tl = slen(argv[2]), ml = slen(argv[3]);
        if (ml == 0 || ml > 128) die("a message is 1 to 128 characters: ", argv[3]);
        for (size_t i = 0; i < ml; i++)
            if (argv[3][i] <= ' ' || argv[3][i] > '~') die("a message is one word of printable characters: ", argv[3]);
        static char args[160];
        memcpy(args, argv[2], tl);
        args[tl] = ' ';
        memcpy(args + tl + 1, argv[3], ml + 1);
        ask_agent("send", args, 60 * 1000);
    } else if (same(cmd, "recv") && (argc == 2 || (argc == 3 && same(argv[2], "--nowait")))) {
        out(1, ask_agent("recv", argc == 3 ? "nowait" : 0, 24L * 3600 * 1000));
        out(1, "\n");
    } else if (same(cmd, "read") && argc == 3) {
        const char *r = xs_call(XS_READ, argv[2], 0);
        if (!r) die("read failed: ", xs_error);
        out(1, r);
        out(1, "\n");
    } else if (same(cmd, "write") && argc == 4) {
        if (!xs_call(XS_WRITE, argv[2], argv[3])) die("write failed: ", xs_error);
    } else {
        usage();
    }
    return 0;
}
