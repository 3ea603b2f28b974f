/* sha256-par and search-par: the parent builds the dataset, clones itself with sf_clone, each
 * clone works on the data it inherited and sends its answer to the parent, which joins and
 * prints one line per clone in ID order, then how many clones it was granted.
 * alloc-par: each clone allocates its own memory after sf_clone, fills and hashes it.
 * mem-states: each clone reads memory in every state the avoidance heuristics touch. */
#include "console.h"
#include "dataset.h"
#include "kernel.h"
#include "sf.h"
#include "sha256.h"
#include "time.h"
#include "user.h"
#include "workloads.h"

#define MAX_CLONES 256
/* search-par quit=<id>: that clone's exit status, before it does anything. */
#define QUIT_STATUS 3

static struct dataset ds;

/* Byte range [off, off+len) of the dataset, which may span extents. */
struct range_job { const struct dataset *d; uint64_t off, len; struct sha256 ctx; uint8_t digest[32]; uint16_t pattern; uint64_t count; };

static uint64_t hash_range(void *arg) {
    struct range_job *j = arg;
    const struct dataset *d = j->d;
    sha256_init(&j->ctx);
    uint64_t at = 0, off = j->off, left = j->len;
    for (uint32_t e = 0; e < d->nextents && left; e++) {
        uint64_t n = d->ext[e].pages * PAGE_SIZE;
        if (off < at + n) {
            uint64_t from = off - at, take = n - from < left ? n - from : left;
            sha256_update(&j->ctx, d->ext[e].base + from, take);
            off += take;
            left -= take;
        }
        at += n;
    }
    sha256_final(&j->ctx, j->digest);
    return 0;
}

/* Offsets k with byte[k] | byte[k+1] << 8 == pattern, over the whole dataset. */
static uint64_t search_all(void *arg) {
    struct range_job *j = arg;
    uint64_t count = 0, left = ds.size;
    int prev = -1;
    for (uint32_t e = 0; e < ds.nextents && left; e++) {
        uint64_t n = ds.ext[e].pages * PAGE_SIZE;
        if (n > left) n = left;
        const uint8_t *p = ds.ext[e].base;
        for (uint64_t i = 0; i < n; i++) {
            if (prev >= 0 && (uint16_t)(prev | p[i] << 8) == j->pattern) count++;
            prev = p[i];
        }
        left -= n;
    }
    j->count = count;
    return 0;
}

