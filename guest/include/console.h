/* COM1 console output and a small printf. */
#pragma once
#include "types.h"

void console_putc(char c);
void console_write(const char *s, size_t n);
/* printf subset: %s %c %d %i %u %x %X %p with l/ll/z modifiers, width and '0' padding. One call = one atomic line. */
int kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int kvsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int ksnprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
