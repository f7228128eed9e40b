/* The arena simulation's snapshot text: its fast number formatting must write exactly what
 * printf("%.2f") writes (clients and tests read these values), ties and odd values included;
 * sids are JSON-escaped in snapshots and checkpoints. */
#include "pylon/sim.h"

#include <criterion/criterion.h>
#include <jansson.h>
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

/* Sids are any text (user ids, an admin's subscriber_id): snapshots and checkpoints write them
 * JSON-escaped, so frames with quotes, backslashes or control characters in a sid still parse. */
Test(arena, sids_are_json_escaped)
{
    const pylon_sim_vtable *v = pylon_sim_arena();
    pylon_sim_ctx ctx = {.shard_id = "t", .tick_rate_hz = 20, .config_json = "{}"};
    char err[100];
    void *a = v->init(&ctx, err, sizeof err);
    const char *odd = "q\"uo\\te\nline\t\x01\x1f/é";
    cr_assert(v->apply_input(a, odd, "{\"dx\":1,\"dy\":0}", 15, 4));
    cr_assert(v->apply_input(a, "plain", "{\"dx\":0,\"dy\":0}", 15, 1));
    v->tick(a, 0.05);
    for (int round = 0; round < 2; round++) { /* formatted, then from the cached entries */
        for (int who = 0; who < 3; who++) {
            const char *sid = who == 0 ? odd : who == 1 ? "plain" : "spectator";
            pylon_sim_out o = {0};
            v->snapshot_for(a, sid, &o);
            json_error_t je;
            json_t *j = json_loadb(o.data, o.len, 0, &je);
            cr_assert_not_null(j, "snapshot for %s is not JSON (%s): %.*s", sid, je.text,
                               (int)o.len, o.data);
            if (who == 0) {
                cr_assert_str_eq(
                    json_string_value(json_object_get(json_object_get(j, "you"), "sid")), odd);
                cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "you"), "ack")),
                             4);
            }
            bool seen = false;
            size_t i;
            json_t *pl;
            json_array_foreach(json_object_get(j, "players"), i, pl)
            {
                if (strcmp(json_string_value(json_object_get(pl, "sid")), odd) == 0) seen = true;
            }
            cr_assert(seen, "%s sees the player %s: %.*s", sid, odd, (int)o.len, o.data);
            json_decref(j);
            free(o.data);
        }
    }
    /* A checkpoint keeps the sid: saved, restored, the same snapshot. */
    pylon_sim_out saved = {0}, before = {0}, after = {0};
    cr_assert(v->save(a, &saved));
    void *b = v->restore(&ctx, saved.data, saved.len);
    cr_assert_not_null(b, "restore of %.*s", (int)saved.len, saved.data);
    v->snapshot_for(a, odd, &before);
    v->snapshot_for(b, odd, &after);
    cr_assert_str_eq(after.data, before.data);
    v->destroy(a);
    v->destroy(b);
    free(saved.data);
    free(before.data);
    free(after.data);
}

/* pylon_sim_out_json_escaped (pylon/sim.h): whatever the name, the escaped text inside quotes
 * parses back to the same string. */
Test(sim_out, json_escaped_round_trips)
{
    char controls[32];
    for (int i = 1; i < 32; i++)
        controls[i - 1] = (char)i;
    controls[31] = '\0';
    const char *names[] = {"",
                           "plain",
                           "q\"uote",
                           "back\\slash",
                           "new\nline\ttab",
                           controls,
                           "gr\xc3\xbc\xc3\x9f \xe2\x82\xac",
                           "\"\\\"\\"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        pylon_sim_out o = {0};
        cr_assert(pylon_sim_out_put(&o, "\"", 1));
        cr_assert(pylon_sim_out_json_escaped(&o, names[k]));
        cr_assert(pylon_sim_out_put(&o, "\"", 1));
        json_error_t err;
        json_t *j = json_loadb(o.data, o.len, JSON_DECODE_ANY, &err);
        cr_assert_not_null(j, "name %zu: %s: %s", k, o.data, err.text);
        cr_assert_str_eq(json_string_value(j), names[k], "name %zu", k);
        json_decref(j);
        free(o.data);
    }
}

const pylon_sim_vtable *pylon_sim_turns(void);

/* The turn-based simulation writes its players' sids escaped too. */
Test(turns, sids_are_json_escaped)
{
    const pylon_sim_vtable *v = pylon_sim_turns();
    pylon_sim_ctx ctx = {.shard_id = "t", .tick_rate_hz = 0, .config_json = "{}"};
    char err[200];
    void *st = v->init(&ctx, err, sizeof err);
    cr_assert_not_null(st, "%s", err);
    const char *odd = "a \"b\" \\c\nd";
    cr_assert(v->apply_input(st, odd, "{\"join\":true}", 13, 1));
    cr_assert(v->apply_input(st, "plain", "{\"join\":true}", 13, 2));
    pylon_sim_out o = {0};
    v->snapshot_for(st, odd, &o);
    json_t *j = json_loadb(o.data, o.len, 0, NULL);
    cr_assert_not_null(j, "the snapshot is JSON: %s", o.data);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "players"), 0)), odd);
    json_decref(j);
    free(o.data);
    v->destroy(st);
}
