/* Command line: "WORKLOAD key=value ...". Parsed in place into words. */
#include "kernel.h"

#define MAX_WORDS 64

static const char *words[MAX_WORDS];
static unsigned nwords;

/* Splits boot_cmdline in place (NULs between words): no copy, it's on the boot path. */
void cmdline_parse(void) {
    char *p = boot_cmdline;
    nwords = 0;
    while (*p && nwords < MAX_WORDS) {
        while (*p == ' ' || *p == '\t' || *p == '\n') *p++ = '\0';
        if (!*p) break;
        words[nwords++] = p;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n') p++;
    }
}

const char *cmdline_workload(void) { return nwords ? words[0] : ""; }

/* Last occurrence wins, so a host-appended key overrides an earlier one. */
const char *cmdline_get(const char *key) {
    size_t kl = strlen(key);
    const char *val = NULL;
    for (unsigned i = 1; i < nwords; i++)
        if (!strncmp(words[i], key, kl) && words[i][kl] == '=')
            val = words[i] + kl + 1;
    return val;
}

/*
 * key=value as a number (with `size`, a size such as 64K) from min to max into *out, which keeps
 * its value (the default) when the key is absent and not `required`. Else one error line naming
 * the key, and false. The host checks a workload's parameters first (src/guest/workloads.ts):
 * this is for a command line given some other way.
 */
bool cmdline_number(const char *key, bool size, bool required, uint64_t min, uint64_t max, uint64_t *out) {
    const char *text = cmdline_get(key);
    uint64_t v;
    if (!text && !required) return true;
    if (text && (size ? parse_size(text, &v) : parse_u64(text, &v)) && v >= min && v <= max) {
        *out = v;
        return true;
    }
    if (!text) kprintf("error: %s needs %s=<%s>\n", cmdline_workload(), key, size ? "bytes[K|M|G]" : "number");
    else kprintf("error: bad %s=%s (%s from %lu to %lu)\n", key, text, size ? "a size" : "a number", min, max);
    return false;
}

bool cmdline_flag(const char *key) {
    const char *v = cmdline_get(key);
    return v && (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on"));
}

static bool parse_digits(const char **sp, unsigned base, uint64_t *out) {
    const char *s = *sp;
    uint64_t v = 0;
    unsigned n = 0;
    for (;; s++, n++) {
        unsigned d;
        if (*s >= '0' && *s <= '9') d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f') d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F') d = (unsigned)(*s - 'A' + 10);
        else break;
        if (v > (UINT64_MAX - d) / base) return false; /* overflow */
        v = v * base + d;
    }
    if (!n) return false;
    *sp = s;
    *out = v;
    return true;
}

bool parse_u64(const char *s, uint64_t *out) {
    unsigned base = 10;
    if (!s) return false;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { base = 16; s += 2; }
    return parse_digits(&s, base, out) && *s == '\0';
}

bool parse_size(const char *s, uint64_t *out) {
    uint64_t v, mul = 1;
    if (!s || !parse_digits(&s, 10, &v)) return false;
    switch (*s) {
    case 'k': case 'K': mul = 1ull << 10; s++; break;
    case 'm': case 'M': mul = 1ull << 20; s++; break;
    case 'g': case 'G': mul = 1ull << 30; s++; break;
    }
    if (*s != '\0' || (v && v > UINT64_MAX / mul)) return false;
    *out = v * mul;
    return true;
}
