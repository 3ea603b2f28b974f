/* Kernel-wide entry points: boot info, exit, panic. */
#pragma once
#include "types.h"

#define MAX_MEMMAP 128
#define E820_RAM   1

struct memmap_entry { uint64_t addr, size; uint32_t type, reserved; };

/* Copied out of hvm_start_info at boot (the originals may live anywhere in low RAM). */
extern char boot_cmdline[4096];
extern struct memmap_entry boot_memmap[MAX_MEMMAP];
extern uint32_t boot_memmap_entries;

extern char _kernel_start[], _kernel_end[], __bss_start[], __bss_end[];

/* End the VM: SF_HC_EXIT, else QEMU isa-debug-exit (port 0xf4), then cli;hlt forever. */
NORETURN void machine_exit(int status);
/* Print "guest panic: <msg>" and exit with status 255. */
NORETURN void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Cmdline access (cmdline.c). */
void cmdline_parse(void);
const char *cmdline_workload(void);
const char *cmdline_get(const char *key); /* value of key=value, or NULL */
bool parse_u64(const char *s, uint64_t *out);  /* decimal or 0x hex, whole string */
bool parse_size(const char *s, uint64_t *out); /* decimal with optional K/M/G (binary) suffix */
bool cmdline_flag(const char *key);             /* key=1/yes/true */
/* key=number (or size) within [min, max] into *out; absent and not required: *out unchanged. */
bool cmdline_number(const char *key, bool size, bool required, uint64_t min, uint64_t max, uint64_t *out);
