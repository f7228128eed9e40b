/*
 * arena_cached.c — bench/shards only: shards/sims/arena.c as a plugin of kind "arena_cached",
 * the same rules, inputs and snapshot bytes, with one change to measure what it buys
 * (README.md, "Where pylon's CPU goes"): each player's {"sid","x","y"} is formatted once per
 * tick and copied into every snapshot that shows it, instead of snprintf'd per subscriber
 * (O(players) float conversions per tick instead of O(players²)).
 *
 * The original's description follows.
 * arena.c — the built-in "arena" simulation: many players moving on a 2D plane.
 *
 * Input: {"dx": -1..1, "dy": -1..1} (a direction; "action":"move" is accepted and ignored).
 * Each tick a player moves speed × dt along its last direction, clamped to the arena.
 * snapshot_for(sid) is what that player sees: itself (with "ack", the last client_seq applied,
 * for client-side prediction) and the players within its area of interest (a square grid:
 * cells of aoi_cell units, aoi_radius cells around it). Config (all optional):
 * {"width":1000,"height":1000,"speed":200,"aoi_cell":100,"aoi_radius":2,"max_players":4096}.
 */
#include "pylon/sim.h"

#include <stdbool.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct player {
    char sid[64];
    double x, y, dx, dy;
    uint64_t ack;
} player;

typedef struct arena {
    double width, height, speed;
    pylon_aoi_grid aoi;
    player *players;
    size_t n, cap, max_players;
    /* entries of players[i] at text + off[i], len[i] bytes; rebuilt when dirty */
    bool dirty;
    char *text;
    size_t text_cap;
    size_t *off, *len, ents_cap;
} arena;

static bool rebuild(arena *a)
{
    if (a->ents_cap < a->n) {
        size_t *no = realloc(a->off, a->n * sizeof *no),
               *nl = no ? realloc(a->len, a->n * sizeof *nl) : NULL;
        if (no) a->off = no;
        if (!nl) return false;
        a->len = nl;
        a->ents_cap = a->n;
    }
    size_t used = 0;
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        for (;;) {
            int k = snprintf(a->text ? a->text + used : NULL, a->text ? a->text_cap - used : 0,
                             "{\"sid\":\"%s\",\"x\":%.2f,\"y\":%.2f}", p->sid, p->x, p->y);
            if (k < 0) return false;
            if (a->text && used + (size_t)k < a->text_cap) {
                a->off[i] = used;
                a->len[i] = (size_t)k;
                used += (size_t)k;
                break;
            }
            size_t cap = a->text_cap ? a->text_cap * 2 : 4096;
            while (cap < used + (size_t)k + 1)
                cap *= 2;
            char *nt = realloc(a->text, cap);
            if (!nt) return false;
            a->text = nt;
            a->text_cap = cap;
        }
    }
    a->dirty = false;
    return true;
}

static double num(json_t *cfg, const char *key, double def)
{
    json_t *v = json_object_get(cfg, key);
    return json_is_number(v) ? json_number_value(v) : def;
}

static void *arena_init(const pylon_sim_ctx *ctx, char *err, size_t errlen)
{
    json_t *cfg = json_loads(ctx->config_json ? ctx->config_json : "{}", 0, NULL);
    if (cfg && !json_is_object(cfg)) {
        json_decref(cfg);
        cfg = NULL;
    }
    arena *a = calloc(1, sizeof *a);
    if (!a) {
        json_decref(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->width = num(cfg, "width", 1000);
    a->height = num(cfg, "height", 1000);
    a->speed = num(cfg, "speed", 200);
    a->aoi.cell_size = num(cfg, "aoi_cell", 100);
    a->aoi.radius_cells = (int)num(cfg, "aoi_radius", 2);
    a->max_players = (size_t)num(cfg, "max_players", 4096);
    json_decref(cfg);
    if (a->width <= 0 || a->height <= 0 || a->speed < 0 || a->aoi.cell_size <= 0 ||
        a->aoi.radius_cells < 0) {
        snprintf(err, errlen,
                 "arena config: width, height and aoi_cell must be > 0, speed and "
                 "aoi_radius >= 0");
        free(a);
        return NULL;
    }
    return a;
}

static player *find(arena *a, const char *sid, bool create)
{
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->players[i].sid, sid) == 0) return &a->players[i];
    if (!create || a->n >= a->max_players) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        player *np = realloc(a->players, cap * sizeof *np);
        if (!np) return NULL;
        a->players = np;
        a->cap = cap;
    }
    player *p = &a->players[a->n++];
    a->dirty = true;
    memset(p, 0, sizeof *p);
    snprintf(p->sid, sizeof p->sid, "%s", sid);
    /* Spawn spread over the arena, deterministically from the sid (replays reproduce it). */
    unsigned h = 2166136261u;
    for (const char *c = sid; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    p->x = (double)(h % 1000) / 1000.0 * a->width;
    p->y = (double)((h / 1000) % 1000) / 1000.0 * a->height;
    return p;
}

