/*
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
#include "engine/fmt.h"
#include "engine/hash.h"
#include "shards/json_scan.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct player {
    char sid[64];
    uint32_t hash; /* pylon_hash_str(sid): find() compares it before the string */
    /* sid as the contents of a JSON string (quotes, backslashes and control characters
     * escaped), made once when the player is created; malloc'd, or NULL when the sid needs no
     * escaping (nearly always). Sids are user ids or an admin's subscriber_id: any text. */
    char *esc;
    double x, y, dx, dy;
    uint64_t ack;
} player;

typedef struct arena {
    double width, height, speed;
    pylon_aoi_grid aoi;
    player *players;
    size_t n, cap, max_players;
    /* Each player's `{"sid":…,"x":…,"y":…}` as of the last change, formatted once and copied
     * into every snapshot that lists it: snapshot_for runs once per subscriber, so formatting
     * there made a tick O(players²) float conversions. Rebuilt lazily after a change. */
    char *text;
    size_t text_cap, *off, *len, entries_cap;
    bool dirty;
} arena;

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

/* The sid as snapshots and checkpoints write it between quotes. */
static const char *sid_json(const player *p)
{
    return p->esc ? p->esc : p->sid;
}

/* *out = sid escaped for a JSON string (malloc'd), or NULL when it needs no escaping; false
 * when out of memory. */
static bool escape_sid(const char *sid, char **out)
{
    pylon_sim_out o = {0};
    *out = NULL;
    if (!pylon_sim_out_json_escaped(&o, sid)) {
        free(o.data);
        return false;
    }
    if (o.len == strlen(sid)) /* nothing to escape */
        free(o.data);
    else
        *out = o.data;
    return true;
}

/* Every input and every subscriber's frame looks its player up: the hash first, so the
 * string compare runs once instead of for every player before it. */
static player *find(arena *a, const char *sid, bool create)
{
    uint32_t h = pylon_hash_str(sid); /* also what spreads the spawn points (replays) */
    for (size_t i = 0; i < a->n; i++)
        if (a->players[i].hash == h && strcmp(a->players[i].sid, sid) == 0) return &a->players[i];
    if (!create || a->n >= a->max_players) return NULL;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        player *np = realloc(a->players, cap * sizeof *np);
        if (!np) return NULL;
        a->players = np;
        a->cap = cap;
    }
    player *p = &a->players[a->n];
    memset(p, 0, sizeof *p);
    pylon_fmt_copy(p->sid, sizeof p->sid, sid);
    if (!escape_sid(p->sid, &p->esc)) return NULL; /* of the stored (maybe truncated) sid */
    a->n++;
    a->dirty = true;
    p->hash = h;
    /* Spawn spread over the arena, deterministically from the sid (replays reproduce it). */
    p->x = (double)(h % 1000) / 1000.0 * a->width;
    p->y = (double)((h / 1000) % 1000) / 1000.0 * a->height;
    return p;
}

static bool arena_apply_input(void *state, const char *sid, const char *input, size_t len,
                              uint64_t client_seq)
{
    arena *a = state;
    static const char *const KEYS[2] = {"dx", "dy"};
    double d[2] = {0, 0};
    bool has[2], ok = pylon_scan_number_object(input, len, KEYS, 2, d, has);
    if (!ok) { /* not plain {"dx":n,"dy":n}: the general parse decides */
        json_t *j = json_loadb(input, len, 0, NULL);
        json_t *dx = json_object_get(j, "dx"), *dy = json_object_get(j, "dy");
        ok = json_is_object(j) && (!dx || json_is_number(dx)) && (!dy || json_is_number(dy));
        d[0] = dx ? json_number_value(dx) : 0;
        d[1] = dy ? json_number_value(dy) : 0;
        json_decref(j);
    }
    player *p = ok ? find(a, sid, true) : NULL;
    if (p) {
        p->dx = d[0] < -1 ? -1 : d[0] > 1 ? 1 : d[0];
        p->dy = d[1] < -1 ? -1 : d[1] > 1 ? 1 : d[1];
        if (client_seq > p->ack) p->ack = client_seq;
    }
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

/* Writes v as printf("%.2f") does, without printf: v × 100 rounded to an integer, then the
 * digits. The product is off the exact value by at most |v × 100| × 2⁻⁵³ (< 1e-7 below 1e7),
 * so its rounding agrees with printf's (on the exact binary value) except next to a tie;
 * ties, huge and non-finite values go to snprintf, so the text is always printf's. */
#define FIXED2_MAX 330 /* "%.2f" of -DBL_MAX is 313 bytes */

static size_t fixed2(double v, char *out)
{
    double a = fabs(v) * 100.0;
    double frac = a - floor(a);
    if (!(a < 1e9) || fabs(frac - 0.5) < 1e-6) return (size_t)snprintf(out, FIXED2_MAX, "%.2f", v);
    uint64_t n = (uint64_t)nearbyint(a);
    char digits[24], *p = out;
    int k = 0;
    if (signbit(v)) *p++ = '-'; /* "-0.00" as printf writes it */
    uint64_t ip = n / 100;
    do {
        digits[k++] = (char)('0' + ip % 10);
        ip /= 10;
    } while (ip);
    while (k)
        *p++ = digits[--k];
    *p++ = '.';
    *p++ = (char)('0' + n / 10 % 10);
    *p++ = (char)('0' + n % 10);
    return (size_t)(p - out);
}

/* Formats every player's entry into a->text; false (out of memory) leaves the snapshot to
 * format entries itself. */
static bool rebuild(arena *a)
{
    if (a->n > a->entries_cap) {
        size_t *off = realloc(a->off, a->n * sizeof *off);
        if (off) a->off = off;
        size_t *len = off ? realloc(a->len, a->n * sizeof *len) : NULL;
        if (!len) return false;
        a->len = len;
        a->entries_cap = a->n;
    }
    size_t at = 0;
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        const char *sid = sid_json(p);
        size_t sl = strlen(sid), need = at + sl + 2 * FIXED2_MAX + 32;
        if (need > a->text_cap) {
            size_t cap = a->text_cap ? a->text_cap : 1024;
            while (cap < need)
                cap *= 2;
            char *t = realloc(a->text, cap);
            if (!t) return false;
            a->text = t;
            a->text_cap = cap;
        }
        char *t = a->text + at;
        a->off[i] = at;
        memcpy(t, "{\"sid\":\"", 8);
        memcpy(t + 8, sid, sl);
        t += 8 + sl;
        memcpy(t, "\",\"x\":", 6);
        t += 6;
        t += fixed2(p->x, t);
        memcpy(t, ",\"y\":", 5);
        t += 5;
        t += fixed2(p->y, t);
        *t++ = '}';
        a->len[i] = (size_t)(t - (a->text + at));
        at += a->len[i];
    }
    a->dirty = false;
    return true;
}

