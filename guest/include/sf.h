/*
 * snowflock hypercall ABI, version 1 (see guest/ABI.md).
 *
 * A call is a 64-byte block in guest RAM below 4 GiB; the guest writes its
 * guest-physical address with a 32-bit outl to SF_HC_PORT and the host fills
 * in `result` before the outl completes. Without a snowflock host (CPUID leaf
 * 0x40000100 != "SnowflockVMM") every sf_* call returns SF_ENOSYS and never
 * touches the port.
 */
#pragma once
#include <stdint.h>
#include <stdbool.h>

#define SF_HC_PORT        0x0ED0
#define SF_HC_DOORBELL    0xd0100000u /* or a 32-bit write of the block's address here (MMIO) */
#define SF_CPUID_LEAF     0x40000100u
#define SF_ABI_VERSION    1

/* Call numbers. 16 and up are reserved for the Impromptu Cluster API
 * (sf_request_ticket, sf_clone, sf_join, ...), added by a later ABI version. */
#define SF_HC_ABI_VERSION    1 /* () -> 1 */
#define SF_HC_EXIT           2 /* (status[, result_gpa, result_len]) -> does not return; a clone's result
                                  (<= 64 of [0-9A-Za-z._+-]) reaches its parent's join text */
#define SF_HC_CONSOLE_WRITE  3 /* (gpa, len) -> len; len <= SF_CONSOLE_MAX else SF_E2BIG */
#define SF_HC_CLONE_ID       4 /* () -> clone id, 0 for an original VM */
#define SF_HC_FREE_PAGES     5 /* (bitmap_gpa, frames) -> 0; the page allocator's bitmap (bit = 1: page used),
                                  read by the host when it clones, so clones never fetch free pages */
#define SF_HC_ALLOCATED      6 /* (gpa, pages) -> 0; the page allocator just handed out [gpa, gpa + pages * 4096):
                                  a clone zero-fills those pages instead of fetching them */
#define SF_HC_CLUSTER_BASE  16 /* first number of the Impromptu Cluster API */
#define SF_HC_REQUEST_TICKET 16 /* (n, granted_gpa) -> ticket; *granted (u64) = m <= n clones */
#define SF_HC_CLONE          17 /* (ticket) -> 0 in the parent, 1..m in the clones */
#define SF_HC_JOIN           18 /* (ticket, statuses_gpa, cap) -> m; blocks until every clone ended;
                                   statuses (i64 each, clone 1 first): exit status, or < 0 if killed */
#define SF_HC_KILL           19 /* (ticket) -> 0; ends every clone of the ticket;
                                   ticket 0: those of every ticket not joined, -> how many */
#define SF_HC_SEND           20 /* (dest id, gpa, len) -> len; dest 0 = the parent */
#define SF_HC_RECV           21 /* (gpa, cap, sender_gpa, flags) -> len; *sender (u64) = sender id;
                                   blocks unless flags & SF_RECV_NONBLOCK (then SF_EAGAIN) */
#define SF_HC_CHECKPOINT_PARENT 22 /* () -> checkpoint (>= 1) in the parent; 0 in clones made from it */
#define SF_HC_CREATE_CLONES  23 /* (checkpoint, ticket) -> 0; the ticket's clones start at the checkpoint */
#define SF_HC_RELEASE_CHECKPOINT 24 /* (checkpoint) -> 0; the host lets its frozen image go */
#define SF_HC_JOIN_ALL       25 /* (text_gpa, cap, flags) -> length of "<m> <id>=<status>[:<result>]...";
                                   joins every ticket not joined; flags & SF_JOIN_NONBLOCK: SF_EAGAIN while one runs */
#define SF_JOIN_NONBLOCK 1
#define SF_RECV_NONBLOCK 1
#define SF_MESSAGE_MAX 65536

#define SF_CONSOLE_MAX 65536

/* Errors: negated Linux errno numbers. */
#define SF_EPERM   (-1)
#define SF_ESRCH   (-3)  /* no such family member (or it has ended) */
#define SF_EAGAIN  (-11) /* nothing to receive (non-blocking receive) */
#define SF_EBUSY   (-16) /* the ticket is already used / joined */
#define SF_E2BIG   (-7)
#define SF_EFAULT  (-14)
#define SF_EINVAL  (-22)
#define SF_ENOSYS  (-38)
#define SF_EDQUOT  (-122) /* a per-VM limit (ABI.md, "Limits"): the recipient's inbox is full (sf_send),
                             or this VM holds as many tickets / checkpoints as it may */

struct sf_call {
    uint32_t nr;      /* SF_HC_* */
    uint32_t flags;   /* must be 0 */
    uint64_t args[6]; /* call-specific; pointers are guest-physical addresses */
    int64_t result;   /* guest presets SF_ENOSYS; host writes >= 0 or -errno */
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct sf_call) == 64, "sf_call must be 64 bytes");

/* True if running under the snowflock VMM (result cached after the first CPUID). */
bool sf_available(void);

/* Issue a prepared block (preset result to SF_ENOSYS first; sf_call_raw does not).
 * The block must be in RAM below 4 GiB; it is used as-is, even if misaligned,
 * so tests can hand the host bad blocks. Returns blk->result as read back. */
int64_t sf_call_raw(volatile struct sf_call *blk);

/* Build a block on the stack and issue call nr with up to 6 args. */
int64_t sf_hypercall(uint32_t nr, uint64_t a0, uint64_t a1, uint64_t a2,
                     uint64_t a3, uint64_t a4, uint64_t a5);

int64_t sf_abi_version(void);
/* Ends the VM when it works; returns (SF_ENOSYS etc.) only if it did not. */
int64_t sf_exit(int64_t status);
int64_t sf_console_write(const void *buf, uint64_t len);
int64_t sf_clone_id(void);
int64_t sf_free_pages(const void *bitmap, uint64_t frames);
int64_t sf_allocated(const void *first_page, uint64_t pages);

/* The Impromptu Cluster API. */
int64_t sf_request_ticket(uint64_t n, uint64_t *granted);
int64_t sf_clone(int64_t ticket);
int64_t sf_join(int64_t ticket, int64_t *statuses, uint64_t cap);
int64_t sf_kill(int64_t ticket);
int64_t sf_send(uint64_t dest, const void *buf, uint64_t len);
int64_t sf_recv(void *buf, uint64_t cap, uint64_t *sender, uint64_t flags);
int64_t sf_checkpoint_parent(void);
int64_t sf_create_clones(int64_t checkpoint, int64_t ticket);
int64_t sf_release_checkpoint(int64_t checkpoint);
