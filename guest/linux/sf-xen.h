/*
 * sf's transport in a Xen domU: requests to the snowflock agent in dom0 through XenStore (the
 * xenbus device). A request goes to snowflock/request, which the agent watches; its answer comes
 * back in snowflock/reply as "<seq> ok ..." or "<seq> error ...". Included by sf.c.
 */
#pragma once

/* xen/io/xs_wire.h */
#define XS_READ 2
#define XS_WRITE 11
#define XS_ERROR 16
struct xsd_sockmsg {
    uint32_t type, req_id, tx_id, len;
};
#define XENSTORE_PAYLOAD_MAX 4096

static int xenbus = -1;
static char reply[XENSTORE_PAYLOAD_MAX + 1];
static const char *xs_error; /* e.g. "ENOENT" after a failed call */

static int xen_present(void) {
    if (xenbus < 0) xenbus = (int)syscall3(SYS_open, (long)"/dev/xen/xenbus", O_RDWR, 0);
    return xenbus >= 0;
}

/* One XenStore request; the reply's payload (NUL-terminated) in `reply`, or 0 with xs_error set. */
static const char *xs_call(uint32_t type, const char *path, const char *value) {
    static uint8_t message[sizeof(struct xsd_sockmsg) + XENSTORE_PAYLOAD_MAX];
    size_t plen = slen(path) + 1, vlen = value ? slen(value) : 0;
    if (plen + vlen > XENSTORE_PAYLOAD_MAX) die("request too long for XenStore: ", path);
    struct xsd_sockmsg header = { type, 1, 0, (uint32_t)(plen + vlen) };
    memcpy(message, &header, sizeof header);
    memcpy(message + sizeof header, path, plen);
    if (vlen) memcpy(message + sizeof header + plen, value, vlen);
    if (!xen_present()) die("cannot open /dev/xen/xenbus (is this a Xen domU with xenfs/xenbus?)", 0);
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
            refused(starts(r, "error ") ? r + 6 : r);
        }
        long pause = poll_pause(waited);
        sleep_ms(pause);
        waited += pause;
    }
    die("no answer from the snowflock agent in dom0 (is `snowflock agent --backend xen` running?)", 0);
}

static const char *xen_clone_id(void) {
    const char *r = xs_call(XS_READ, "snowflock/clone-id", 0);
    return r ? r : "0";
}

static const char *xen_clone(const char *count, uint64_t held_pages) {
    static char args[64], pages_text[32];
    char *pages = fmt_u64(pages_text + sizeof pages_text, held_pages);
    size_t cl = slen(count);
    memcpy(args, count, cl);
    memcpy(args + cl, " free=", 6);
    memcpy(args + cl + 6, pages, slen(pages) + 1);
    return ask_agent("clone", args, 30 * 60 * 1000);
}

static __attribute__((noreturn)) void xen_exit(const char *status, const char *result) {
    static char args[128];
    size_t sl = slen(status), rl = slen(result);
    memcpy(args, status, sl);
    if (rl) {
        args[sl] = ' ';
        memcpy(args + sl + 1, result, rl);
    }
    ask_agent("exit", args, 10 * 60 * 1000);
    for (;;) sleep_ms(1000); /* the agent ends this domain */
}

static void xen_send(const char *to, const char *message) {
    static char args[160];
    size_t tl = slen(to), ml = slen(message);
    memcpy(args, to, tl);
    args[tl] = ' ';
    memcpy(args + tl + 1, message, ml + 1);
    ask_agent("send", args, 60 * 1000);
}
