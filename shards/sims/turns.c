/*
 * turns.c — the built-in turn-based simulation ("turns"), meant for tick_rate_hz 0: the shard
 * ticks only when an input arrives.
 *
 * Players join with {"join": true} (up to "max_players", default 2). Then, in join order, the
 * player whose turn it is adds 1 to 3 to a shared total with {"add": n}; inputs out of turn or
 * out of range are refused (and counted as dropped). Whoever brings the total to "goal"
 * (default 21) wins and the shard finishes. Everyone sees the same snapshot:
 * {"players":[…],"turn":"<sid>"|null,"total":n,"goal":n,"winner":"<sid>"|null,"moves":n}.
 */
#include "pylon/sim.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PLAYERS 16

typedef struct turns {
    char players[MAX_PLAYERS][64];
    int nplayers, max_players, turn, total, goal, moves;
    int winner; /* -1: none */
} turns;

static void *turns_init(const pylon_sim_ctx *ctx, char *err, size_t errlen)
{
    json_t *cfg = json_loads(ctx->config_json ? ctx->config_json : "{}", 0, NULL);
    turns *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(cfg);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_t *mp = json_object_get(cfg, "max_players"), *goal = json_object_get(cfg, "goal");
    t->max_players = json_is_integer(mp) ? (int)json_integer_value(mp) : 2;
    t->goal = json_is_integer(goal) ? (int)json_integer_value(goal) : 21;
    t->winner = -1;
    json_decref(cfg);
    if (t->max_players < 2 || t->max_players > MAX_PLAYERS || t->goal < 1) {
        snprintf(err, errlen, "turns config: max_players 2..%d, goal >= 1", MAX_PLAYERS);
        free(t);
        return NULL;
    }
    return t;
}

static int player_index(const turns *t, const char *sid)
{
    for (int i = 0; i < t->nplayers; i++)
        if (strcmp(t->players[i], sid) == 0) return i;
    return -1;
}

static bool turns_apply(void *state, const char *sid, const char *input, size_t len,
                        uint64_t client_seq)
{
    (void)client_seq;
    turns *t = state;
    json_t *j = json_loadb(input, len, 0, NULL);
    bool ok = false;
    if (t->winner < 0 && json_is_true(json_object_get(j, "join"))) {
        if (player_index(t, sid) < 0 && t->nplayers < t->max_players) {
            snprintf(t->players[t->nplayers++], sizeof t->players[0], "%s", sid);
            ok = true;
        }
    } else if (t->winner < 0 && json_is_integer(json_object_get(j, "add"))) {
        json_int_t n = json_integer_value(json_object_get(j, "add"));
        int who = player_index(t, sid);
        if (t->nplayers >= 2 && who == t->turn && n >= 1 && n <= 3 && t->total + n <= t->goal) {
            t->total += (int)n;
            t->moves++;
            if (t->total == t->goal)
                t->winner = who;
            else
                t->turn = (t->turn + 1) % t->nplayers;
            ok = true;
        }
    }
    json_decref(j);
    return ok;
}

static void turns_tick(void *state, double dt)
{
    (void)state;
    (void)dt; /* nothing moves between turns */
}

/* `before` then the sid as a JSON string (sids come from users: escaped). */
static void put_name(pylon_sim_out *out, const char *before, const char *sid)
{
    pylon_sim_out_printf(out, "%s\"", before);
    pylon_sim_out_json_escaped(out, sid);
    pylon_sim_out_put(out, "\"", 1);
}

static void turns_snapshot(void *state, const char *sid, pylon_sim_out *out)
{
    (void)sid;
    turns *t = state;
    pylon_sim_out_put(out, "{\"players\":[", 12);
    for (int i = 0; i < t->nplayers; i++)
        put_name(out, i ? "," : "", t->players[i]);
    pylon_sim_out_put(out, "],\"turn\":", 9);
    if (t->winner < 0 && t->nplayers >= 2)
        put_name(out, "", t->players[t->turn]);
    else
        pylon_sim_out_put(out, "null", 4);
    pylon_sim_out_printf(out, ",\"total\":%d,\"goal\":%d,\"winner\":", t->total, t->goal);
    if (t->winner >= 0)
        put_name(out, "", t->players[t->winner]);
    else
        pylon_sim_out_put(out, "null", 4);
    pylon_sim_out_printf(out, ",\"moves\":%d}", t->moves);
}

static bool turns_finished(void *state)
{
    return ((turns *)state)->winner >= 0;
}

/* {"players":[…],"max_players":n,"turn":i,"total":n,"goal":n,"moves":n,"winner":i|-1} */
static bool turns_save(void *state, pylon_sim_out *out)
{
    turns *t = state;
    json_t *players = json_array();
    for (int i = 0; i < t->nplayers; i++)
        json_array_append_new(players, json_string(t->players[i]));
    json_t *j = json_pack("{s:o,s:i,s:i,s:i,s:i,s:i,s:i}", "players", players, "max_players",
                          t->max_players, "turn", t->turn, "total", t->total, "goal", t->goal,
                          "moves", t->moves, "winner", t->winner);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    bool ok = text && pylon_sim_out_put(out, text, strlen(text));
    free(text);
    json_decref(j);
    return ok;
}

static void *turns_restore(const pylon_sim_ctx *ctx, const char *bytes, size_t len)
{
    (void)ctx; /* everything is in the saved state */
    json_t *j = json_loadb(bytes, len, 0, NULL), *players = json_object_get(j, "players");
    turns *t = calloc(1, sizeof *t);
    int *field[] = {&t->max_players, &t->turn, &t->total, &t->goal, &t->moves, &t->winner};
    const char *name[] = {"max_players", "turn", "total", "goal", "moves", "winner"};
    bool ok = t && json_is_array(players) && json_array_size(players) <= MAX_PLAYERS;
    for (size_t i = 0; ok && i < sizeof name / sizeof name[0]; i++) {
        json_t *v = json_object_get(j, name[i]);
        ok = json_is_integer(v);
        if (ok) *field[i] = (int)json_integer_value(v);
    }
    for (size_t i = 0; ok && i < json_array_size(players); i++) {
        const char *sid = json_string_value(json_array_get(players, i));
        ok = sid != NULL;
        if (ok) snprintf(t->players[t->nplayers++], sizeof t->players[0], "%s", sid);
    }
    ok = ok && t->max_players >= 2 && t->max_players <= MAX_PLAYERS && t->goal >= 1 &&
         t->nplayers <= t->max_players && t->turn >= 0 &&
         (t->nplayers == 0 || t->turn < t->nplayers) && t->winner >= -1 &&
         t->winner < t->nplayers && t->total >= 0 && t->total <= t->goal;
    json_decref(j);
    if (!ok) {
        free(t);
        return NULL;
    }
    return t;
}

static void turns_destroy(void *state)
{
    free(state);
}

static const pylon_sim_vtable TURNS = {.abi_version = PYLON_SIM_ABI_VERSION,
                                       .kind = "turns",
                                       .init = turns_init,
                                       .apply_input = turns_apply,
                                       .tick = turns_tick,
                                       .snapshot_for = turns_snapshot,
                                       .is_finished = turns_finished,
                                       .save = turns_save,
                                       .restore = turns_restore,
                                       .destroy = turns_destroy};

const pylon_sim_vtable *pylon_sim_turns(void)
{
    return &TURNS;
}
