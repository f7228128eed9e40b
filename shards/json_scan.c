/* json_scan.c — see json_scan.h. */
#include "shards/json_scan.h"

#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH  32
#define MAX_DIGITS 18 /* integers that surely fit an int64 (jansson refuses overflows) */
#define MAX_NUMBER 64

typedef struct cur {
    const char *p, *end;
} cur;

/* A string without escapes, control or non-ASCII bytes; its contents in s and n. */
static bool str(cur *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"') return false;
    const char *b = ++c->p;
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20 || ch >= 0x80 || ch == '\\') return false;
        c->p++;
    }
    if (c->p >= c->end) return false;
    *s = b;
    *n = (size_t)(c->p - b);
    c->p++;
    return true;
}

static bool digit(const cur *c)
{
    return c->p < c->end && *c->p >= '0' && *c->p <= '9';
}

/* A JSON number without exponent: -?(0|[1-9][0-9]{0,17})(\.[0-9]+)?; *is_int when no fraction. */
static bool number(cur *c, bool *is_int)
{
    const char *b = c->p;
    if (c->p < c->end && *c->p == '-') c->p++;
    if (!digit(c)) return false;
    const char *ib = c->p;
    if (*c->p == '0')
        c->p++;
    else
        while (digit(c))
            c->p++;
    if ((size_t)(c->p - ib) > MAX_DIGITS) return false;
    *is_int = true;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!digit(c)) return false;
        while (digit(c))
            c->p++;
        *is_int = false;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) return false;
    return c->p - b <= MAX_NUMBER;
}

static bool lit(cur *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return false;
    c->p += n;
    return true;
}

/* Any plain value, nested up to MAX_DEPTH. */
static bool value(cur *c, int depth)
{
    if (c->p >= c->end || depth > MAX_DEPTH) return false;
    const char *s;
    size_t n;
    bool is_int;
    switch (*c->p) {
    case '"':
        return str(c, &s, &n);
    case 't':
        return lit(c, "true");
    case 'f':
        return lit(c, "false");
    case 'n':
        return lit(c, "null");
    case '[':
        c->p++;
        if (c->p < c->end && *c->p == ']') return c->p++, true;
        for (;;) {
            if (!value(c, depth + 1)) return false;
            if (c->p >= c->end) return false;
            if (*c->p == ']') return c->p++, true;
            if (*c->p++ != ',') return false;
        }
    case '{':
        c->p++;
        if (c->p < c->end && *c->p == '}') return c->p++, true;
        for (;;) {
            /* duplicate keys are left to jansson (it keeps the last one) */
            if (!str(c, &s, &n) || c->p >= c->end || *c->p++ != ':') return false;
            if (!value(c, depth + 1)) return false;
            if (c->p >= c->end) return false;
            if (*c->p == '}') return c->p++, true;
            if (*c->p++ != ',') return false;
        }
    default:
        return number(c, &is_int);
    }
}

static bool key_is(const char *s, size_t n, const char *k)
{
    return strlen(k) == n && memcmp(s, k, n) == 0;
}

bool pylon_scan_input_msg(const char *p, size_t len, const char **input, size_t *input_len,
                          uint64_t *client_seq)
{
    cur c = {p, p + len};
    bool have_in = false, have_seq = false;
    *input = "null";
    *input_len = 4;
    *client_seq = 0;
    if (c.p >= c.end || *c.p++ != '{') return false;
    if (c.p < c.end && *c.p == '}') return c.p + 1 == c.end;
    for (;;) {
        const char *k;
        size_t kn;
        if (!str(&c, &k, &kn) || c.p >= c.end || *c.p++ != ':') return false;
        if (key_is(k, kn, "input") && !have_in) {
            const char *b = c.p;
            if (!value(&c, 1)) return false;
            *input = b;
            *input_len = (size_t)(c.p - b);
            have_in = true;
        } else if (key_is(k, kn, "client_seq") && !have_seq) {
            /* a plain non-negative integer; anything else (malformed) goes the long way */
            const char *b = c.p;
            bool is_int;
            if (c.p < c.end && *c.p == '-') return false;
            if (!number(&c, &is_int) || !is_int) return false;
            uint64_t v = 0;
            for (const char *d = b; d < c.p; d++)
                v = v * 10 + (uint64_t)(*d - '0');
            *client_seq = v;
            have_seq = true;
        } else {
            return false;
        }
        if (c.p >= c.end) return false;
        if (*c.p == '}') return c.p + 1 == c.end;
        if (*c.p++ != ',') return false;
    }
}

bool pylon_scan_number_object(const char *p, size_t len, const char *const *keys, size_t nkeys,
                              double *values, bool *present)
{
    cur c = {p, p + len};
    for (size_t i = 0; i < nkeys; i++)
        present[i] = false;
    if (c.p >= c.end || *c.p++ != '{') return false;
    if (c.p < c.end && *c.p == '}') return c.p + 1 == c.end;
    for (;;) {
        const char *k;
        size_t kn;
        if (!str(&c, &k, &kn) || c.p >= c.end || *c.p++ != ':') return false;
        size_t i = 0;
        while (i < nkeys && !key_is(k, kn, keys[i]))
            i++;
        if (i == nkeys || present[i]) return false;
        const char *b = c.p;
        bool is_int;
        if (!number(&c, &is_int)) return false;
        char buf[MAX_NUMBER + 1]; /* strtod needs a terminator; the number is at most 64 bytes */
        memcpy(buf, b, (size_t)(c.p - b));
        buf[c.p - b] = '\0';
        values[i] = strtod(buf, NULL);
        present[i] = true;
        if (c.p >= c.end) return false;
        if (*c.p == '}') return c.p + 1 == c.end;
        if (*c.p++ != ',') return false;
    }
}
