/* hub.c — see hub.h. */
#include "sync/hub_internal.h"

#include "actors/json_load.h"
#include "engine/log.h"

#include "engine/clock.h"
#include "engine/hash.h"

#include <stdatomic.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pylon_hub_send_(pylon_hub *h, int type, session *s, event *ev, size_t n, pylon_buf *frame)
{
    hub_msg *m = calloc(1, sizeof *m);
    if (!m) return;
    pylon_msg_init(&m->msg, (uint32_t)type, NULL);
    m->s = s;
    m->events = ev;
    m->n = n;
    m->ws_frame = frame;
    pylon_actor_send(h->actor, &m->msg);
}

/* ---- encoding ---------------------------------------------------------------------------- */

json_t *pylon_change_event_json(const char *entity, const char *row_id, const char *kind,
                                const json_t *fields, const json_t *row, int64_t seq,
                                const char *timestamp)
{
    json_t *j = json_pack("{s:I,s:s,s:s,s:s}", "seq", (json_int_t)seq, "entity", entity, "row_id",
                          row_id, "kind", kind);
    if (!j) return NULL;
    if (strcmp(kind, "delete") != 0 && json_is_object(row)) {
        json_t *data;
        if (strcmp(kind, "update") == 0 && json_is_array(fields)) {
            data = json_object(); /* only the patched fields (protocol.md §1.1) */
            size_t i;
            json_t *f;
            json_array_foreach(fields, i, f)
            {
                json_t *v = json_object_get(row, json_string_value(f));
                if (v) json_object_set(data, json_string_value(f), v);
            }
        } else {
            data = json_deep_copy(row);
            json_object_del(data, "id"); /* clients add id = row_id */
        }
        json_object_set_new(j, "data", data);
    }
    json_object_set_new(j, "timestamp", json_string(timestamp));
    return j;
}

void pylon_hub_on_changes(void *ctx, const pylon_change *changes, size_t n)
{
    pylon_hub *h = ctx;
    /* Nobody listening: nothing to encode (a session that registers now pulls first). */
    if (atomic_load_explicit(&h->live_sessions, memory_order_relaxed) == 0) return;
    event *ev = calloc(n, sizeof *ev);
    if (!ev) return; /* clients catch up by pull */
    for (size_t i = 0; i < n; i++) {
        const pylon_change *c = &changes[i];
        /* Inserts come as text (no tree is built when nobody listens): parsed here. */
        json_t *row = c->data        ? json_incref(c->data)
                      : c->data_text ? pylon_json_loadb(c->data_text, c->data_len, 0, NULL)
                                     : NULL;
        json_t *j = pylon_change_event_json(c->entity, c->row_id, pylon_change_kind_name(c->kind),
                                            c->fields, row, c->seq, "");
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        ev[i].e = pylon_manifest_entity(h->m, c->entity);
        ev[i].row = row;
        if (text) {
            ev[i].ws = pylon_ws_frame(1, text, strlen(text));
            ev[i].sse = pylon_sse_event(text, strlen(text));
            free(text);
        }
    }
    pylon_hub_send_(h, MSG_CHANGES, NULL, ev, n, NULL);
}

/* ---- the actor --------------------------------------------------------------------------- */

static bool may_see(pylon_hub *h, const session *s, const event *ev)
{
    if (s->who.id.is_admin) return true;
    if (!ev->e) return false;
    pylon_policy_env env = {.auth = &s->who.id, .data = ev->row, .existing = ev->row};
    return pylon_policy_check(h->policies, ev->e->name, PYLON_OP_READ, &env, NULL);
}

/* Changes of entities with no read rule go to every session alike: no policy check per
 * session and event, and each frame's references are taken once for all its sessions (a
 * retain per send pulled the counter's cache line back from the I/O loop every time; with
 * 5 000 subscribers the hub took 42 % of the server's CPU, the loop writing the frames 58 %).
 * False, having sent nothing, when some event needs the per-session check. */