static void hex32(const uint8_t *d, char *out) {
    for (int i = 0; i < 32; i++) {
        out[2 * i] = "0123456789abcdef"[d[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[d[i] & 15];
    }
    out[64] = '\0';
}

static void parse_params(uint64_t *size, uint64_t *seed, uint64_t *clones) {
    *seed = 0;
    if (!cmdline_number("size", true, true, 0, UINT64_MAX, size) || !cmdline_number("seed", false, false, 0, UINT64_MAX, seed) ||
        !cmdline_number("clones", false, true, 1, MAX_CLONES, clones))
        machine_exit(2);
}

static void build_dataset(uint64_t size, uint64_t seed) {
    if (!dataset_alloc(&ds, size, seed)) {
        kprintf("error: not enough guest memory for a dataset of %lu bytes\n", size);
        machine_exit(3);
    }
    dataset_generate(&ds);
}

static uint64_t setup(uint64_t *clones) {
    uint64_t size, seed;
    parse_params(&size, &seed, clones);
    build_dataset(size, seed);
    return size;
}

/* Clones in the family: returns the clone id (0 in the parent) and the number granted. */
static int64_t fork_family(uint64_t want, int64_t *ticket, uint64_t *granted) {
    *ticket = sf_request_ticket(want, granted);
    if (*ticket < 0) {
        kprintf("error: sf_request_ticket failed: %ld\n", *ticket);
        machine_exit(4);
    }
    int64_t id = sf_clone(*ticket);
    if (id < 0) {
        kprintf("error: sf_clone failed: %ld\n", id);
        machine_exit(4);
    }
    return id;
}

/* In a clone: the SHA-256 of dataset bytes [off, off+len), sent to the parent; the clone ends. */
static NORETURN void send_hash(uint64_t off, uint64_t len) {
    static struct range_job job;
    job.d = &ds;
    job.off = off;
    job.len = len;
    run_user(hash_range, &job);
    sf_send(0, job.digest, 32);
    machine_exit(0);
}

/* In the parent after the clones ended: the message each clone sent, by id. */
static int64_t statuses[MAX_CLONES + 1];
#define ANSWER_MAX 80
static uint8_t answers[MAX_CLONES + 1][ANSWER_MAX];
static bool answered[MAX_CLONES + 1];

static void collect(int64_t ticket, uint64_t granted, uint64_t answer_len) {
    int64_t joined = sf_join(ticket, statuses + 1, granted);
    if (joined < 0) {
        kprintf("error: sf_join failed: %ld\n", joined);
        machine_exit(4);
    }
    static uint8_t msg[ANSWER_MAX];
    uint64_t sender;
    int64_t n;
    while ((n = sf_recv(msg, sizeof msg, &sender, SF_RECV_NONBLOCK)) >= 0) {
        if (sender >= 1 && sender <= granted && (uint64_t)n == answer_len) {
            memcpy(answers[sender], msg, answer_len);
            answered[sender] = true;
        }
    }
}

NORETURN void wl_sha256_par(void) {
    uint64_t want, granted;
    int64_t ticket;
    uint64_t size = setup(&want);
    int64_t id = fork_family(want, &ticket, &granted);
    uint64_t slice = size / granted;
    if (id > 0) {
        uint64_t off = (uint64_t)(id - 1) * slice;
        send_hash(off, (uint64_t)id == granted ? size - off : slice);
    }
    collect(ticket, granted, 32);
    int status = 0;
    for (uint64_t i = 1; i <= granted; i++) {
        uint64_t off = (i - 1) * slice, len = i == granted ? size - off : slice;
        if (!answered[i]) {
            kprintf("slice %lu %lu %lu error status %ld\n", i, off, len, statuses[i]);
            status = 1;
            continue;
        }
        char hex[65];
        hex32(answers[i], hex);
        kprintf("slice %lu %lu %lu %s\n", i, off, len, hex);
    }
    kprintf("granted %lu\n", granted);
    machine_exit(status);
}

/* together=1: clones that start apart (other hosts, a busy host) read the data together: each
 * tells the parent it runs and waits for its go, sent once all have. */
#define PROBE_MS 50

/* The next message's length (8: a note), SF_EAGAIN when none waits and `flags` says not to block. */
static int64_t recv_note(uint64_t *sender, uint64_t flags) {
    uint64_t note;
    int64_t n = sf_recv(&note, 8, sender, flags);
    if (n < 0 && n != SF_EAGAIN) {
        kprintf("error: sf_recv failed: %ld\n", n);
        machine_exit(4);
    }
    return n;
}

static void start_together(int64_t id, uint64_t granted) {
    uint64_t sender, note = 0;
    if (id > 0) {
        sf_send(0, &note, 8);
        while (recv_note(&sender, 0) != 8 || sender != 0) {}
        return;
    }
    /* sf_clone returned: every clone runs or has ended. One that ends before its note (crashed,
     * killed) must not hold the others: a clone not heard from is probed now and then with an empty
     * message, which it ignores, and SF_ESRCH says it is gone. */
    static bool settled[MAX_CLONES + 1];
    for (uint64_t count = 0; count < granted;) {
        int64_t n = recv_note(&sender, SF_RECV_NONBLOCK);
        if (n == 8 && sender >= 1 && sender <= granted && !settled[sender]) settled[sender] = true, count++;
        if (n != SF_EAGAIN) continue;
        sleep_ms(PROBE_MS);
        for (uint64_t i = 1; i <= granted; i++)
            if (!settled[i] && sf_send(i, &note, 0) == SF_ESRCH) settled[i] = true, count++;
    }
    for (uint64_t i = 1; i <= granted; i++) sf_send(i, &note, 8);
}

NORETURN void wl_search_par(void) {
    uint64_t want, granted, together = 0, quit = 0;
    int64_t ticket;
    setup(&want);
    if (!cmdline_number("together", false, false, 0, 1, &together) || !cmdline_number("quit", false, false, 0, MAX_CLONES, &quit))
        machine_exit(2);
    int64_t id = fork_family(want, &ticket, &granted);
    if (id > 0 && (uint64_t)id == quit) machine_exit(QUIT_STATUS);
    if (together) start_together(id, granted);
    if (id > 0) {
        static struct range_job job;
        job.pattern = (uint16_t)(((uint64_t)id * 40503u) & 0xffff);
        run_user(search_all, &job);
        sf_send(0, &job.count, 8);
        machine_exit(0);
    }
    collect(ticket, granted, 8);
    int status = 0;
    for (uint64_t i = 1; i <= granted; i++) {
        uint64_t pattern = (i * 40503u) & 0xffff, count;
        if (!answered[i]) {
            kprintf("count %lu %lu error status %ld\n", i, pattern, statuses[i]);
            status = 1;
            continue;
        }
        memcpy(&count, answers[i], 8);
        kprintf("count %lu %lu %lu\n", i, pattern, count);
    }
    kprintf("granted %lu\n", granted);
    machine_exit(status);
}

/* Memory the parent holds at the clone for its own use; its clones drop it unread. */
static struct dataset held;

static void hold(uint64_t size, uint64_t seed) {
    if (!dataset_alloc(&held, size, seed)) {
        kprintf("error: not enough guest memory for %lu more bytes\n", size);
        machine_exit(3);
    }
    dataset_generate(&held);
}

/* Clone i allocates SIZE bytes through the page allocator after sf_clone, fills them with the
 * dataset for SEED + i and sends their SHA-256; the parent prints `alloc <i> <hex>` per clone.
 * Before the clone the parent holds SIZE/2 bytes of data and has used and freed SIZE more, all
 * non-zero in its image. A clone frees the held data and its allocation (first fit) reuses those
 * pages and then the freed ones: allocation-hints spares fetching the first, free-pages (and
 * allocation-hints) the second. */
NORETURN void wl_alloc_par(void) {
    uint64_t size, seed, want, granted;
    int64_t ticket;
    parse_params(&size, &seed, &want);
    hold(size / 2, seed ^ 0x5eedull);
    build_dataset(size, seed);
    dataset_free(&ds);
    int64_t id = fork_family(want, &ticket, &granted);
    if (id > 0) {
        dataset_free(&held);
        build_dataset(size, seed + (uint64_t)id);
        send_hash(0, size);
    }
    collect(ticket, granted, 32);
    int status = 0;
    for (uint64_t i = 1; i <= granted; i++) {
        if (!answered[i]) {
            kprintf("alloc %lu error status %ld\n", i, statuses[i]);
            status = 1;
            continue;
        }
        char hex[65];
        hex32(answers[i], hex);
        kprintf("alloc %lu %s\n", i, hex);
    }
    kprintf("granted %lu\n", granted);
    machine_exit(status);
}

/* All-zero check of a dataset's memory, in ring 3. */
struct zero_job { const struct dataset *d; uint64_t nonzero; };

static uint64_t count_nonzero(void *arg) {
    struct zero_job *j = arg;
    j->nonzero = 0;
    for (uint32_t e = 0; e < j->d->nextents; e++) {
        const uint64_t *p = (const uint64_t *)j->d->ext[e].base;
        for (uint64_t w = 0; w < j->d->ext[e].pages * (PAGE_SIZE / 8); w++) j->nonzero += p[w] != 0;
    }
    return 0;
}

static uint64_t zero_fill(void *arg) {
    const struct dataset *d = arg;
    for (uint32_t e = 0; e < d->nextents; e++) memset(d->ext[e].base, 0, d->ext[e].pages * PAGE_SIZE);
    return 0;
}

struct states_answer { uint8_t shared[32]; uint8_t allocated[32]; uint64_t nonzero; };

/* The avoidance heuristics' safety check. Before the clone the parent has: SHARED (SIZE bytes of
 * the dataset for SEED, kept), ZEROED (SIZE bytes it wrote zeros to, kept), HELD (SIZE bytes of
 * the dataset for SEED + 1000, kept) and SIZE more it used and freed. Clone i hashes SHARED (its
 * parent's data), counts non-zero words in ZEROED, frees HELD, allocates 2 x SIZE (first fit:
 * HELD's pages, free then allocated, then the freed ones, allocated then written), fills them with
 * the dataset for SEED + i and hashes them. The parent prints
 * `states <i> shared=<hex> nonzero=<n> allocated=<hex>` per clone, then `granted <m>`. */
NORETURN void wl_mem_states(void) {
    uint64_t size, seed, want, granted;
    int64_t ticket;
    static struct dataset shared, zeroed;
    parse_params(&size, &seed, &want);
    if (!dataset_alloc(&shared, size, seed) || !dataset_alloc(&zeroed, size, 0)) {
        kprintf("error: not enough guest memory for 4 x %lu bytes\n", size);
        machine_exit(3);
    }
    dataset_generate(&shared);
    run_user(zero_fill, &zeroed);
    hold(size, seed + 1000);
    build_dataset(size, seed + 2000);
    dataset_free(&ds);
    int64_t id = fork_family(want, &ticket, &granted);
    if (id > 0) {
        static struct states_answer answer;
        static struct range_job job;
        static struct zero_job zeros;
        job = (struct range_job){ .d = &shared, .off = 0, .len = size };
        run_user(hash_range, &job);
        memcpy(answer.shared, job.digest, 32);
        zeros.d = &zeroed;
        run_user(count_nonzero, &zeros);
        answer.nonzero = zeros.nonzero;
        dataset_free(&held);
        build_dataset(2 * size, seed + (uint64_t)id);
        job = (struct range_job){ .d = &ds, .off = 0, .len = 2 * size };
        run_user(hash_range, &job);
        memcpy(answer.allocated, job.digest, 32);
        sf_send(0, &answer, sizeof answer);
        machine_exit(0);
    }
    collect(ticket, granted, sizeof(struct states_answer));
    int status = 0;
    for (uint64_t i = 1; i <= granted; i++) {
        if (!answered[i]) {
            kprintf("states %lu error status %ld\n", i, statuses[i]);
            status = 1;
            continue;
        }
        struct states_answer a;
        memcpy(&a, answers[i], sizeof a);
        char shared_hex[65], allocated_hex[65];
        hex32(a.shared, shared_hex);
        hex32(a.allocated, allocated_hex);
        kprintf("states %lu shared=%s nonzero=%lu allocated=%s\n", i, shared_hex, a.nonzero, allocated_hex);
    }
    kprintf("granted %lu\n", granted);
    machine_exit(status);
}
