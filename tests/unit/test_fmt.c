/*
 * test_fmt.c — numbers as text without printf (engine/fmt.h).
 *
 * Proves: pylon_fmt_i64 / pylon_fmt_u64 write exactly what "%lld" / "%llu" write (edge values,
 * every power of ten and its neighbours, 200 000 pseudo-random values of all magnitudes) and
 * return their length, touching no byte past it; pylon_fmt_hex writes exactly what "%0<n>llx"
 * writes for every width 1..16 (values that fit the width) and keeps only the low digits of a
 * wider value; pylon_fmt_copy copies and truncates as snprintf "%s" does.
 */
#include "engine/fmt.h"

#include "support.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* `got` holds k digits and then the untouched '#' fill; `want` is printf's text. */
static void same_digits(const char *want, const char *got, size_t k)
{
    cr_assert_eq(k, strlen(want), "%s: length %zu", want, k);
    cr_assert(k <= PYLON_FMT_I64_MAX);
    cr_assert(memcmp(got, want, k) == 0, "%s: got %.*s", want, (int)k, got);
    cr_assert_eq(got[k], '#', "%s: wrote past its length", want);
}

static void check_i64(int64_t v)
{
    char want[32], got[32];
    memset(got, '#', sizeof got);
    snprintf(want, sizeof want, "%" PRId64, v);
    same_digits(want, got, pylon_fmt_i64(got, v));
}

static void check_u64(uint64_t v)
{
    char want[32], got[32];
    memset(got, '#', sizeof got);
    snprintf(want, sizeof want, "%" PRIu64, v);
    same_digits(want, got, pylon_fmt_u64(got, v));
}

Test(fmt, i64_matches_printf)
{
    const int64_t edges[] = {0,         1,         -1,
                             9,         10,        -10,
                             INT64_MAX, INT64_MIN, INT64_MIN + 1,
                             INT32_MAX, INT32_MIN, (int64_t)UINT32_MAX};
    for (size_t i = 0; i < sizeof edges / sizeof *edges; i++)
        check_i64(edges[i]);
    for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10)
        for (int64_t d = -1; d <= 1; d++) {
            check_i64(p + d);
            check_i64(-(p + d));
        }
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 200000; i++) {
        uint64_t r = test_random(&s);
        check_i64((int64_t)(r >> (r % 64))); /* every magnitude, both signs */
        check_u64(r >> (r % 64));
    }
    check_u64(0);
    check_u64(UINT64_MAX);
    check_u64((uint64_t)INT64_MAX + 1);
    for (uint64_t p = 1; p <= UINT64_MAX / 10; p *= 10) {
        check_u64(p - 1);
        check_u64(p);
        check_u64(p + 1);
    }
}

Test(fmt, copy_is_snprintf_percent_s)
{
    const char *src = "0123456789";
    for (size_t cap = 1; cap < 14; cap++) {
        char want[16], got[16];
        memset(got, '#', sizeof got);
        snprintf(want, cap, "%s", src);
        size_t n = pylon_fmt_copy(got, cap, src);
        cr_assert_str_eq(got, want, "cap %zu", cap);
        cr_assert_eq(n, strlen(want));
        cr_assert_eq(got[cap], '#', "cap %zu: wrote past cap", cap);
    }
    char one = '#';
    cr_assert_eq(pylon_fmt_copy(&one, 0, src), 0);
    cr_assert_eq(one, '#', "cap 0 writes nothing");
}

Test(fmt, hex_matches_printf_at_every_width)
{
    uint64_t s = 12345;
    for (unsigned digits = 1; digits <= 16; digits++)
        for (int i = 0; i < 2000; i++) {
            uint64_t v = test_random(&s);
            if (digits < 16) v &= (UINT64_C(1) << (4 * digits)) - 1;
            if (i == 0) v = 0;
            char want[32], got[32];
            memset(got, '#', sizeof got);
            snprintf(want, sizeof want, "%0*" PRIx64, (int)digits, v);
            pylon_fmt_hex(got, v, digits);
            cr_assert(memcmp(got, want, digits) == 0, "%u digits of %" PRIx64 ": %.*s", digits, v,
                      (int)digits, got);
            cr_assert_eq(got[digits], '#');
        }
}

Test(fmt, hex_keeps_the_low_digits_of_a_wider_value)
{
    char got[8];
    pylon_fmt_hex(got, UINT64_C(0x123456789abcdef0), 8);
    cr_assert(memcmp(got, "9abcdef0", 8) == 0);
}