static bool send_public(pylon_hub *h, const event *evs, size_t n)
{
    for (size_t e = 0; e < n; e++)
        if (!evs[e].ws || !evs[e].sse || !evs[e].e ||
            pylon_policy_entity_has_rules(h->policies, evs[e].e->name, PYLON_OP_READ))
            return false;
    pylon_buf *local[2 * 32];
    pylon_buf **ws = n <= 32 ? local : malloc(2 * n * sizeof *ws);
    if (!ws) return false;
    pylon_buf **sse = ws + n;
    uint32_t nws = 0, nsse = 0;
    for (size_t i = 0; i < h->n; i++)
        h->sessions[i]->sse ? nsse++ : nws++;
    for (size_t e = 0; e < n; e++) {
        ws[e] = nws ? pylon_buf_retain_n(evs[e].ws, nws) : evs[e].ws;
        sse[e] = nsse ? pylon_buf_retain_n(evs[e].sse, nsse) : evs[e].sse;
    }
    for (size_t i = 0; i < h->n; i++) {
        session *s = h->sessions[i];
        pylon_stream_send_many_owned(s->stream, s->sse ? sse : ws, n);
    }
    if (ws != local) free(ws);
    return true;
}

/* Frames for every WebSocket session (presence and topic relays, disconnect notices) are staged
 * and sent together: each remaining session gets them in one send (one lock, one loop task, one
 * writev) per actor run. A burst of closes (a proxy restart drops every client at once) or of
 * cursor updates otherwise cost one send per session per frame. Flushed before any message
 * that could reach a session, so a client sees frames in the order the hub handled them, and
 * at the end of each run. */
static void flush_broadcasts(pylon_hub *h)
{
    if (!h->nstaged) return;
    for (size_t i = 0; i < h->n; i++)
        if (!h->sessions[i]->sse)
            pylon_stream_send_many(h->sessions[i]->stream, h->staged, h->nstaged);
    for (size_t k = 0; k < h->nstaged; k++)
        pylon_buf_release(h->staged[k]);
    h->nstaged = 0;
}

/* Takes the caller's reference to `frame`. */
static void stage_broadcast(pylon_hub *h, pylon_buf *frame)
{
    if (h->nstaged == HUB_STAGED_MAX) flush_broadcasts(h);
    h->staged[h->nstaged++] = frame;
}

/* protocol.md §2.2 (c): every remaining WebSocket client is told of the close. */
static void stage_disconnect(pylon_hub *h, const session *gone)
{
    char text[96];
    int len = snprintf(text, sizeof text,
                       "{\"type\":\"presence\",\"event\":\"disconnect\",\"clientId\":%llu}",
                       (unsigned long long)gone->client_id);
    pylon_buf *f = pylon_ws_frame(1, text, (size_t)len);
    if (f) stage_broadcast(h, f); /* out of memory: lost, as a failed send would lose it */
}

/* ---- the user index (room events go to the sessions of given users) ---------------------- */

static session **user_bucket(pylon_hub *h, const char *user_id)
{
    return &h->by_user[pylon_hash_str(user_id) & (h->cap - 1)];
}

static void index_user(pylon_hub *h, session *s)
{
    if (!s->who.id.user_id) return;
    session **b = user_bucket(h, s->who.id.user_id);
    s->same_bucket = *b;
    *b = s;
}

/* Room for one more session: the list and the index grow together (cap is a power of two). */
static bool grow_sessions(pylon_hub *h)
{
    size_t cap = h->cap ? h->cap * 2 : 64;
    session **list = realloc(h->sessions, cap * sizeof *list);
    if (!list) return false;
    h->sessions = list;
    session **buckets = calloc(cap, sizeof *buckets);
    if (!buckets) return false; /* the list keeps its larger block; cap is unchanged */
    free(h->by_user);
    h->by_user = buckets;
    h->cap = cap;
    for (size_t i = 0; i < h->n; i++)
        index_user(h, h->sessions[i]);
    return true;
}

static void unindex_user(pylon_hub *h, session *s)
{
    if (!s->who.id.user_id) return;
    for (session **p = user_bucket(h, s->who.id.user_id); *p; p = &(*p)->same_bucket)
        if (*p == s) {
            *p = s->same_bucket;
            return;
        }
}

static void session_free(session *s)
{
    pylon_stream_release(s->stream);
    free(s);
}

