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

/* Walks a whole text that must be one object: `member` reads each value (c->p is at it) and
 * returns false to refuse the text. True when the object ends the text exactly. */
static bool walk_object(cur *c, bool (*member)(cur *c, const char *k, size_t kn, void *ctx),
                        void *ctx)
{
    if (c->p >= c->end || *c->p++ != '{') return false;
    if (c->p < c->end && *c->p == '}') return c->p + 1 == c->end;
    for (;;) {
        const char *k;
        size_t kn;
        if (!str(c, &k, &kn) || c->p >= c->end || *c->p++ != ':') return false;
        if (!member(c, k, kn, ctx)) return false;
        if (c->p >= c->end) return false;
        if (*c->p == '}') return c->p + 1 == c->end;
        if (*c->p++ != ',') return false;
    }
}

typedef struct input_msg {
    const char **input;
    size_t *input_len;
    uint64_t *client_seq;
    bool have_in, have_seq;
} input_msg;

static bool input_member(cur *c, const char *k, size_t kn, void *ctx)
{
    input_msg *m = ctx;
    const char *b = c->p;
    if (key_is(k, kn, "input") && !m->have_in) {
        if (!value(c, 1)) return false;
        *m->input = b;
        *m->input_len = (size_t)(c->p - b);
        return m->have_in = true;
    }
    if (key_is(k, kn, "client_seq") && !m->have_seq) {
        /* a plain non-negative integer; anything else (malformed) goes the long way */
        bool is_int;
        if (c->p < c->end && *c->p == '-') return false;
        if (!number(c, &is_int) || !is_int) return false;
        uint64_t v = 0;
        for (const char *d = b; d < c->p; d++)
            v = v * 10 + (uint64_t)(*d - '0');
        *m->client_seq = v;
        return m->have_seq = true;
    }
    return false;
}

bool pylon_scan_input_msg(const char *p, size_t len, const char **input, size_t *input_len,
                          uint64_t *client_seq)
{
    cur c = {p, p + len};
    *input = "null";
    *input_len = 4;
    *client_seq = 0;
    input_msg m = {.input = input, .input_len = input_len, .client_seq = client_seq};
    return walk_object(&c, input_member, &m);
}

typedef struct number_object {
    const char *const *keys;
    size_t nkeys;
    double *values;
    bool *present;
} number_object;

/* The value of a number token (no exponent: number() refuses them), as strtod reads it. With
 * at most 15 digits in all, the digits as an integer m and the fraction's length k give m and
 * 10^k both exact in a double, so m / 10^k is the correctly rounded value strtod returns
 * (Clinger's fast path) without strtod's ~300 instructions; longer numbers use strtod. */
static double number_value(const char *b, const char *e)
{
    static const double POW10[] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    bool negative = *b == '-';
    uint64_t m = 0;
    unsigned digits = 0, frac = 0;
    bool in_frac = false;
    for (const char *d = b + negative; d < e; d++) {
        if (*d == '.') {
            in_frac = true;
            continue;
        }
        m = m * 10 + (uint64_t)(*d - '0');
        frac += in_frac;
        if (++digits > 15) {
            char buf[MAX_NUMBER + 1]; /* strtod needs a terminator; at most 64 bytes */
            memcpy(buf, b, (size_t)(e - b));
            buf[e - b] = '\0';
            return strtod(buf, NULL);
        }
    }
    double v = (double)m / POW10[frac];
    return negative ? -v : v;
}

static bool number_member(cur *c, const char *k, size_t kn, void *ctx)
{
    number_object *o = ctx;
    size_t i = 0;
    while (i < o->nkeys && !key_is(k, kn, o->keys[i]))
        i++;
    if (i == o->nkeys || o->present[i]) return false;
    const char *b = c->p;
    bool is_int;
    if (!number(c, &is_int)) return false;
    o->values[i] = number_value(b, c->p);
    return o->present[i] = true;
}

bool pylon_scan_number_object(const char *p, size_t len, const char *const *keys, size_t nkeys,
                              double *values, bool *present)
{
    cur c = {p, p + len};
    for (size_t i = 0; i < nkeys; i++)
        present[i] = false;
    number_object o = {.keys = keys, .nkeys = nkeys, .values = values, .present = present};
    return walk_object(&c, number_member, &o);
}
