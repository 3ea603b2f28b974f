/*
 * What the domU tools (sf, dataset) share: raw Linux system calls, the few libc functions gcc may
 * call, text output and parsing, and the entry point. No libc: each tool is one static binary that
 * runs in any initramfs. A tool defines TOOL_NAME (for its error lines) and tool_main().
 */
#pragma once
#include <stddef.h>
#include <stdint.h>

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_mmap 9
#define SYS_munmap 11
#define SYS_nanosleep 35
#define SYS_clock_gettime 228
#define SYS_exit_group 231
#define O_RDWR 2
#define CLOCK_MONOTONIC 1
#define CLOCK_REALTIME 0

static inline long syscall3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static inline long syscall6(long n, long a, long b, long c, long d, long e, long f) {
    long r;
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
    return r;
}

void *memcpy(void *d, const void *s, size_t n) {
    uint8_t *dd = d;
    const uint8_t *ss = s;
    while (n--) *dd++ = *ss++;
    return d;
}
void *memset(void *d, int c, size_t n) {
    uint8_t *dd = d;
    while (n--) *dd++ = (uint8_t)c;
    return d;
}

static inline size_t slen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
static inline int starts(const char *s, const char *prefix) {
    while (*prefix)
        if (*s++ != *prefix++) return 0;
    return 1;
}
static inline int same(const char *a, const char *b) { return starts(a, b) && slen(a) == slen(b); }

static inline void out(int fd, const char *s) { syscall3(SYS_write, fd, (long)s, (long)slen(s)); }
static inline __attribute__((noreturn)) void quit(int status) {
    for (;;) syscall3(SYS_exit_group, status, 0, 0);
}
static inline __attribute__((noreturn)) void die(const char *a, const char *b) {
    out(2, TOOL_NAME ": ");
    out(2, a);
    if (b) out(2, b);
    out(2, "\n");
    quit(1);
}

static inline char *fmt_u64(char *end, uint64_t v) {
    *--end = 0;
    do *--end = (char)('0' + v % 10); while (v /= 10);
    return end;
}
static inline int parse_u64(const char *s, uint64_t *v) {
    uint64_t r = 0;
    if (!*s) return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || r > (UINT64_MAX - 9) / 10) return 0;
        r = r * 10 + (uint64_t)(*s - '0');
    }
    *v = r;
    return 1;
}

static int tool_main(int argc, char **argv);

__attribute__((used)) void start_c(long *stack) {
    quit(tool_main((int)stack[0], (char **)(stack + 1)));
}

__asm__(".globl _start\n_start:\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call start_c\n  hlt\n");
