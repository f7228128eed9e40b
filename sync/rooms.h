/*
 * rooms.h — /api/rooms (protocol.md §5.2): ephemeral rooms with members and presence.
 *
 * Owns: the room table (in memory, by design: rooms are presence, not data). Every endpoint
 * needs an identity (user, guest or admin); the acting user is the caller's, and a body
 * user_id counts only for the admin. Room events (join, leave, presence, broadcast) go to the
 * sessions of the room's members only (DECISIONS: the original sent them to everyone). Members
 * idle for 120 s (no join or presence) are removed with a leave event. Names in
 * GET /api/rooms/<name> are URL-decoded. At most 10 000 rooms.
 *
 * /api/crdt* answers 501 NOT_SUPPORTED (DECISIONS.md §3).
 */
#ifndef PYLON_SYNC_ROOMS_H
#define PYLON_SYNC_ROOMS_H

#include "actors/auth.h"
#include "http/router.h"
#include "sync/hub.h"

bool pylon_rooms_routes(pylon_router *r, pylon_hub *hub, pylon_auth *auth);

#endif
