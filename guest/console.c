/* COM1 output: poll LSR.THRE, then write THR. The UART is deliberately not programmed
 * (a minimal VMM UART may only implement THR and LSR; QEMU's default state works). */
#include "console.h"
#include "sf.h"
#include "x86.h"

#define COM1_THR 0x3f8
#define COM1_LSR 0x3fd
#define LSR_THRE 0x20

static spinlock_t console_lock;

static void com1_putc(char c) {
    while (!(inb(COM1_LSR) & LSR_THRE))
        cpu_relax();
    outb(COM1_THR, (uint8_t)c);
}

void console_putc(char c) {
    spin_lock(&console_lock);
    com1_putc(c);
    spin_unlock(&console_lock);
}

/* "\n" goes out as "\n" only: the host side does any CRLF translation.
 * Under the snowflock VMM the text goes in one sf_console_write: one exit for the line instead of
 * two a character (LSR, THR), which is what an idle VM that prints a line now and then costs. */
void console_write(const char *s, size_t n) {
    spin_lock(&console_lock);
    if (!(sf_available() && n <= SF_CONSOLE_MAX && sf_console_write(s, n) == (int64_t)n))
        for (size_t i = 0; i < n; i++)
            com1_putc(s[i]);
    spin_unlock(&console_lock);
}
