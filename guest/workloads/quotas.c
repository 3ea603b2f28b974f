/* quotas: a test workload that tries to make its host keep more than the per-VM limits allow
 * (guest/ABI.md, "Limits"): it floods a family member that never receives, asks for tickets and
 * checkpoints until they are refused, and prints more than the console keeps. Each flood stops
 * at the first refusal, or after a bound so that it ends on a host without limits too. The
 * report comes last, after the console flood, so that it is among the lines the host keeps. */
#include "console.h"
#include "kernel.h"
#include "sf.h"
#include "time.h"
#include "workloads.h"

#define MAX_TRIES 4096
#define MAX_CHECKPOINTS 64
#define FLOOD_LINES 256

static uint8_t message[SF_MESSAGE_MAX];
static char line[4000];

NORETURN void wl_quotas(void) {
    uint64_t granted;
    int64_t statuses[1], n, r = 0;
    int64_t messages, message_error, join, join_again, tickets, ticket_error, checkpoints, checkpoint_error;
    int64_t first = 0, released, released_again, after_release;

    /* Clone 1 never receives: every message to it waits in its VMM's inbox. */
    int64_t t = sf_request_ticket(1, &granted);
    if (sf_clone(t) == 1)
        for (;;) sleep_ms(1000);
    for (n = 0; n < MAX_TRIES && (r = sf_send(1, message, sizeof message)) == (int64_t)sizeof message; n++) {}
    messages = n, message_error = r;
    sf_kill(t);
    join = sf_join(t, statuses, 1);
    join_again = sf_join(t, statuses, 1);

    /* Tickets asked for and never used. */
    for (n = 0; n < MAX_TRIES && (r = sf_request_ticket(1, &granted)) > 0; n++) {}
    tickets = n, ticket_error = r;

    /* Checkpoints: each one keeps a frozen image of this VM's memory. No clone is made from
     * them, so none of these calls returns 0. */
    for (n = 0; n < MAX_CHECKPOINTS && (r = sf_checkpoint_parent()) > 0; n++)
        if (n == 0) first = r;
    checkpoints = n, checkpoint_error = r;
    /* A released checkpoint makes room for another. */
    released = sf_release_checkpoint(first);
    released_again = sf_release_checkpoint(first);
    after_release = sf_checkpoint_parent();

    /* The console: FLOOD_LINES long lines, more than the host keeps in memory or in one log file. */
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (n = 0; n < FLOOD_LINES; n++) sf_console_write(line, sizeof line);
    kprintf("quotas messages %ld then %ld\n", messages, message_error);
    kprintf("quotas join %ld then %ld\n", join, join_again);
    kprintf("quotas tickets %ld then %ld\n", tickets, ticket_error);
    kprintf("quotas checkpoints %ld then %ld\n", checkpoints, checkpoint_error);
    kprintf("quotas release %ld then %ld, checkpoint after it %s\n", released, released_again, after_release > 0 ? "ok" : "refused");
    kprintf("quotas done\n");
    machine_exit(0);
}
