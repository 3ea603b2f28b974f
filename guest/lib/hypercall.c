/* snowflock hypercall library (ABI version 1). Later ABI versions add sf_clone etc. here. */
#include "sf.h"
#include "x86.h"

/* -1 = not probed yet, 0 = absent, 1 = present. Racing probes all store the same value. */
static volatile int sf_present = -1;

bool sf_available(void) {
    if (sf_present < 0) {
        uint32_t a, b, c, d;
        cpuid(SF_CPUID_LEAF, 0, &a, &b, &c, &d);
        /* "Snow" "floc" "kVMM" as little-endian words in ebx, ecx, edx. */
        sf_present = (b == 0x776f6e53u && c == 0x636f6c66u && d == 0x4d4d566bu);
    }
    return sf_present == 1;
}

int64_t sf_call_raw(volatile struct sf_call *blk) {
    uint64_t gpa = (uint64_t)(uintptr_t)blk; /* identity-mapped: virtual == guest-physical */
    if (!sf_available())
        return SF_ENOSYS;
    if (gpa >> 32)
        return SF_EFAULT; /* the port write is 32 bits wide */
    /* "memory" clobber: the block must be in RAM before the exit and re-read after it. */
    outl(SF_HC_PORT, (uint32_t)gpa);
    return blk->result;
}

int64_t sf_hypercall(uint32_t nr, uint64_t a0, uint64_t a1, uint64_t a2,
                     uint64_t a3, uint64_t a4, uint64_t a5) {
    /* On the caller's stack, so concurrent calls from several vCPUs never share a block.
     * All guest stacks are below 4 GiB. */
    struct sf_call blk = {
        .nr = nr, .flags = 0, .args = {a0, a1, a2, a3, a4, a5}, .result = SF_ENOSYS,
    };
    if (!sf_available())
        return SF_ENOSYS;
    return sf_call_raw(&blk);
}

int64_t sf_abi_version(void) { return sf_hypercall(SF_HC_ABI_VERSION, 0, 0, 0, 0, 0, 0); }
int64_t sf_exit(int64_t status) { return sf_hypercall(SF_HC_EXIT, (uint64_t)status, 0, 0, 0, 0, 0); }
int64_t sf_clone_id(void) { return sf_hypercall(SF_HC_CLONE_ID, 0, 0, 0, 0, 0, 0); }

int64_t sf_console_write(const void *buf, uint64_t len) {
    return sf_hypercall(SF_HC_CONSOLE_WRITE, (uint64_t)(uintptr_t)buf, len, 0, 0, 0, 0);
}

/* Pointers are guest-physical: the kernel identity-maps RAM, so a pointer is its own address. */
#define GPA(p) ((uint64_t)(uintptr_t)(p))

int64_t sf_free_pages(const void *bitmap, uint64_t frames) { return sf_hypercall(SF_HC_FREE_PAGES, GPA(bitmap), frames, 0, 0, 0, 0); }
int64_t sf_allocated(const void *first_page, uint64_t pages) { return sf_hypercall(SF_HC_ALLOCATED, GPA(first_page), pages, 0, 0, 0, 0); }

int64_t sf_request_ticket(uint64_t n, uint64_t *granted) {
    return sf_hypercall(SF_HC_REQUEST_TICKET, n, GPA(granted), 0, 0, 0, 0);
}
int64_t sf_clone(int64_t ticket) { return sf_hypercall(SF_HC_CLONE, (uint64_t)ticket, 0, 0, 0, 0, 0); }
int64_t sf_join(int64_t ticket, int64_t *statuses, uint64_t cap) {
    return sf_hypercall(SF_HC_JOIN, (uint64_t)ticket, GPA(statuses), cap, 0, 0, 0);
}
int64_t sf_kill(int64_t ticket) { return sf_hypercall(SF_HC_KILL, (uint64_t)ticket, 0, 0, 0, 0, 0); }
int64_t sf_send(uint64_t dest, const void *buf, uint64_t len) {
    return sf_hypercall(SF_HC_SEND, dest, GPA(buf), len, 0, 0, 0);
}
int64_t sf_recv(void *buf, uint64_t cap, uint64_t *sender, uint64_t flags) {
    return sf_hypercall(SF_HC_RECV, GPA(buf), cap, GPA(sender), flags, 0, 0);
}
int64_t sf_checkpoint_parent(void) { return sf_hypercall(SF_HC_CHECKPOINT_PARENT, 0, 0, 0, 0, 0, 0); }
int64_t sf_create_clones(int64_t checkpoint, int64_t ticket) {
    return sf_hypercall(SF_HC_CREATE_CLONES, (uint64_t)checkpoint, (uint64_t)ticket, 0, 0, 0, 0);
}
int64_t sf_release_checkpoint(int64_t checkpoint) {
    return sf_hypercall(SF_HC_RELEASE_CHECKPOINT, (uint64_t)checkpoint, 0, 0, 0, 0, 0);
}
