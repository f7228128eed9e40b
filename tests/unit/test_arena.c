/* The arena simulation's snapshot text: its fast number formatting must write exactly what
 * printf("%.2f") writes (clients and tests read these values), ties and odd values included. */
#include "pylon/sim.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const pylon_sim_vtable *pylon_sim_arena(void);

/* The snapshot of "p0" (or of a spectator, who sees everyone whatever the distances) in an
 * arena restored with players at (xs[i], ys[i]), and what the printf formatting gives for the
 * same state. */
static void check(const double *xs, const double *ys, size_t n, bool spectator)
{
    const pylon_sim_vtable *v = pylon_sim_arena();
    pylon_sim_ctx ctx = {.shard_id = "t",
                         .tick_rate_hz = 20,
                         .config_json = "{\"aoi_cell\":1e12,\"aoi_radius\":10}"};
    pylon_sim_out st = {0}, want = {0}, got = {0};
    pylon_sim_out_printf(&st, "{\"width\":1e12,\"height\":1e12,\"speed\":1,\"players\":[");
    for (size_t i = 0; i < n; i++)
        pylon_sim_out_printf(&st, "%s[\"p%zu\",%.17g,%.17g,0,0,%zu]", i ? "," : "", i, xs[i], ys[i],
                             i + 7);
    pylon_sim_out_put(&st, "]}", 2);
    void *a = v->restore(&ctx, st.data, st.len);
    cr_assert_not_null(a, "restore: %s", st.data);
    if (spectator)
        pylon_sim_out_put(&want, "{\"you\":null,", 12);
    else
        pylon_sim_out_printf(&want, "{\"you\":{\"sid\":\"p0\",\"x\":%.2f,\"y\":%.2f,\"ack\":7},",
                             xs[0], ys[0]);
    pylon_sim_out_put(&want, "\"players\":[", 11);
    for (size_t i = 0; i < n; i++)
        pylon_sim_out_printf(&want, "%s{\"sid\":\"p%zu\",\"x\":%.2f,\"y\":%.2f}", i ? "," : "", i,
                             xs[i], ys[i]);
    pylon_sim_out_put(&want, "]}", 2);
    const char *sid = spectator ? "spectator" : "p0";
    v->snapshot_for(a, sid, &got);
    cr_assert_str_eq(got.data, want.data);
    /* twice: the second one comes from the cached entries */
    got.len = 0;
    v->snapshot_for(a, sid, &got);
    cr_assert_str_eq(got.data, want.data);
    v->destroy(a);
    free(st.data);
    free(want.data);
    free(got.data);
}

Test(arena, snapshot_numbers_match_printf)
{
    static const double odd[] = {0,      0.001,  0.005,   0.015,       0.125,       0.375,
                                 2.675,  1.005,  999.995, 1000,        0.994999,    0.995,
                                 -0.001, -1.005, -2.5,    123456.785,  9999999.995, 1e8 + 0.125,
                                 5e9,    -7e10,  1e-300,  99.99999999, 1e300,       -1.7e308};
    size_t n = sizeof odd / sizeof odd[0];
    check(odd, odd + 1, n - 3, false);
    check(odd, odd + 1, n - 1, true); /* with the huge ones, beyond any grid cell */
    double xs[64], ys[64];
    srand(42);
    for (int round = 0; round < 300; round++) {
        for (int i = 0; i < 64; i++) {
            /* hundredths and half-hundredths (ties) and arbitrary values */
            int kind = rand() % 3;
            double base = (double)(rand() % 2000000) / 1000.0;
            xs[i] = kind == 0   ? base
                    : kind == 1 ? (double)(rand() % 200000) / 200.0
                                : base + (double)rand() / RAND_MAX / 1000;
            ys[i] = (double)rand() / RAND_MAX * 1000.0;
        }
        check(xs, ys, 64, round % 2);
    }
}

Test(arena, snapshot_follows_ticks)
{
    const pylon_sim_vtable *v = pylon_sim_arena();
    pylon_sim_ctx ctx = {.shard_id = "t", .tick_rate_hz = 20, .config_json = "{}"};
    char err[100];
    void *a = v->init(&ctx, err, sizeof err);
    cr_assert(v->apply_input(a, "p1", "{\"dx\":1,\"dy\":0}", 15, 3));
    pylon_sim_out o1 = {0}, o2 = {0};
    v->tick(a, 0.05);
    v->snapshot_for(a, "p1", &o1);
    v->tick(a, 0.05);
    v->snapshot_for(a, "p1", &o2);
    cr_assert_str_neq(o1.data, o2.data); /* the cache was rebuilt after the tick */
    cr_assert_not_null(strstr(o2.data, "\"ack\":3}"));
    v->destroy(a);
    free(o1.data);
    free(o2.data);
}

/* client_seq is a uint64 (protocol.md §4.3): the ack is written unsigned, all 20 digits. */
Test(arena, ack_is_written_unsigned)
{
    const pylon_sim_vtable *v = pylon_sim_arena();
    pylon_sim_ctx ctx = {.shard_id = "t", .tick_rate_hz = 20, .config_json = "{}"};
    char err[100];
    void *a = v->init(&ctx, err, sizeof err);
    cr_assert(v->apply_input(a, "p1", "{\"dx\":0,\"dy\":0}", 15, UINT64_MAX));
    v->tick(a, 0.05);
    pylon_sim_out o = {0};
    v->snapshot_for(a, "p1", &o);
    cr_assert_not_null(strstr(o.data, "\"ack\":18446744073709551615},"), "%s", o.data);
    v->destroy(a);
    free(o.data);
}
