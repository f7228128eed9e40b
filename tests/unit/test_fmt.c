/*
 * test_fmt.c — numbers as text without printf (engine/fmt.h).
 *
 * Proves: pylon_fmt_i64 writes exactly what "%lld" writes (edge values, every power of ten
 * and its neighbours, 200 000 pseudo-random values of all magnitudes) and returns its length,
 * touching no byte past it; pylon_fmt_hex writes exactly what "%0<n>llx" writes for every
 * width 1..16 (values that fit the width) and keeps only the low digits of a wider value.
 */
#include "engine/fmt.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void check_i64(int64_t v)
{
    char want[32], got[32];
    memset(got, '#', sizeof got);
    int n = snprintf(want, sizeof want, "%" PRId64, v);
    size_t k = pylon_fmt_i64(got, v);
    cr_assert_eq(k, (size_t)n, "%" PRId64 ": length %zu, want %d", v, k, n);
    cr_assert(k <= PYLON_FMT_I64_MAX);
    cr_assert(memcmp(got, want, k) == 0, "%" PRId64 ": got %.*s", v, (int)k, got);
    cr_assert_eq(got[k], '#', "%" PRId64 ": wrote past its length", v);
}

static uint64_t next_random(uint64_t *s) /* xorshift64: the same sequence every run */
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

Test(fmt, i64_matches_printf)
{
    const int64_t edges[] = {0, 1, -1, 9, 10, -10, INT64_MAX, INT64_MIN, INT64_MIN + 1,
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
        uint64_t r = next_random(&s);
        check_i64((int64_t)(r >> (r % 64))); /* every magnitude, both signs */
    }
}

Test(fmt, hex_matches_printf_at_every_width)
{
    uint64_t s = 12345;
    for (unsigned digits = 1; digits <= 16; digits++)
        for (int i = 0; i < 2000; i++) {
            uint64_t v = next_random(&s);
            if (digits < 16) v &= (UINT64_C(1) << (4 * digits)) - 1;
            if (i == 0) v = 0;
            char want[32], got[32];
            memset(got, '#', sizeof got);
            snprintf(want, sizeof want, "%0*" PRIx64, (int)digits, v);
            pylon_fmt_hex(got, v, digits);
            cr_assert(memcmp(got, want, digits) == 0, "%u digits of %" PRIx64 ": %.*s", digits,
                      v, (int)digits, got);
            cr_assert_eq(got[digits], '#');
        }
}

Test(fmt, hex_keeps_the_low_digits_of_a_wider_value)
{
    char got[8];
    pylon_fmt_hex(got, UINT64_C(0x123456789abcdef0), 8);
    cr_assert(memcmp(got, "9abcdef0", 8) == 0);
}