static void behaviour(pylon_actor *self, pylon_msg *msg)
{
    pylon_hub *h = pylon_actor_state(self);
    hub_msg *m = (hub_msg *)msg;
    if (msg->type != MSG_UNREGISTER && msg->type != MSG_RELAY) flush_broadcasts(h);
    switch (msg->type) {
    case MSG_REGISTER:
        if (h->n == h->cap && !grow_sessions(h)) {
            pylon_stream_close(m->s->stream, 1013, "server out of memory: reconnect later");
            break;
        }
        m->s->registered = true;
        m->s->slot = h->n;
        h->sessions[h->n++] = m->s;
        index_user(h, m->s);
        atomic_fetch_add_explicit(&h->live_sessions, 1, memory_order_relaxed);
        break;
    case MSG_UNREGISTER: {
        session *s = m->s;
        if (s->registered) { /* swap the last session into its slot */
            unindex_user(h, s);
            session *last = h->sessions[--h->n];
            h->sessions[s->slot] = last;
            last->slot = s->slot;
            atomic_fetch_sub_explicit(&h->live_sessions, 1, memory_order_relaxed);
        }
        if (!s->sse) stage_disconnect(h, s);
        session_free(s);
        break;
    }
    case MSG_CHANGES: {
        if (send_public(h, m->events, m->n)) goto free_events;
        /* Sessions outer, events inner: each session gets the frames it may see in one send
         * (one lock, at most one loop task), and its loop writes them with one writev. */
        pylon_buf *local[64];
        pylon_buf **frames = m->n <= 64 ? local : malloc(m->n * sizeof *frames);
        for (size_t i = 0; frames && i < h->n; i++) {
            session *s = h->sessions[i];
            size_t k = 0;
            for (size_t e = 0; e < m->n; e++) {
                event *ev = &m->events[e];
                if (ev->ws && ev->sse && may_see(h, s, ev)) frames[k++] = s->sse ? ev->sse : ev->ws;
            }
            pylon_stream_send_many(s->stream, frames, k);
        }
        if (!frames) /* out of memory: event by event (clients also catch up by pull) */
            for (size_t e = 0; e < m->n; e++)
                for (size_t i = 0; i < h->n; i++) {
                    session *s = h->sessions[i];
                    event *ev = &m->events[e];
                    if (ev->ws && ev->sse && may_see(h, s, ev))
                        pylon_stream_send(s->stream, s->sse ? ev->sse : ev->ws);
                }
        if (frames != local) free(frames);
    free_events:
        for (size_t k = 0; k < m->n; k++) {
            json_decref(m->events[k].row);
            if (m->events[k].ws) pylon_buf_release(m->events[k].ws);
            if (m->events[k].sse) pylon_buf_release(m->events[k].sse);
        }
        free(m->events);
        break;
    }
    case MSG_RELAY:
        stage_broadcast(h, m->ws_frame);
        break;
    case MSG_ROOM:
        pylon_rooms_handle(h, m);
        break;
    case MSG_ROOM_SWEEP: /* a borrowed timer tick */
        pylon_rooms_sweep(h, (uint64_t)time(NULL));
        return;
    }
    pylon_msg_free(msg);
}

void pylon_hub_send_to_user(pylon_hub *h, const char *user_id, pylon_buf *ws, pylon_buf *sse)
{
    if (!h->cap) return;
    for (session *s = *user_bucket(h, user_id); s; s = s->same_bucket)
        if (strcmp(s->who.id.user_id, user_id) == 0)
            pylon_stream_send(s->stream, s->sse ? sse : ws);
}

static void on_batch_end(pylon_actor *self)
{
    flush_broadcasts(pylon_actor_state(self));
}

static void on_stop(pylon_actor *self)
{
    pylon_hub *h = pylon_actor_state(self);
    flush_broadcasts(h);
    if (h->room_sweep) pylon_timer_cancel(h->room_sweep);
    pylon_rooms_free(h);
    for (size_t i = 0; i < h->n; i++)
        session_free(h->sessions[i]);
    free(h->sessions);
    free(h->by_user);
    free(h);
}

static const pylon_actor_def HUB_DEF = {
    .name = "sync-hub", .behaviour = behaviour, .on_batch_end = on_batch_end, .on_stop = on_stop};

pylon_hub *pylon_hub_start(pylon_runtime *rt, const pylon_manifest *m,
                           const pylon_policy_set *policies, pylon_auth *auth,
                           unsigned room_idle_secs)
{
    pylon_hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->m = m;
    h->policies = policies;
    h->auth = auth;
    h->room_idle_s = room_idle_secs ? room_idle_secs : 120;
    h->actor = pylon_actor_spawn(rt, &HUB_DEF, h);
    /* Idle room members are swept every quarter of the idle time, at most every 10 s: a member
     * leaves at most 25 % after its time is up. */
    uint64_t every_ms = h->room_idle_s >= 40 ? 10000 : h->room_idle_s * 250u;
    h->room_sweep =
        pylon_timer_start(h->actor, MSG_ROOM_SWEEP, pylon_clock_now_ns() + every_ms * 1000000u,
                          every_ms * 1000000u, 0, 0);
    return h;
}

