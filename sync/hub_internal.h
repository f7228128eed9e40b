/* hub_internal.h — what hub.c and rooms.c share; the hub actor's state (actor thread only). */
#ifndef PYLON_SYNC_HUB_INTERNAL_H
#define PYLON_SYNC_HUB_INTERNAL_H

#include "engine/timer.h"
#include "sync/hub.h"

#include <stdatomic.h>

enum { MSG_REGISTER = 1, MSG_UNREGISTER, MSG_CHANGES, MSG_RELAY, MSG_ROOM, MSG_ROOM_SWEEP };

typedef struct session {
    pylon_stream *stream;
    pylon_hub *hub;
    uint64_t client_id; /* protocol.md §2.2 (c): the connection counter */
    bool sse;
    bool registered;             /* hub actor only */
    size_t slot;                 /* hub actor only: its index in pylon_hub.sessions */
    struct session *same_bucket; /* hub actor only: next in its pylon_hub.by_user chain */
    pylon_auth_result who;
} session;

/* One committed change, encoded once per transport. */
typedef struct event {
    const pylon_entity *e; /* NULL: no longer in the manifest (admins only) */
    json_t *row;           /* for read policies: the row after the change (or the deleted row) */
    pylon_buf *ws, *sse;
} event;

typedef struct hub_msg {
    pylon_msg msg;
    session *s;
    event *events;
    size_t n;
    pylon_buf *ws_frame; /* MSG_RELAY */
    /* MSG_ROOM */
    int room_op;
    pylon_http_exchange *ex;
    pylon_auth_result who;
    json_t *body;
    char *room_name;
} hub_msg;

/* Frames for every WebSocket session staged per actor run (hub.c, flush_broadcasts). */
#define HUB_STAGED_MAX 64

struct pylon_hub {
    pylon_actor *actor;
    const pylon_manifest *m;
    const pylon_policy_set *policies;
    pylon_auth *auth;
    session **sessions; /* actor only */
    size_t n, cap;
    /* actor only: the sessions that have a user id, in `cap` hash buckets (chained through
     * same_bucket), so a room event reaches its members' sessions without a pass over all. */
    session **by_user;
    pylon_buf *staged[HUB_STAGED_MAX]; /* actor only: relays and disconnect notices to send */
    size_t nstaged;
    _Atomic uint64_t next_client_id;
    _Atomic uint32_t live_sessions; /* registered, for on_changes to skip work when zero */
    struct room *rooms;             /* actor only (rooms.c) */
    size_t nrooms, rooms_cap;
    uint16_t *room_buckets; /* actor only (rooms.c): rooms by name */
    pylon_timer *room_sweep;
    unsigned room_idle_s; /* PYLON_ROOM_IDLE_SECS */
};

struct room;

void pylon_hub_send_(pylon_hub *h, int type, session *s, event *ev, size_t n, pylon_buf *frame);
pylon_actor *pylon_hub_actor_(pylon_hub *h);

/* rooms.c, on the hub's thread */
void pylon_rooms_handle(pylon_hub *h, hub_msg *m);
void pylon_rooms_sweep(pylon_hub *h, uint64_t now_s);
void pylon_rooms_free(pylon_hub *h);
/* hub.c: sends `frame` to every session of `user_id` (any transport's encoding chosen per
 * session from the two buffers). */
void pylon_hub_send_to_user(pylon_hub *h, const char *user_id, pylon_buf *ws, pylon_buf *sse);

#endif
