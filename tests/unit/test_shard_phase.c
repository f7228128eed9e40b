/* test_shard_phase.c — shards created together tick at phases spread over the interval. */
#include "shards/shard.h"

#include <criterion/criterion.h>
#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

Test(shard_phase, phases_of_any_burst_are_inside_the_interval_and_evenly_spread)
{
    const uint64_t interval = 50000000; /* 20 Hz */
    for (size_t n = 2; n <= 500; n = n * 3 / 2 + 1) {
        uint64_t v[500];
        for (size_t k = 0; k < n; k++) {
            v[k] = pylon_shard_tick_phase(k, interval);
            cr_assert_lt(v[k], interval);
        }
        qsort(v, n, sizeof v[0], cmp_u64);
        /* Largest gap (circular) against the ideal interval / n: the golden-ratio sequence
         * keeps it under 2.7× for every n (aligned starts would make it the whole interval). */
        uint64_t gap = v[0] + interval - v[n - 1];
        for (size_t k = 1; k < n; k++)
            if (v[k] - v[k - 1] > gap) gap = v[k] - v[k - 1];
        cr_assert_leq(gap, 27 * interval / (10 * n), "%zu shards: a gap of %llu ns", n,
                      (unsigned long long)gap);
    }
}

Test(shard_phase, a_later_burst_continues_the_spread)
{
    /* The sequence goes on across bursts: shards 0..9 and 10..19 do not share phases. */
    const uint64_t interval = 50000000;
    for (uint64_t a = 0; a < 20; a++)
        for (uint64_t b = a + 1; b < 20; b++)
            cr_assert_neq(pylon_shard_tick_phase(a, interval), pylon_shard_tick_phase(b, interval));
}