pylon_actor *pylon_hub_actor_(pylon_hub *h)
{
    return h->actor;
}

void pylon_hub_stop(pylon_hub *h)
{
    if (!h) return;
    /* on_stop frees the hub once queued messages are handled, maybe before stop() returns:
     * keep the actor pointer, never read h again. */
    pylon_actor *a = h->actor;
    pylon_actor_stop(a);
    pylon_actor_release(a);
}

/* ---- the endpoints (loop thread) --------------------------------------------------------- */

static session *session_new(pylon_hub *h, pylon_stream *s, bool sse)
{
    session *se = calloc(1, sizeof *se);
    if (!se) return NULL;
    se->stream = s;
    se->hub = h;
    se->sse = sse;
    se->client_id = atomic_fetch_add(&h->next_client_id, 1);
    pylon_stream_retain(s);
    return se;
}

static void *ws_open(pylon_stream *s, const pylon_stream_open *info)
{
    pylon_hub *h = info->ctx;
    pylon_auth_result who;
    /* protocol.md §0.3: the WebSocket takes session tokens only. */
    pylon_auth_resolve_session(h->auth, info->bearer, &who);
    if (!who.id.user_id) {
        pylon_stream_close(s, 1008, "unauthorized: bearer token required");
        return NULL;
    }
    session *se = session_new(h, s, false);
    if (!se) {
        pylon_stream_close(s, 1013, "server out of memory: reconnect later");
        return NULL;
    }
    se->who = who;
    se->who.id.user_id = se->who.user_id;
    se->who.id.tenant_id = who.id.tenant_id ? se->who.tenant_id : NULL;
    pylon_hub_send_(h, MSG_REGISTER, se, NULL, 0, NULL);
    return se;
}

static void *sse_open(pylon_stream *s, const pylon_stream_open *info)
{
    pylon_hub *h = info->ctx;
    session *se = session_new(h, s, true);
    if (!se) {
        pylon_stream_close(s, 0, NULL);
        return NULL;
    }
    /* Anonymous unless a token comes by Authorization, the session cookie or ?token=. */
    pylon_auth_resolve(h->auth, info->req, &se->who);
    if (!se->who.id.user_id && info->bearer)
        pylon_auth_resolve_session(h->auth, info->bearer, &se->who);
    se->who.id.user_id = se->who.id.user_id ? se->who.user_id : NULL;
    se->who.id.tenant_id = se->who.id.tenant_id ? se->who.tenant_id : NULL;
    pylon_hub_send_(h, MSG_REGISTER, se, NULL, 0, NULL);
    return se;
}

static void on_close(void *user, pylon_stream *s)
{
    (void)s;
    session *se = user;
    if (se) pylon_hub_send_(se->hub, MSG_UNREGISTER, se, NULL, 0, NULL);
}

/* protocol.md §2.3: presence and topic messages are relayed to every WebSocket, with `from`
 * set by the server; anything else (and malformed JSON) is dropped. */
static void ws_message(void *user, pylon_stream *s, bool binary, const uint8_t *data, size_t len)
{
    (void)s;
    session *se = user;
    if (!se || binary) return;
    json_t *j = pylon_json_loadb((const char *)data, len, 0, NULL);
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type && (strcmp(type, "presence") == 0 || strcmp(type, "topic") == 0)) {
        json_object_set_new(j, "from",
                            json_string(se->who.id.is_admin ? "admin" : se->who.id.user_id));
        char *text = json_dumps(j, JSON_COMPACT);
        pylon_buf *f = text ? pylon_ws_frame(1, text, strlen(text)) : NULL;
        free(text);
        if (f) pylon_hub_send_(se->hub, MSG_RELAY, NULL, NULL, 0, f);
    }
    json_decref(j);
}

void pylon_hub_ws_handlers(pylon_hub *h, pylon_stream_handlers *out)
{
    *out = (pylon_stream_handlers){.on_open = ws_open,
                                   .on_message = ws_message,
                                   .on_close = on_close,
                                   .backlog_policy = PYLON_BACKLOG_CLOSE,
                                   .ctx = h};
}

void pylon_hub_sse_handlers(pylon_hub *h, pylon_stream_handlers *out)
{
    *out = (pylon_stream_handlers){
        .on_open = sse_open, .on_close = on_close, .backlog_policy = PYLON_BACKLOG_CLOSE, .ctx = h};
}
