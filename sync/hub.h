/*
 * hub.h — live sync: who is connected, and what each of them may see.
 *
 * Owns: the registry of sync sessions (WebSocket on +1 and /ws, SSE on +2 and /events), the
 * fan-out of committed changes, and the presence/topic relay (protocol.md §2.2-2.3). It runs
 * as one actor: registrations, relays and change batches are messages, so the registry needs
 * no lock. Each committed change is encoded once per transport and the same buffer goes to
 * every session allowed to read the row (read policies per connection, DECISIONS.md §2).
 *
 * Back-pressure is the stream layer's bound (PYLON_WS_MAX_BACKLOG): a client that falls that
 * far behind is closed with 1013 and pulls before it reconnects, so nothing is lost.
 */
#ifndef PYLON_SYNC_HUB_H
#define PYLON_SYNC_HUB_H

#include "actors/auth.h"
#include "actors/manifest.h"
#include "actors/policy.h"
#include "actors/store.h"
#include "engine/runtime.h"
#include "http/stream.h"

typedef struct pylon_hub pylon_hub;

/* `room_idle_secs`: a room member neither joining nor sending presence for that long is
 * removed, with a leave event (PYLON_ROOM_IDLE_SECS). */
pylon_hub *pylon_hub_start(pylon_runtime *rt, const pylon_manifest *m,
                           const pylon_policy_set *policies, pylon_auth *auth,
                           unsigned room_idle_secs);
void pylon_hub_stop(pylon_hub *h);

/* The persistence actor's change listener (pylon_change_listener): called after each commit. */
void pylon_hub_on_changes(void *hub, const pylon_change *changes, size_t n);

/* Stream handlers for the sync WebSocket and SSE endpoints (ctx = the hub). */
void pylon_hub_ws_handlers(pylon_hub *h, pylon_stream_handlers *out);
void pylon_hub_sse_handlers(pylon_hub *h, pylon_stream_handlers *out);

/* The JSON of a change event as the clients expect it (protocol.md §1.1): data is the row for
 * inserts, only the changed fields for updates, absent for deletes. `timestamp` is the string
 * to put in it ("" live, "<secs>Z" in pull). NULL on exhaustion. */
json_t *pylon_change_event_json(const char *entity, const char *row_id, const char *kind,
                                const json_t *fields, const json_t *row, int64_t seq,
                                const char *timestamp);

#endif
