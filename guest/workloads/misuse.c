/* misuse: a test workload that misuses the Impromptu Cluster API on purpose and checks that each
 * misuse fails with the documented error while the family goes on. */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "time.h"
#include "workloads.h"

static int failures;

static void expect(const char *name, int64_t got, int64_t want) {
    if (got == want) kprintf("misuse %s ok\n", name);
    else {
        kprintf("misuse %s FAIL got %ld want %ld\n", name, got, want);
        failures++;
    }
}

static uint8_t big[SF_MESSAGE_MAX + 1];
#define WILD ((void *)(uintptr_t)0xfffffffff000ull)

NORETURN void wl_misuse(void) {
    int64_t statuses[4];
    uint64_t granted = 0, sender;
    char msg[16];
    expect("ticket_zero", sf_request_ticket(0, &granted), SF_EINVAL);
    expect("ticket_wild_pointer", sf_request_ticket(1, WILD), SF_EFAULT);
    expect("clone_bad_ticket", sf_clone(999), SF_EINVAL);
    expect("join_bad_ticket", sf_join(999, statuses, 4), SF_EINVAL);
    expect("kill_bad_ticket", sf_kill(999), SF_EINVAL);
    /* A first ticket: one clone that waits to be killed; its join reports the kill. */
    int64_t b = sf_request_ticket(1, &granted);
    expect("ticket_granted", (int64_t)granted, 1);
    expect("join_before_clone", sf_join(b, statuses, 4), SF_EINVAL);
    expect("recv_empty", sf_recv(msg, sizeof msg, &sender, SF_RECV_NONBLOCK), SF_EAGAIN);
    if (sf_clone(b) == 1) {
        for (;;) sleep_ms(50);
    }
    expect("kill", sf_kill(b), 0);
    expect("join_killed", sf_join(b, statuses, 4), 1);
    expect("join_status_killed", statuses[0], -9);
    expect("send_dead_member", sf_send(1, "x", 1), SF_ESRCH);
    /* A checkpoint now, clones from it later: they start where sf_checkpoint_parent returned 0. */
    int64_t cp = sf_checkpoint_parent();
    if (cp == 0) {
        int64_t me = sf_clone_id();
        sf_send(0, &me, 8);
        machine_exit(40 + (int)me);
    }
    int64_t c = sf_request_ticket(2, &granted);
    expect("create_clones_bad_checkpoint", sf_create_clones(cp + 100, c), SF_EINVAL);
    expect("create_clones", sf_create_clones(cp, c), 0);
    expect("create_clones_twice", sf_create_clones(cp, c), SF_EBUSY);
    expect("checkpoint_join", sf_join(c, statuses, 4), 2);
    expect("checkpoint_status_1", statuses[0], 41);
    expect("checkpoint_status_2", statuses[1], 42);
    uint64_t seen = 0;
    int64_t who;
    while (sf_recv(&who, 8, &sender, SF_RECV_NONBLOCK) == 8) seen |= (uint64_t)1 << (who == (int64_t)sender ? who : 0);
    expect("checkpoint_messages", (int64_t)seen, 6);

    /* A second ticket: one clone (PARENT.1 again, so its log is the last) that checks its own misuses, reports, exits. */
    int64_t a = sf_request_ticket(1, &granted);
    if (sf_clone(a) == 1) {
        expect("clone_join", sf_join(a, statuses, 4), SF_EINVAL);
        expect("send_no_member", sf_send(9, "x", 1), SF_ESRCH);
        expect("send_self", sf_send(1, "x", 1), SF_EINVAL);
        expect("send_oversized", sf_send(0, big, sizeof big), SF_E2BIG);
        expect("send_wild_pointer", sf_send(0, WILD, 8), SF_EFAULT);
        int64_t sent = sf_send(0, failures ? "bad" : "good", 4);
        machine_exit(sent == 4 ? 0 : 1);
    }
    expect("clone_twice", sf_clone(a), SF_EBUSY);
    int64_t n = sf_recv(msg, sizeof msg, &sender, 0);
    expect("recv_from_clone_1", (int64_t)sender, 1);
    expect("clone_1_checks", n == 4 && msg[0] == 'g', 1);
    expect("join", sf_join(a, statuses, 4), 1);
    expect("join_status_exit", statuses[0], 0);
    expect("join_twice", sf_join(a, statuses, 4), SF_EBUSY);

    kprintf("misuse done\n");
    machine_exit(failures ? 1 : 0);
}
