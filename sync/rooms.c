/* rooms.c — see rooms.h. The state lives in the hub actor (hub_internal.h); the HTTP
 * handlers here only check the caller and forward. */
#include "sync/rooms.h"

#include "actors/json_load.h"
#include "actors/reply.h"
#include "engine/hash.h"
#include "sync/hub_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_ROOMS 10000
/* Rooms are found by name through ROOM_BUCKETS chains of array positions (+1, 0 ends a chain):
 * at MAX_ROOMS rooms a lookup no longer compares the name with every room's. */
#define ROOM_BUCKETS 16384u
_Static_assert(MAX_ROOMS < UINT16_MAX, "room positions are kept as uint16_t");

enum { OP_JOIN, OP_LEAVE, OP_PRESENCE, OP_BROADCAST, OP_LIST, OP_GET };

typedef struct member {
    char *user_id;
    json_t *data;
    int64_t joined_at, last_active;
} member;

struct room {
    char *name;
    member *members;
    size_t n, cap;
    uint16_t next; /* the next room in its bucket's chain: position + 1, 0 = none */
};

static uint16_t *bucket_of(pylon_hub *h, const char *name)
{
    return &h->room_buckets[pylon_hash_str(name) & (ROOM_BUCKETS - 1)];
}

static struct room *find_room(pylon_hub *h, const char *name)
{
    if (!h->room_buckets) return NULL;
    for (uint16_t i = *bucket_of(h, name); i; i = h->rooms[i - 1].next)
        if (strcmp(h->rooms[i - 1].name, name) == 0) return &h->rooms[i - 1];
    return NULL;
}

/* The link in `name`'s chain that holds position `pos` (+1). */
static uint16_t *link_to(pylon_hub *h, const char *name, size_t pos)
{
    uint16_t *link = bucket_of(h, name);
    while (*link != pos + 1)
        link = &h->rooms[*link - 1].next;
    return link;
}

