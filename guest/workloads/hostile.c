/* hostile: feed the host bad hypercalls and check it answers with errors and keeps going. */
#include "console.h"
#include "kernel.h"
#include "paging.h"
#include "sf.h"
#include "workloads.h"

static int failures;

static void check(const char *name, int64_t got, int64_t want, int64_t alt) {
    if (got == want || got == alt) {
        kprintf("hostile %s ok\n", name);
    } else {
        kprintf("hostile %s FAIL got %ld\n", name, got);
        failures++;
    }
}

static const char payload[] = "hostile console payload\n";
static uint8_t raw[256] __attribute__((aligned(64)));

NORETURN void wl_hostile(void) {
    if (!sf_available())
        kprintf("hostile: no snowflock VMM (CPUID 0x40000100), hypercalls return SF_ENOSYS\n");
    uint64_t buf = (uint64_t)(uintptr_t)payload, len = sizeof(payload) - 1;

    check("abi_version", sf_abi_version(), SF_ABI_VERSION, SF_ABI_VERSION);
    check("console_beyond_ram",
          sf_hypercall(SF_HC_CONSOLE_WRITE, ALIGN_UP(ram_top(), 4096) + 16 * MIB, 16, 0, 0, 0, 0),
          SF_EFAULT, SF_EFAULT);
    check("console_far_beyond_ram", sf_hypercall(SF_HC_CONSOLE_WRITE, 1ull << 52, 16, 0, 0, 0, 0),
          SF_EFAULT, SF_EFAULT);
    check("console_wrap", sf_hypercall(SF_HC_CONSOLE_WRITE, 0xfffffffffffffff0ull, 0x20, 0, 0, 0, 0),
          SF_EFAULT, SF_EFAULT);
    check("console_huge_len", sf_hypercall(SF_HC_CONSOLE_WRITE, buf, 0x7fffffffffffffffull, 0, 0, 0, 0),
          SF_E2BIG, SF_EFAULT);
    check("console_too_long", sf_hypercall(SF_HC_CONSOLE_WRITE, buf, SF_CONSOLE_MAX + 1, 0, 0, 0, 0),
          SF_E2BIG, SF_E2BIG);
    check("unknown_call", sf_hypercall(999, 0, 0, 0, 0, 0, 0), SF_ENOSYS, SF_ENOSYS);

    /* A block 4 bytes off 8-byte alignment: the host must ignore it entirely. */
    volatile struct sf_call *bad = (volatile struct sf_call *)(raw + 4);
    struct sf_call tmpl = { .nr = SF_HC_ABI_VERSION, .flags = 0, .args = {0}, .result = SF_ENOSYS };
    memcpy((void *)bad, &tmpl, 64);
    sf_call_raw(bad);
    int64_t r;
    memcpy(&r, (const void *)((const uint8_t *)bad + 56), 8);
    check("unaligned_block", r, SF_ENOSYS, SF_ENOSYS);

    check("console_valid", sf_console_write(payload, len), (int64_t)len, (int64_t)len);
    check("abi_version_after", sf_abi_version(), SF_ABI_VERSION, SF_ABI_VERSION);

    kprintf("hostile done\n");
    machine_exit(failures ? 1 : 0);
}
