/* Basic freestanding types and helpers shared by every guest source file. */
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdarg.h>

#define ALIGN_UP(x, a)   (((x) + ((a) - 1)) & ~((uint64_t)(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))
#define ARRAY_SIZE(a)    (sizeof(a) / sizeof((a)[0]))
#define PAGE_SIZE        4096ull
#define MIB              (1024ull * 1024ull)
#define GIB              (1024ull * MIB)
#define NORETURN         __attribute__((noreturn))
#define PACKED           __attribute__((packed))

/* gcc may emit calls to these even with -ffreestanding, so we provide them (lib/string.c). */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
