/*
 * streams.h — what the stream endpoints do until the sync and shard layers take them over.
 *
 * Sync WebSocket: the token (Authorization: Bearer or the bearer.<t> subprotocol) must resolve
 * to a session (protocol.md §0.3: session tokens only); otherwise the socket gets its 101 and
 * then Close 1008 "unauthorized: bearer token required" (§2.1). An authenticated socket stays
 * open (pings, liveness) but receives no change events until the sync layer lands.
 * SSE: an anonymous subscription that receives keep-alive comments. Shard WebSocket: no shard
 * exists yet, so the connection is dropped without a close frame (§4.1).
 *
 * The handler tables are filled by pylon_streams_init (their ctx is the auth service).
 */
#ifndef PYLON_TOOLS_STREAMS_H
#define PYLON_TOOLS_STREAMS_H

#include "http/stream.h"

#include "actors/auth.h"

typedef struct pylon_streams {
    pylon_stream_handlers sync_ws, sse, shard_ws;
} pylon_streams;

void pylon_streams_init(pylon_streams *s, pylon_auth *auth);

#endif
