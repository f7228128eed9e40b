/*
 * counter.c — an example shard plugin: the smallest complete SimState.
 *
 * Build:  cc -shared -fPIC -I<pylon>/shards/include counter.c -o libpylon_counter.so
 * Run:    PYLON_SHARD_PLUGINS=/path/libpylon_counter.so pylon dev
 *         POST /api/shards {"id":"c1","kind":"counter","config":{"goal":10}}
 *
 * Every input {"add": n} adds n to a shared count; the shard finishes when the count reaches
 * the goal. Everyone sees {"count": n, "goal": g, "last": "<sid of the last adder>"}.
 */
#include <pylon/sim.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct counter {
    long count, goal;
    char last[64];
} counter;

/* A tiny reader for {"add": n} and {"goal": n}: plugins may use any JSON library they like. */
static long field(const char *json, size_t len, const char *key, long def)
{
    char pat[32];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = memmem(json, len, pat, strlen(pat));
    return p ? strtol(p + strlen(pat), NULL, 10) : def;
}

static void *counter_init(const pylon_sim_ctx *ctx, char *err, size_t errlen)
{
    counter *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *cfg = ctx->config_json ? ctx->config_json : "{}";
    c->goal = field(cfg, strlen(cfg), "goal", 100);
    return c;
}

static bool counter_apply(void *state, const char *sid, const char *input, size_t len,
                          uint64_t client_seq)
{
    (void)client_seq;
    counter *c = state;
    long n = field(input, len, "add", 0);
    if (n <= 0) return false; /* dropped: the shard counts it */
    c->count += n;
    snprintf(c->last, sizeof c->last, "%s", sid);
    return true;
}

static void counter_tick(void *state, double dt)
{
    (void)state;
    (void)dt;
}

static void counter_snapshot(void *state, const char *sid, pylon_sim_out *out)
{
    (void)sid;
    counter *c = state;
    pylon_sim_out_printf(out, "{\"count\":%ld,\"goal\":%ld,\"last\":\"%s\"}", c->count, c->goal,
                         c->last);
}

static bool counter_finished(void *state)
{
    counter *c = state;
    return c->count >= c->goal;
}

static void counter_destroy(void *state)
{
    free(state);
}

static const pylon_sim_vtable COUNTER = {.abi_version = PYLON_SIM_ABI_VERSION,
                                         .kind = "counter",
                                         .init = counter_init,
                                         .apply_input = counter_apply,
                                         .tick = counter_tick,
                                         .snapshot_for = counter_snapshot,
                                         .is_finished = counter_finished,
                                         .destroy = counter_destroy};

const pylon_sim_vtable *pylon_sim_plugin(void)
{
    return &COUNTER;
}