static void arena_snapshot(void *state, const char *sid, pylon_sim_out *out)
{
    arena *a = state;
    bool cached = !a->dirty || rebuild(a);
    player *me = find(a, sid, false);
    if (me && cached) { /* its entry without the "}", then the ack */
        size_t i = (size_t)(me - a->players);
        char ack[8 + PYLON_FMT_I64_MAX + 2] = ",\"ack\":"; /* every frame: no printf */
        size_t al = 7 + pylon_fmt_u64(ack + 7, me->ack);
        ack[al++] = '}';
        ack[al++] = ',';
        pylon_sim_out_put(out, "{\"you\":", 7);
        pylon_sim_out_put(out, a->text + a->off[i], a->len[i] - 1);
        pylon_sim_out_put(out, ack, al);
    } else if (me) {
        pylon_sim_out_printf(out, "{\"you\":{\"sid\":\"%s\",\"x\":%.2f,\"y\":%.2f,\"ack\":%llu},",
                             sid_json(me), me->x, me->y, (unsigned long long)me->ack);
    } else {
        pylon_sim_out_put(out, "{\"you\":null,", 12);
    }
    pylon_sim_out_put(out, "\"players\":[", 11);
    bool first = true;
    for (size_t i = 0; i < a->n; i++) {
        player *p = &a->players[i];
        /* Spectators (no player) see everyone; players see their neighbourhood. */
        if (me && !pylon_aoi_grid_near(&a->aoi, me->x, me->y, p->x, p->y)) continue;
        if (!first) pylon_sim_out_put(out, ",", 1);
        if (cached)
            pylon_sim_out_put(out, a->text + a->off[i], a->len[i]);
        else
            pylon_sim_out_printf(out, "{\"sid\":\"%s\",\"x\":%.2f,\"y\":%.2f}", sid_json(p), p->x,
                                 p->y);
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
        pylon_sim_out_printf(out, "%s[\"%s\",%.17g,%.17g,%.17g,%.17g,%llu]", i ? "," : "",
                             sid_json(p), p->x, p->y, p->dx, p->dy, (unsigned long long)p->ack);
    }
    return pylon_sim_out_put(out, "]}", 2);
}

static void arena_destroy(void *state);

/* The inverse of arena_save; the area of interest and max_players come from the config. */
static void *arena_restore(const pylon_sim_ctx *ctx, const char *bytes, size_t len)
{
    char err[200];
    arena *a = arena_init(ctx, err, sizeof err);
    json_t *j = a ? json_loadb(bytes, len, 0, NULL) : NULL;
    json_t *players = json_object_get(j, "players");
    bool ok = json_is_number(json_object_get(j, "width")) &&
              json_is_number(json_object_get(j, "height")) &&
              json_is_number(json_object_get(j, "speed")) && json_is_array(players);
    if (ok) {
        a->width = json_number_value(json_object_get(j, "width"));
        a->height = json_number_value(json_object_get(j, "height"));
        a->speed = json_number_value(json_object_get(j, "speed"));
    }
    size_t i;
    json_t *pj;
    json_array_foreach(players, i, pj)
    {
        json_t *ack = json_array_get(pj, 5);
        const char *sid = json_string_value(json_array_get(pj, 0));
        player *p = ok && sid && json_array_size(pj) == 6 && json_is_integer(ack)
                        ? find(a, sid, true)
                        : NULL;
        if (!p) {
            ok = false;
            break;
        }
        double *at[4] = {&p->x, &p->y, &p->dx, &p->dy};
        for (int k = 0; k < 4; k++) {
            json_t *v = json_array_get(pj, (size_t)k + 1);
            if (!json_is_number(v)) ok = false;
            *at[k] = json_number_value(v);
        }
        p->ack = (uint64_t)json_integer_value(ack);
    }
    json_decref(j);
    if (!ok && a) {
        arena_destroy(a);
        a = NULL;
    }
    return a;
}

static void arena_destroy(void *state)
{
    arena *a = state;
    for (size_t i = 0; i < a->n; i++)
        free(a->players[i].esc);
    free(a->text);
    free(a->off);
    free(a->len);
    free(a->players);
    free(a);
}

static const pylon_sim_vtable ARENA = {.abi_version = PYLON_SIM_ABI_VERSION,
                                       .kind = "arena",
                                       .init = arena_init,
                                       .apply_input = arena_apply_input,
                                       .tick = arena_tick,
                                       .snapshot_for = arena_snapshot,
                                       .is_finished = arena_finished,
                                       .save = arena_save,
                                       .restore = arena_restore,
                                       .destroy = arena_destroy};

const pylon_sim_vtable *pylon_sim_arena(void)
{
    return &ARENA;
}
