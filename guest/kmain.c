/* C entry on the BSP: copy boot info, pick the workload, set up the machine, run it. */
#include "alloc.h"
#include "apic.h"
#include "console.h"
#include "idt.h"
#include "kernel.h"
#include "paging.h"
#include "smp.h"
#include "time.h"
#include "user.h"
#include "workloads.h"
#include "x86.h"

#define HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
    uint32_t magic, version, flags, nr_modules;
    uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr;
    uint64_t memmap_paddr; /* version >= 1 */
    uint32_t memmap_entries, reserved;
} PACKED;

char boot_cmdline[4096];
struct memmap_entry boot_memmap[MAX_MEMMAP];
uint32_t boot_memmap_entries;

static const struct workload workloads[] = {
    { "hello", WL_EARLY, wl_hello },
    { "sha256", 0, wl_sha256 },
    { "serve", 0, wl_serve },
    { "crash", 0, wl_crash },
    { "hostile", 0, wl_hostile },
    { "sha256-par", 0, wl_sha256_par },
    { "search-par", 0, wl_search_par },
    { "alloc-par", 0, wl_alloc_par },
    { "mem-states", 0, wl_mem_states },
    { "misuse", 0, wl_misuse },
    { "isolation", 0, wl_isolation },
    { "quotas", 0, wl_quotas },
    { "compute", 0, wl_compute },
};

/* The boot page tables map exactly 0..4 GiB. */
static bool below_4g(uint64_t pa, uint64_t len) { return pa < 4 * GIB && len <= 4 * GIB - pa; }

/* Copy everything we need out of start_info before any of it can be overwritten
 * (QEMU keeps it in low memory that we later reuse, e.g. for the AP trampoline). */
static void copy_boot_info(uint64_t si_pa) {
    if (!si_pa || !below_4g(si_pa, sizeof(struct hvm_start_info)))
        panic("bad start_info address 0x%lx", si_pa);
    const struct hvm_start_info *si = (const struct hvm_start_info *)(uintptr_t)si_pa;
    if (si->magic != HVM_START_MAGIC)
        panic("bad start_info magic 0x%x", si->magic);
    if (si->version < 1)
        panic("start_info version %u has no memory map", si->version);

    uint64_t cl = si->cmdline_paddr;
    if (cl) {
        if (!below_4g(cl, 1)) panic("cmdline above 4 GiB (0x%lx)", cl);
        const char *src = (const char *)(uintptr_t)cl;
        size_t n = 0;
        while (n < sizeof(boot_cmdline) - 1 && below_4g(cl + n, 1) && src[n]) {
            boot_cmdline[n] = src[n];
            n++;
        }
        boot_cmdline[n] = '\0';
    }

    uint32_t n = si->memmap_entries;
    if (n > MAX_MEMMAP) n = MAX_MEMMAP; /* extra entries are ignored */
    if (n && !below_4g(si->memmap_paddr, (uint64_t)n * sizeof(struct memmap_entry)))
        panic("memmap above 4 GiB (0x%lx)", si->memmap_paddr);
    memcpy(boot_memmap, (const void *)(uintptr_t)si->memmap_paddr, n * sizeof(struct memmap_entry));
    boot_memmap_entries = n;
}

static uint32_t smp_param(void) {
    uint64_t n = 1;
    const char *s = cmdline_get("smp");
    if (s && (!parse_u64(s, &n) || n < 1)) {
        kprintf("warning: bad smp=%s, using 1 CPU\n", s);
        n = 1;
    }
    if (n > MAX_CPUS) n = MAX_CPUS;
    return (uint32_t)n;
}

/* Everything a non-early workload may need. TSC calibration is not here: it is lazy. */
extern uint64_t boot_tsc0;

static void machine_init(void) {
    uint64_t t[5];
    t[0] = rdtsc();
    paging_init();
    t[1] = rdtsc();
    alloc_init();
    t[2] = rdtsc();
    pic_disable();
    lapic_init();
    user_init_cpu(lapic_id());
    irq_enable();
    t[3] = rdtsc();
    smp_start(smp_param());
    t[4] = rdtsc();
    if (cmdline_flag("verbose")) {
        kprintf("guest: %u cpus, %lu pages total, %lu free, kernel 0x%lx-0x%lx\n", smp_online(),
                alloc_total_pages(), alloc_free_pages(), (uint64_t)(uintptr_t)_kernel_start,
                (uint64_t)(uintptr_t)_kernel_end);
        kprintf("guest: TSC cycles: boot %lu, paging %lu, alloc %lu, apic %lu, smp %lu\n",
                t[0] - boot_tsc0, t[1] - t[0], t[2] - t[1], t[3] - t[2], t[4] - t[3]);
    }
}

NORETURN void kmain(uint32_t start_info_pa) {
    idt_load();
    copy_boot_info(start_info_pa);
    cmdline_parse();

    const char *w = cmdline_workload();
    const struct workload *wl = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(workloads); i++)
        if (!strcmp(workloads[i].name, w)) wl = &workloads[i];
    if (!wl) {
        if (!*w) kprintf("error: no workload on the command line\n");
        else kprintf("error: unknown workload %s\n", w);
        machine_exit(2);
    }
    if (!(wl->flags & WL_EARLY))
        machine_init();
    wl->run();
}
