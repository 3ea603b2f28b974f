/*
 * sf's transport in a Linux VM on snowflock's KVM VMM: the hypercall ABI of guest/ABI.md, from a
 * root process. The call block and its buffers live in one locked page whose guest-physical
 * address (/proc/self/pagemap) is written to the hypercall doorbell, a page of the 32-bit hole
 * mapped from /dev/mem (port I/O from user space would need the TSS's I/O bitmap, which a clone's
 * emulated CPU was seen to ignore). Calls that wait (join, receive) are asked without blocking and
 * polled, so a waiting tool never holds its vCPU in the host. Included by sf.c.
 */
#pragma once

#define SF_HC_DOORBELL 0xd0100000ull
#define SF_CPUID_LEAF 0x40000100u
#define SYS_pread64 17
#define SYS_mlock 149
#define O_SYNC 04010000
#define MAP_SHARED 0x01

#define HC_EXIT 2
#define HC_CLONE_ID 4
#define HC_REQUEST_TICKET 16
#define HC_CLONE 17
#define HC_KILL 19
#define HC_SEND 20
#define HC_RECV 21
#define HC_JOIN_ALL 25
#define HC_NONBLOCK 1

#define E_PERM (-1)
#define E_SRCH (-3)
#define E_2BIG (-7)
#define E_AGAIN (-11)
#define E_BUSY (-16)
#define E_INVAL (-22)
#define E_NOSYS (-38)
#define E_DQUOT (-122)

struct sf_call {
    uint32_t nr, flags;
    uint64_t args[6];
    int64_t result;
};

/* In the page: the call block, one u64 the host writes (granted clones, a message's sender), the buffer. */
#define SLOT_OFFSET 64
#define BUFFER_OFFSET 128
#define BUFFER_BYTES (4096 - BUFFER_OFFSET - 1) /* room for a NUL after the longest answer */
#define CANDIDATE_PAGES 16

static uint8_t *call_page;
static uint64_t call_gpa;
static volatile uint32_t *doorbell;

static int kvm_present(void) {
    uint32_t a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(SF_CPUID_LEAF), "c"(0));
    (void)a;
    return b == 0x776f6e53u && c == 0x636f6c66u && d == 0x4d4d566bu; /* "SnowflockVMM" */
}