/* A new, empty room at the end of the array; NULL when out of memory. */
static struct room *add_room(pylon_hub *h, const char *name)
{
    if (!h->room_buckets && !(h->room_buckets = calloc(ROOM_BUCKETS, sizeof *h->room_buckets)))
        return NULL;
    if (h->nrooms == h->rooms_cap) {
        size_t cap = h->rooms_cap ? h->rooms_cap * 2 : 16;
        struct room *nr = realloc(h->rooms, cap * sizeof *nr);
        if (!nr) return NULL;
        h->rooms = nr;
        h->rooms_cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return NULL;
    uint16_t *head = bucket_of(h, name);
    struct room *r = &h->rooms[h->nrooms];
    *r = (struct room){.name = copy, .next = *head};
    *head = (uint16_t)(++h->nrooms);
    return r;
}

static member *find_member(struct room *r, const char *user)
{
    for (size_t i = 0; r && i < r->n; i++)
        if (strcmp(r->members[i].user_id, user) == 0) return &r->members[i];
    return NULL;
}

static json_t *peer_json(const member *m)
{
    char at[32];
    snprintf(at, sizeof at, "%lldZ", (long long)m->joined_at);
    return json_pack("{s:s,s:O,s:s}", "user_id", m->user_id, "data",
                     m->data ? m->data : json_null(), "joined_at", at);
}

/* An event to every member's sessions (WebSocket frame and SSE event from one encoding). */
static void emit(pylon_hub *h, struct room *r, json_t *ev_json, const char *also_user)
{
    char *text = json_dumps(ev_json, JSON_COMPACT);
    json_decref(ev_json);
    if (!text) return;
    pylon_buf *ws = pylon_ws_frame(1, text, strlen(text));
    pylon_buf *sse = pylon_sse_event(text, strlen(text));
    free(text);
    if (ws && sse) {
        for (size_t i = 0; r && i < r->n; i++)
            pylon_hub_send_to_user(h, r->members[i].user_id, ws, sse);
        if (also_user && !find_member(r, also_user)) pylon_hub_send_to_user(h, also_user, ws, sse);
    }
    if (ws) pylon_buf_release(ws);
    if (sse) pylon_buf_release(sse);
}

static void member_free(member *m)
{
    free(m->user_id);
    json_decref(m->data);
}

/* The last room moves into the emptied position; its chain link is renamed to match. */
static void drop_room_if_empty(pylon_hub *h, struct room *r)
{
    if (r->n) return;
    size_t pos = (size_t)(r - h->rooms), last = h->nrooms - 1;
    uint16_t *link = link_to(h, r->name, pos);
    *link = r->next;
    free(r->name);
    free(r->members);
    if (pos != last) {
        *link_to(h, h->rooms[last].name, last) = (uint16_t)(pos + 1);
        *r = h->rooms[last];
    }
    h->nrooms--;
}

static void remove_member(pylon_hub *h, struct room *r, member *m)
{
    char *user = m->user_id;
    json_decref(m->data);
    *m = r->members[--r->n];
    /* The leaver hears it too: its own sessions may still be open. */
    emit(h, r, json_pack("{s:s,s:s,s:s}", "type", "leave", "room", r->name, "user_id", user), user);
    free(user);
    drop_room_if_empty(h, r);
}

void pylon_rooms_sweep(pylon_hub *h, uint64_t now)
{
    for (size_t i = h->nrooms; i-- > 0;) {
        struct room *r = &h->rooms[i];
        for (size_t k = r->n; k-- > 0;) {
            if ((int64_t)now - r->members[k].last_active < (int64_t)h->room_idle_s) continue;
            bool last = r->n == 1;
            remove_member(h, r, &r->members[k]);
            if (last) break; /* the room itself is gone */
        }
    }
}

void pylon_rooms_free(pylon_hub *h)
{
    for (size_t i = 0; i < h->nrooms; i++) {
        for (size_t k = 0; k < h->rooms[i].n; k++)
            member_free(&h->rooms[i].members[k]);
        free(h->rooms[i].members);
        free(h->rooms[i].name);
    }
    free(h->rooms);
    free(h->room_buckets);
    h->rooms = NULL;
    h->room_buckets = NULL;
    h->nrooms = h->rooms_cap = 0;
}

void pylon_rooms_handle(pylon_hub *h, hub_msg *m)
{
    const char *user = m->who.id.is_admin && json_is_string(json_object_get(m->body, "user_id"))
                           ? json_string_value(json_object_get(m->body, "user_id"))
                           : m->who.id.user_id;
    const char *name = m->room_name;
    json_t *data = json_object_get(m->body, "data");
    int64_t now = (int64_t)time(NULL);
    struct room *r = name ? find_room(h, name) : NULL;
    switch (m->room_op) {
    case OP_JOIN: {
        if (!r) {
            if (h->nrooms == MAX_ROOMS) {
                pylon_http_respond_error(m->ex, 429, "ROOM_LIMIT_REACHED",
                                         "There are 10000 rooms already", "leave unused rooms");
                break;
            }
            if (!(r = add_room(h, name))) {
                pylon_http_respond_error(m->ex, 503, "OVERLOADED", "Out of memory", NULL);
                break;
            }
        }
        json_t *peers = json_array();
        for (size_t i = 0; i < r->n; i++)
            json_array_append_new(peers, peer_json(&r->members[i]));
        member *me = find_member(r, user);
        if (!me) {
            if (r->n == r->cap) {
                size_t cap = r->cap ? r->cap * 2 : 8;
                member *nm = realloc(r->members, cap * sizeof *nm);
                if (!nm) {
                    json_decref(peers);
                    pylon_http_respond_error(m->ex, 503, "OVERLOADED", "Out of memory", NULL);
                    break;
                }
                r->members = nm;
                r->cap = cap;
            }
            me = &r->members[r->n++];
            *me = (member){.user_id = strdup(user)};
        }
        json_decref(me->data);
        me->data = data ? json_incref(data) : NULL;
        me->joined_at = me->last_active = now;
        pylon_reply_json(m->ex, 200,
                         json_pack("{s:s,s:{s:s,s:s,s:o}}", "joined", name, "snapshot", "type",
                                   "snapshot", "room", name, "peers", peers),
                         NULL);
        json_t *ev = json_pack("{s:s,s:s,s:s}", "type", "join", "room", name, "user_id", user);
        if (data) json_object_set(ev, "data", data);
        emit(h, r, ev, NULL);
        break;
    }
    case OP_LEAVE: {
        member *me = find_member(r, user);
        pylon_reply_json(m->ex, 200,
                         json_pack("{s:s,s:b}", "left", name, "was_present", me != NULL), NULL);
        if (me) remove_member(h, r, me);
        break;
    }
    case OP_PRESENCE: {
        member *me = find_member(r, user);
        if (!me) {
            pylon_reply_json(m->ex, 200,
                             json_pack("{s:b,s:s}", "updated", 0, "reason", "not_in_room"), NULL);
            break;
        }
        json_decref(me->data);
        me->data = data ? json_incref(data) : NULL;
        me->last_active = now;
        pylon_reply_json(m->ex, 200, json_pack("{s:b}", "updated", 1), NULL);
        emit(h, r,
             json_pack("{s:s,s:s,s:s,s:O}", "type", "presence", "room", name, "user_id", user,
                       "data", data ? data : json_null()),
             NULL);
        break;
    }
    case OP_BROADCAST:
        if (!r || r->n == 0) {
            pylon_reply_json(
                m->ex, 200, json_pack("{s:b,s:s}", "broadcasted", 0, "reason", "room_empty"), NULL);
            break;
        }
        pylon_reply_json(m->ex, 200, json_pack("{s:b}", "broadcasted", 1), NULL);
        emit(h, r,
             json_pack("{s:s,s:s,s:s,s:O,s:O}", "type", "broadcast", "room", name, "sender", user,
                       "topic", json_object_get(m->body, "topic"), "data",
                       data ? data : json_null()),
             NULL);
        break;
    case OP_LIST: {
        json_t *list = json_array();
        for (size_t i = 0; i < h->nrooms; i++)
            json_array_append_new(list, json_pack("{s:s,s:I}", "name", h->rooms[i].name, "members",
                                                  (json_int_t)h->rooms[i].n));
        pylon_reply_json(m->ex, 200, list, NULL);
        break;
    }
    case OP_GET: {
        json_t *members = json_array();
        for (size_t i = 0; r && i < r->n; i++)
            json_array_append_new(members, peer_json(&r->members[i]));
        pylon_reply_json(m->ex, 200,
                         json_pack("{s:s,s:o,s:I}", "room", name, "members", members, "count",
                                   (json_int_t)(r ? r->n : 0)),
                         NULL);
        break;
    }
    }
    json_decref(m->body);
    free(m->room_name);
}

/* ---- HTTP (loop thread) ------------------------------------------------------------------ */

typedef struct rooms_ctx {
    pylon_hub *hub;
    pylon_auth *auth;
} rooms_ctx;

static void forward(pylon_http_exchange *ex, rooms_ctx *rc, int op)
{
    const pylon_http_request *req = pylon_http_request_of(ex);
    hub_msg *m = calloc(1, sizeof *m);
    if (!m) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    pylon_auth_resolve(rc->auth, req, &m->who);
    if (!m->who.id.user_id) {
        free(m);
        pylon_http_respond_error(ex, 401, "AUTH_REQUIRED", "Rooms need a signed-in user or guest",
                                 "POST /api/auth/guest gives a token");
        return;
    }
    m->who.id.user_id = m->who.user_id;
    m->who.id.tenant_id = m->who.id.tenant_id ? m->who.tenant_id : NULL;
    if (op == OP_GET) {
        char name[512];
        pylon_http_param(ex, 0, name, sizeof name); /* decoded: the React hook encodes it */
        m->room_name = strdup(name);
    } else if (op != OP_LIST) {
        json_t *body = pylon_json_loadb((const char *)req->body, req->body_len, 0, NULL);
        const char *room = json_string_value(json_object_get(body, "room"));
        if (!json_is_object(body) || !room || !*room) {
            json_decref(body);
            free(m);
            pylon_http_respond_error(ex, 400, "MISSING_ROOM", "\"room\" (a name) is required",
                                     "send {\"room\": \"doc-1\", ...}");
            return;
        }
        if (op == OP_BROADCAST && !json_is_string(json_object_get(body, "topic"))) {
            json_decref(body);
            free(m);
            pylon_http_respond_error(ex, 400, "MISSING_TOPIC", "\"topic\" is required", NULL);
            return;
        }
        m->room_name = strdup(room);
        m->body = body;
    }
    pylon_msg_init(&m->msg, MSG_ROOM, NULL);
    m->room_op = op;
    m->ex = ex;
    pylon_actor_send(pylon_hub_actor_(rc->hub), &m->msg);
}

static void join(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_JOIN);
}
static void leave(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_LEAVE);
}
static void presence(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_PRESENCE);
}
static void broadcast(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_BROADCAST);
}
static void list(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_LIST);
}
static void get(pylon_http_exchange *ex, void *ctx)
{
    forward(ex, ctx, OP_GET);
}

static void crdt(pylon_http_exchange *ex, void *ctx)
{
    (void)ctx;
    pylon_http_respond_error(ex, 501, "NOT_SUPPORTED",
                             "CRDT (Loro) documents are not supported by this server",
                             "JSON sync (/api/sync/pull, /api/sync/push and the WebSocket) "
                             "covers every entity");
}

bool pylon_rooms_routes(pylon_router *r, pylon_hub *hub, pylon_auth *auth)
{
    static rooms_ctx rc; /* one server per process; filled before the server starts */
    rc.hub = hub;
    rc.auth = auth;
    const unsigned any = PYLON_M_GET | PYLON_M_POST | PYLON_M_PUT | PYLON_M_PATCH | PYLON_M_DELETE;
    return pylon_router_add_inline(r, PYLON_M_POST, "/api/rooms/join", join, &rc) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/rooms/leave", leave, &rc) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/rooms/presence", presence, &rc) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/rooms/broadcast", broadcast, &rc) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/rooms", list, &rc) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/rooms/:name", get, &rc) &&
           pylon_router_add_inline(r, any, "/api/crdt", crdt, NULL) &&
           pylon_router_add_inline(r, any, "/api/crdt/*", crdt, NULL);
}
