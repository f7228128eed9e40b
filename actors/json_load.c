/* json_load.c — see json_load.h. */
#include "actors/json_load.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_DEPTH = 64, MAX_REAL_LEN = 63 };

static _Atomic size_t fallbacks;

size_t pylon_json_loadb_fallbacks(void)
{
    return atomic_load_explicit(&fallbacks, memory_order_relaxed);
}

/* The input still to read. A reader that returns NULL has given up: the caller frees what it
 * built and the whole document goes to jansson, which accepts it or names the error. */
typedef struct reader {
    const unsigned char *p, *end;
    int depth;
} reader;

static json_t *read_value(reader *r);

static void skip_space(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static bool is_digit(const reader *r)
{
    return r->p < r->end && *r->p >= '0' && *r->p <= '9';
}

/* The length of the multi-byte UTF-8 sequence at p, 0 when it is not one jansson accepts
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_sequence(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    uint32_t v;
    if (c < 0xC2 || c > 0xF4) return 0; /* a continuation byte, overlong C0/C1, or past F4 */
    if (c < 0xE0) {
        n = 2;
        v = c & 0x1F;
    } else if (c < 0xF0) {
        n = 3;
        v = c & 0x0F;
    } else {
        n = 4;
        v = c & 0x07;
    }
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    if ((n == 3 && v < 0x800) || (n == 4 && v < 0x10000)) return 0;
    return n;
}

/* A string after its opening quote. On success *s, *n are its bytes: in the input when it has
 * no escape, else in *owned (malloc'd, the caller frees it). */
static bool read_string(reader *r, const char **s, size_t *n, char **owned)
{
    const unsigned char *start = r->p;
    bool escaped = false;
    *owned = NULL;
    for (;;) {
        if (r->p >= r->end) return false;
        unsigned c = *r->p;
        if (c == '"') break;
        if (c < 0x20) return false; /* a control character: jansson's error */
        if (c == '\\') {
            if (r->p + 1 >= r->end) return false;
            unsigned e = r->p[1];
            if (e == 0 || !strchr("\"\\/bfnrt", (int)e)) return false; /* \u, bad escapes */
            escaped = true;
            r->p += 2;
        } else if (c < 0x80) {
            r->p++;
        } else {
            size_t k = utf8_sequence(r->p, r->end);
            if (!k) return false;
            r->p += k;
        }
    }
    size_t len = (size_t)(r->p - start);
    r->p++; /* the closing quote */
    if (!escaped) {
        *s = (const char *)start;
        *n = len;
        return true;
    }
    char *out = malloc(len ? len : 1);
    if (!out) return false;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (start[i] != '\\') {
            out[k++] = (char)start[i];
            continue;
        }
        switch (start[++i]) {
        case 'b':
            out[k++] = '\b';
            break;
        case 'f':
            out[k++] = '\f';
            break;
        case 'n':
            out[k++] = '\n';
            break;
        case 'r':
            out[k++] = '\r';
            break;
        case 't':
            out[k++] = '\t';
            break;
        default:
            out[k++] = (char)start[i];
            break; /* " \ / */
        }
    }
    *owned = out;
    *s = out;
    *n = k;
    return true;
}

/* A number in JSON's grammar. Integers of up to 18 digits cannot overflow; longer ones, and
 * reals strtod reports out of range, are left to jansson (its range errors). */
static json_t *read_number(reader *r)
{
    const unsigned char *start = r->p;
    bool negative = r->p < r->end && *r->p == '-', real = false;
    if (negative) r->p++;
    if (!is_digit(r)) return NULL;
    if (*r->p == '0') {
        r->p++;
        if (is_digit(r)) return NULL; /* a leading zero */
    } else {
        while (is_digit(r))
            r->p++;
    }
    if (r->p < r->end && *r->p == '.') {
        real = true;
        r->p++;
        if (!is_digit(r)) return NULL;
        while (is_digit(r))
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        real = true;
        r->p++;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!is_digit(r)) return NULL;
        while (is_digit(r))
            r->p++;
    }
    size_t len = (size_t)(r->p - start);
    if (!real) {
        const unsigned char *d = start + negative;
        if (len - negative > 18) return NULL;
        json_int_t v = 0;
        for (; d < r->p; d++)
            v = v * 10 + (*d - '0');
        return json_integer(negative ? -v : v);
    }
    if (len > MAX_REAL_LEN) return NULL;
    char text[MAX_REAL_LEN + 1];
    memcpy(text, start, len);
    text[len] = '\0';
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end != text + len || errno == ERANGE) return NULL;
    return json_real(v);
}