/* A locked page below 4 GiB (the port write is 32 bits) and its guest-physical address. */
static void kvm_setup(void) {
    if (call_page) return;
    long mem = syscall3(SYS_open, (long)"/dev/mem", O_RDWR | O_SYNC, 0);
    if (mem < 0) die("cannot open /dev/mem for the hypercall doorbell: sf needs root", 0);
    long bell = syscall6(SYS_mmap, 0, 4096, PROT_READ_WRITE, MAP_SHARED, mem, (long)SF_HC_DOORBELL);
    if (bell < 0 && bell > -4096) die("cannot map the hypercall doorbell from /dev/mem", 0);
    syscall3(SYS_close, mem, 0, 0);
    doorbell = (volatile uint32_t *)bell;
    long base = syscall6(SYS_mmap, 0, CANDIDATE_PAGES * 4096, PROT_READ_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (base < 0 && base > -4096) die("cannot map a page for the snowflock call", 0);
    syscall3(SYS_mlock, base, CANDIDATE_PAGES * 4096, 0); /* best effort: an initramfs has no swap */
    long fd = syscall3(SYS_open, (long)"/proc/self/pagemap", O_RDONLY, 0);
    if (fd < 0) die("cannot open /proc/self/pagemap", 0);
    for (int i = 0; i < CANDIDATE_PAGES && !call_page; i++) {
        uint8_t *page = (uint8_t *)base + i * 4096;
        page[0] = 1;
        uint64_t entry = 0;
        if (syscall6(SYS_pread64, fd, (long)&entry, 8, (long)((uint64_t)(uintptr_t)page / 4096 * 8), 0, 0) != 8) continue;
        uint64_t frame = entry & ((1ull << 55) - 1);
        if (!(entry >> 63)) continue;
        if (frame == 0) die("cannot read page frames from /proc/self/pagemap: sf needs root", 0);
        if (frame < (1ull << 20)) {
            call_page = page;
            call_gpa = frame * 4096;
        }
    }
    syscall3(SYS_close, fd, 0, 0);
    if (!call_page) die("no page of this VM's memory below 4 GiB for the snowflock call", 0);
}

static int64_t kvm_call(uint32_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3) {
    kvm_setup();
    volatile struct sf_call *call = (volatile struct sf_call *)call_page;
    call->nr = nr;
    call->flags = 0;
    call->args[0] = a0;
    call->args[1] = a1;
    call->args[2] = a2;
    call->args[3] = a3;
    call->args[4] = call->args[5] = 0;
    call->result = E_NOSYS;
    __asm__ volatile("" : : : "memory");
    *doorbell = (uint32_t)call_gpa;
    __asm__ volatile("" : : : "memory");
    return call->result;
}

static char *buffer(void) {
    kvm_setup();
    return (char *)call_page + BUFFER_OFFSET;
}
/* The guest-physical address of `offset` in the call page (set up first: it is an argument). */
static uint64_t at(uint64_t offset) {
    kvm_setup();
    return call_gpa + offset;
}
static uint64_t slot(void) { return *(volatile uint64_t *)(call_page + SLOT_OFFSET); }

/* The host's error, as the Xen agent words the same refusal where there is one. */
static __attribute__((noreturn)) void kvm_refused(int64_t error) {
    static char text[32];
    switch (error) {
    case E_DQUOT: refused("this VM holds as many unjoined clone rounds or messages as it may: join them first");
    case E_BUSY: refused("busy: already used or joined");
    case E_PERM: refused("not allowed");
    case E_INVAL: refused("invalid request");
    case E_NOSYS: refused("the VMM does not serve this call");
    case E_2BIG: refused("the oldest message is longer than 128 characters (sf recv takes one word)");
    default: {
        char *n = fmt_u64(text + sizeof text, (uint64_t)-error);
        static char line[64] = "the VMM refused the call: errno ";
        memcpy(line + 32, n, slen(n) + 1);
        refused(line);
    }
    }
}

static const char *number(int64_t v) {
    static char text[32];
    return fmt_u64(text + sizeof text, (uint64_t)v);
}

static const char *kvm_clone_id(void) { return number(kvm_call(HC_CLONE_ID, 0, 0, 0, 0)); }

static const char *kvm_clone(uint64_t count) {
    int64_t ticket = kvm_call(HC_REQUEST_TICKET, count, at(SLOT_OFFSET), 0, 0);
    if (ticket < 0) kvm_refused(ticket);
    int64_t id = kvm_call(HC_CLONE, (uint64_t)ticket, 0, 0, 0);
    if (id < 0) kvm_refused(id);
    return number(id);
}

static const char *kvm_join(void) {
    for (long waited = 0;;) {
        int64_t n = kvm_call(HC_JOIN_ALL, at(BUFFER_OFFSET), BUFFER_BYTES, HC_NONBLOCK, 0);
        if (n >= 0) {
            buffer()[n] = 0;
            return buffer();
        }
        if (n != E_AGAIN) kvm_refused(n);
        long pause = poll_pause(waited);
        sleep_ms(pause);
        waited += pause;
    }
}

static const char *kvm_kill(void) {
    int64_t n = kvm_call(HC_KILL, 0, 0, 0, 0);
    if (n < 0) kvm_refused(n);
    return number(n);
}

static __attribute__((noreturn)) void kvm_exit(uint64_t status, const char *result) {
    if (kvm_call(HC_CLONE_ID, 0, 0, 0, 0) == 0) refused("only a clone can exit; the parent ends as any VM does");
    size_t length = slen(result);
    memcpy(buffer(), result, length);
    kvm_refused(kvm_call(HC_EXIT, status, at(BUFFER_OFFSET), length, 0));
}

static void kvm_send(uint64_t to, const char *message) {
    if ((uint64_t)kvm_call(HC_CLONE_ID, 0, 0, 0, 0) == to) refused("a member cannot send to itself");
    size_t length = slen(message);
    memcpy(buffer(), message, length);
    int64_t sent = kvm_call(HC_SEND, to, at(BUFFER_OFFSET), length, 0);
    if (sent == E_SRCH) {
        static char text[64] = "no member ";
        const char *n = number((int64_t)to);
        memcpy(text + 10, n, slen(n));
        memcpy(text + 10 + slen(n), " in this family runs", 21);
        refused(text);
    }
    if (sent == E_DQUOT) refused("the member's inbox is full");
    if (sent < 0) kvm_refused(sent);
}

/* "<from> <message>", waiting for a message unless `nowait`. */
static const char *kvm_recv(int nowait) {
    static char line[160];
    for (long waited = 0;;) {
        int64_t n = kvm_call(HC_RECV, at(BUFFER_OFFSET), 128, at(SLOT_OFFSET), HC_NONBLOCK);
        if (n >= 0) {
            const char *from = number((int64_t)slot());
            size_t fl = slen(from);
            memcpy(line, from, fl);
            line[fl] = ' ';
            memcpy(line + fl + 1, buffer(), (size_t)n);
            line[fl + 1 + n] = 0;
            return line;
        }
        if (n != E_AGAIN) kvm_refused(n);
        if (nowait) refused("no message");
        long pause = poll_pause(waited);
        sleep_ms(pause);
        waited += pause;
    }
}
