/* COM1 output: poll LSR.THRE, then write THR. The UART is deliberately not programmed
 * (a minimal VMM UART may only implement THR and LSR; QEMU's default state works). */
#include "console.h"
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

/* "\n" goes out as "\n" only: the host side does any CRLF translation. */
void console_write(const char *s, size_t n) {
    spin_lock(&console_lock);
    for (size_t i = 0; i < n; i++)
        com1_putc(s[i]);
    spin_unlock(&console_lock);
}
