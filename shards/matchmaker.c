/* matchmaker.c — see matchmaker.h. */
#include "shards/matchmaker.h"

#include "actors/json_load.h"
#include "actors/reply.h"
#include "engine/clock.h"
#include "engine/timer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MSG_TICK = 1, MSG_ENQUEUE, MSG_STATUS, MSG_DEQUEUE };

typedef struct entry {
    char user[160], mode[64];
    int64_t since;
} entry;

typedef struct match {
    char user[160], shard[96];
    int64_t at;
} match;

struct pylon_matchmaker {
    pylon_actor *actor;
    pylon_timer *timer;
    pylon_shards *shards;
    pylon_auth *auth;
    pylon_matchmaker_options o;
    entry *queue; /* actor only */
    size_t n, cap;
    match *matched;
    size_t nm, mcap;
    uint64_t counter;
};

typedef struct mm_msg {
    pylon_msg msg;
    pylon_http_exchange *ex;
    char user[160], mode[64];
} mm_msg;

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static void drop_matched(pylon_matchmaker *m, const char *user)
{
    for (size_t i = 0; i < m->nm; i++)
        if (strcmp(m->matched[i].user, user) == 0) {
            m->matched[i] = m->matched[--m->nm];
            return;
        }
}

static bool dequeue(pylon_matchmaker *m, const char *user)
{
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->queue[i].user, user) == 0) {
            memmove(&m->queue[i], &m->queue[i + 1], (m->n - i - 1) * sizeof *m->queue);
            m->n--;
            return true;
        }
    return false;
}

static json_t *status_of(pylon_matchmaker *m, const char *user)
{
    for (size_t i = 0; i < m->nm; i++)
        if (strcmp(m->matched[i].user, user) == 0)
            return json_pack("{s:s,s:s}", "status", "matched", "shard_id", m->matched[i].shard);
    size_t pos = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->queue[i].user, user) == 0)
            return json_pack("{s:s,s:I,s:I,s:s}", "status", "queued", "position", (json_int_t)pos,
                             "waiting_secs", (json_int_t)(now_s() - m->queue[i].since), "mode",
                             m->queue[i].mode);
        pos++;
    }
    return json_pack("{s:s}", "status", "idle");
}

/* Drops stale entries, then groups the oldest `size` players of each mode into a shard. */
static void run_matching(pylon_matchmaker *m)
{
    int64_t now = now_s();
    for (size_t i = m->n; i-- > 0;)
        if (now - m->queue[i].since > (int64_t)m->o.max_wait_s) dequeue(m, m->queue[i].user);
    for (size_t i = m->nm; i-- > 0;) /* matched statuses are kept for a while, then forgotten */
        if (now - m->matched[i].at > 300) m->matched[i] = m->matched[--m->nm];
    for (size_t i = 0; i < m->n; i++) {
        size_t group[64], k = 0;
        for (size_t j = i; j < m->n && k < m->o.size; j++)
            if (strcmp(m->queue[j].mode, m->queue[i].mode) == 0) group[k++] = j;
        if (k < m->o.size) continue;
        char id[96], err[200];
        snprintf(id, sizeof id, "match_%llx_%llu", (unsigned long long)now,
                 (unsigned long long)++m->counter);
        pylon_shard_config cfg = PYLON_SHARD_CONFIG_DEFAULT;
        if (pylon_shards_create(m->shards, id, m->o.kind, NULL, &cfg, err, sizeof err) != 0)
            return;                    /* try again next second */
        for (size_t g = k; g-- > 0;) { /* from the back: indices stay valid */
            if (m->nm == m->mcap) {
                size_t cap = m->mcap ? m->mcap * 2 : 16;
                match *nm = realloc(m->matched, cap * sizeof *nm);
                if (!nm) return;
                m->matched = nm;
                m->mcap = cap;
            }
            match *mt = &m->matched[m->nm++];
            snprintf(mt->user, sizeof mt->user, "%s", m->queue[group[g]].user);
            snprintf(mt->shard, sizeof mt->shard, "%s", id);
            mt->at = now;
            memmove(&m->queue[group[g]], &m->queue[group[g] + 1],
                    (m->n - group[g] - 1) * sizeof *m->queue);
            m->n--;
        }
        i = (size_t)-1; /* the queue changed: start over */
    }
}