static bool read_word(reader *r, const char *word, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return false;
    r->p += n;
    return true;
}

/* Skips white space, then takes `c` if it comes next. */
static bool take(reader *r, char c)
{
    skip_space(r);
    if (r->p >= r->end || *r->p != (unsigned char)c) return false;
    r->p++;
    return true;
}

static json_t *read_array(reader *r)
{
    json_t *a = json_array();
    if (!a) return NULL;
    if (take(r, ']')) return a;
    do {
        json_t *v = read_value(r);
        if (!v || json_array_append_new(a, v) != 0) goto fail;
    } while (take(r, ','));
    if (take(r, ']')) return a;
fail:
    json_decref(a);
    return NULL;
}

/* `"key": value` after the opening quote, added to o. */
static bool read_member(reader *r, json_t *o)
{
    const char *key;
    size_t keylen;
    char *owned;
    if (!read_string(r, &key, &keylen, &owned)) return false;
    /* A repeated key: refused or replaced, as the flags say; jansson decides. */
    bool ok = !json_object_getn(o, key, keylen) && take(r, ':');
    json_t *v = ok ? read_value(r) : NULL;
    ok = v && json_object_setn_new_nocheck(o, key, keylen, v) == 0;
    free(owned);
    return ok;
}

static json_t *read_object(reader *r)
{
    json_t *o = json_object();
    if (!o) return NULL;
    if (take(r, '}')) return o;
    do {
        if (!take(r, '"') || !read_member(r, o)) goto fail;
    } while (take(r, ','));
    if (take(r, '}')) return o;
fail:
    json_decref(o);
    return NULL;
}

static json_t *read_value(reader *r)
{
    skip_space(r);
    if (r->p >= r->end) return NULL;
    switch (*r->p) {
    case '{':
    case '[': {
        if (++r->depth > MAX_DEPTH) return NULL;
        bool object = *r->p++ == '{';
        json_t *v = object ? read_object(r) : read_array(r);
        r->depth--;
        return v;
    }
    case '"': {
        r->p++;
        const char *s;
        size_t n;
        char *owned;
        if (!read_string(r, &s, &n, &owned)) return NULL;
        json_t *v = json_stringn_nocheck(s, n);
        free(owned);
        return v;
    }
    case 't':
        return read_word(r, "true", 4) ? json_true() : NULL;
    case 'f':
        return read_word(r, "false", 5) ? json_false() : NULL;
    case 'n':
        return read_word(r, "null", 4) ? json_null() : NULL;
    default:
        return read_number(r);
    }
}

json_t *pylon_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *error)
{
    if (buf && (flags & ~(size_t)(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)) == 0) {
        reader r = {.p = (const unsigned char *)buf, .end = (const unsigned char *)buf + len};
        skip_space(&r);
        bool container = r.p < r.end && (*r.p == '{' || *r.p == '[');
        json_t *j = container || (flags & JSON_DECODE_ANY) ? read_value(&r) : NULL;
        if (j) {
            skip_space(&r);
            if (r.p == r.end) {
                if (error) { /* as json_loadb leaves it after a success */
                    memset(error, 0, sizeof *error);
                    error->line = error->column = -1;
                    snprintf(error->source, sizeof error->source, "<buffer>");
                }
                return j;
            }
            json_decref(j);
        }
    }
    atomic_fetch_add_explicit(&fallbacks, 1, memory_order_relaxed);
    return json_loadb(buf, len, flags, error);
}
