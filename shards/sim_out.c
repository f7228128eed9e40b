/* sim_out.c — the output buffer of pylon/sim.h. */
#include "pylon/sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool pylon_sim_out_put(pylon_sim_out *o, const void *bytes, size_t n)
{
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *p = realloc(o->data, cap);
        if (!p) return false;
        o->data = p;
        o->cap = cap;
    }
    memcpy(o->data + o->len, bytes, n);
    o->len += n;
    o->data[o->len] = '\0';
    return true;
}

bool pylon_sim_out_printf(pylon_sim_out *o, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return false;
    if ((size_t)n < sizeof small) return pylon_sim_out_put(o, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return false;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    bool ok = pylon_sim_out_put(o, big, (size_t)n);
    free(big);
    return ok;
}

/* The JSON escape of byte c, or NULL when it stands for itself. */
static const char *escape_of(unsigned char c, char u[7])
{
    static const char HEX[] = "0123456789abcdef";
    switch (c) {
    case '"':
        return "\\\"";
    case '\\':
        return "\\\\";
    case '\n':
        return "\\n";
    case '\r':
        return "\\r";
    case '\t':
        return "\\t";
    case '\b':
        return "\\b";
    case '\f':
        return "\\f";
    }
    if (c >= 0x20) return NULL;
    memcpy(u, "\\u00", 4);
    u[4] = HEX[c >> 4];
    u[5] = HEX[c & 15];
    u[6] = '\0';
    return u;
}

bool pylon_sim_out_json_escaped(pylon_sim_out *o, const char *s)
{
    char u[7];
    const char *run = s; /* bytes that stand for themselves go out in runs */
    for (const char *c = s;; c++) {
        const char *e = *c ? escape_of((unsigned char)*c, u) : NULL;
        if (!*c || e) {
            if (c > run && !pylon_sim_out_put(o, run, (size_t)(c - run))) return false;
            if (!*c) return true;
            if (!pylon_sim_out_put(o, e, strlen(e))) return false;
            run = c + 1;
        }
    }
}