static void behaviour(pylon_actor *self, pylon_msg *msg)
{
    pylon_matchmaker *m = pylon_actor_state(self);
    if (msg->type == MSG_TICK) { /* borrowed */
        run_matching(m);
        return;
    }
    mm_msg *r = (mm_msg *)msg;
    if (msg->type == MSG_ENQUEUE) {
        dequeue(m, r->user);
        drop_matched(m, r->user);
        if (m->n == m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 64;
            entry *nq = realloc(m->queue, cap * sizeof *nq);
            if (!nq) {
                pylon_http_respond_error(r->ex, 503, "OVERLOADED", "Out of memory", NULL);
                pylon_msg_free(msg);
                return;
            }
            m->queue = nq;
            m->cap = cap;
        }
        entry *e = &m->queue[m->n++];
        snprintf(e->user, sizeof e->user, "%s", r->user);
        snprintf(e->mode, sizeof e->mode, "%s", r->mode);
        e->since = now_s();
        run_matching(m); /* a full group matches at once */
        pylon_reply_json(r->ex, 200, status_of(m, r->user), NULL);
    } else if (msg->type == MSG_STATUS) {
        pylon_reply_json(r->ex, 200, status_of(m, r->user), NULL);
    } else {
        bool was = dequeue(m, r->user);
        drop_matched(m, r->user);
        pylon_reply_json(r->ex, 200, json_pack("{s:b}", "dequeued", was), NULL);
    }
    pylon_msg_free(msg);
}

static void on_stop(pylon_actor *self)
{
    pylon_matchmaker *m = pylon_actor_state(self);
    if (m->timer) pylon_timer_cancel(m->timer);
    free(m->queue);
    free(m->matched);
    free(m);
}

static const pylon_actor_def MM_DEF = {
    .name = "matchmaker", .behaviour = behaviour, .on_stop = on_stop};

pylon_matchmaker *pylon_matchmaker_start(pylon_runtime *rt, pylon_shards *shards, pylon_auth *auth,
                                         const pylon_matchmaker_options *o)
{
    pylon_matchmaker *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->shards = shards;
    m->auth = auth;
    m->o = *o;
    if (m->o.size < 1 || m->o.size > 64) m->o.size = 2;
    if (!m->o.kind) m->o.kind = "arena";
    if (!m->o.max_wait_s) m->o.max_wait_s = 60;
    m->actor = pylon_actor_spawn(rt, &MM_DEF, m);
    m->timer = pylon_timer_start(m->actor, MSG_TICK, pylon_clock_now_ns() + PYLON_NS_PER_SEC,
                                 PYLON_NS_PER_SEC, 0, 0);
    return m;
}

void pylon_matchmaker_stop(pylon_matchmaker *m)
{
    if (!m) return;
    pylon_actor *a = m->actor; /* on_stop frees m */
    pylon_actor_stop(a);
    pylon_actor_release(a);
}

static void forward(pylon_http_exchange *ex, pylon_matchmaker *m, int type)
{
    const pylon_http_request *req = pylon_http_request_of(ex);
    pylon_auth_result who;
    pylon_auth_resolve(m->auth, req, &who);
    if (!who.id.user_id) {
        pylon_http_respond_error(ex, 401, "AUTH_REQUIRED", "The matchmaker needs a signed-in user",
                                 "POST /api/auth/guest gives a token");
        return;
    }
    /* Names are kept inline and compared whole: a longer one is refused, never cut (two long
     * modes sharing their first 63 bytes would match each other; a cut in a UTF-8 character
     * made every later answer to that player fail). */
    if (strlen(who.id.user_id) >= sizeof((mm_msg *)0)->user) {
        pylon_http_respond_error(ex, 400, "INVALID_USER",
                                 "The user id is too long for the matchmaker",
                                 "user ids of up to 159 bytes can be matched");
        return;
    }
    const char *mode = "default";
    json_t *b = NULL;
    if (type == MSG_ENQUEUE && req->body_len) {
        b = pylon_json_loadb((const char *)req->body, req->body_len, 0, NULL);
        json_t *jm = json_object_get(b, "mode");
        const char *why = !json_is_object(b)          ? "the body must be a JSON object"
                          : jm && !json_is_string(jm) ? "mode must be a string"
                          : jm && json_string_length(jm) >= sizeof((mm_msg *)0)->mode
                              ? "mode is longer than 63 bytes"
                              : NULL;
        if (why) {
            const char *code = json_is_object(b) ? "INVALID_MODE" : "INVALID_JSON";
            json_decref(b);
            pylon_http_respond_error(ex, 400, code, why, "send {\"mode\": \"<name>\"} or no body");
            return;
        }
        if (jm && json_string_length(jm)) mode = json_string_value(jm);
    }
    mm_msg *r = calloc(1, sizeof *r);
    if (!r) {
        json_decref(b);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    pylon_msg_init(&r->msg, (uint32_t)type, NULL);
    r->ex = ex;
    snprintf(r->user, sizeof r->user, "%s", who.id.user_id);
    snprintf(r->mode, sizeof r->mode, "%s", mode);
    json_decref(b);
    pylon_actor_send(m->actor, &r->msg);
}

static void enqueue_h(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, MSG_ENQUEUE);
}
static void status_h(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, MSG_STATUS);
}
static void dequeue_h(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, MSG_DEQUEUE);
}

bool pylon_matchmaker_routes(pylon_router *r, pylon_matchmaker *m)
{
    return pylon_router_add_inline(r, PYLON_M_POST, "/api/matchmaker/enqueue", enqueue_h, m) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/matchmaker/status", status_h, m) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/matchmaker/dequeue", dequeue_h, m);
}