static bool arena_apply_input(void *state, const char *sid, const char *input, size_t len,
                              uint64_t client_seq)
{
    arena *a = state;
    json_t *j = json_loadb(input, len, 0, NULL);
    json_t *dx = json_object_get(j, "dx"), *dy = json_object_get(j, "dy");
    bool ok = json_is_object(j) && (!dx || json_is_number(dx)) && (!dy || json_is_number(dy));
    player *p = ok ? find(a, sid, true) : NULL;
    if (p) {
        double x = dx ? json_number_value(dx) : 0, y = dy ? json_number_value(dy) : 0;
        p->dx = x < -1 ? -1 : x > 1 ? 1 : x;
        p->dy = y < -1 ? -1 : y > 1 ? 1 : y;
        if (client_seq > p->ack) p->ack = client_seq;
    }
    json_decref(j);
    return p != NULL;
}

static void arena_tick(void *state, double dt)
{
    arena *a = state;
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        p->x = fmin(a->width, fmax(0, p->x + p->dx * a->speed * dt));
        p->y = fmin(a->height, fmax(0, p->y + p->dy * a->speed * dt));
    }
    a->dirty = true;
}

static void arena_snapshot(void *state, const char *sid, pylon_sim_out *out)
{
    arena *a = state;
    player *me = find(a, sid, false);
    if (me)
        pylon_sim_out_printf(out, "{\"you\":{\"sid\":\"%s\",\"x\":%.2f,\"y\":%.2f,\"ack\":%llu},",
                             me->sid, me->x, me->y, (unsigned long long)me->ack);
    else
        pylon_sim_out_put(out, "{\"you\":null,", 12);
    pylon_sim_out_put(out, "\"players\":[", 11);
    bool first = true;
    bool cached = !a->dirty || rebuild(a);
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        /* Spectators (no player) see everyone; players see their neighbourhood. */
        if (me && !pylon_aoi_grid_near(&a->aoi, me->x, me->y, p->x, p->y)) continue;
        if (!first) pylon_sim_out_put(out, ",", 1);
        if (cached)
            pylon_sim_out_put(out, a->text + a->off[i], a->len[i]);
        else
            pylon_sim_out_printf(out, "{\"sid\":\"%s\",\"x\":%.2f,\"y\":%.2f}", p->sid, p->x, p->y);
        first = false;
    }
    pylon_sim_out_put(out, "]}", 2);
}

static bool arena_finished(void *state)
{
    (void)state;
    return false;
}

static bool arena_save(void *state, pylon_sim_out *out)
{
    arena *a = state;
    pylon_sim_out_printf(out, "{\"width\":%.17g,\"height\":%.17g,\"speed\":%.17g,\"players\":[",
                         a->width, a->height, a->speed);
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        pylon_sim_out_printf(out, "%s[\"%s\",%.17g,%.17g,%.17g,%.17g,%llu]", i ? "," : "", p->sid,
                             p->x, p->y, p->dx, p->dy, (unsigned long long)p->ack);
    }
    return pylon_sim_out_put(out, "]}", 2);
}

static void arena_destroy(void *state)
{
    arena *a = state;
    free(a->players);
    free(a->text);
    free(a->off);
    free(a->len);
    free(a);
}

static const pylon_sim_vtable ARENA = {.abi_version = PYLON_SIM_ABI_VERSION,
                                       .kind = "arena_cached",
                                       .init = arena_init,
                                       .apply_input = arena_apply_input,
                                       .tick = arena_tick,
                                       .snapshot_for = arena_snapshot,
                                       .is_finished = arena_finished,
                                       .save = arena_save,
                                       .destroy = arena_destroy};

const pylon_sim_vtable *pylon_sim_plugin(void)
{
    return &ARENA;
}
