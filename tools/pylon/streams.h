/*
 * streams.h — what the stream endpoints do until the sync and shard layers take them over.
 *
 * Sync WebSocket: there is no session store yet, so no token resolves to a user; protocol.md
 * §2.1 says such a socket gets its 101 and then Close 1008 "unauthorized: bearer token
 * required". SSE: an anonymous subscription that receives keep-alive comments. Shard WebSocket:
 * no shard exists yet, so the connection is dropped without a close frame (§4.1).
 */
#ifndef PYLON_TOOLS_STREAMS_H
#define PYLON_TOOLS_STREAMS_H

#include "http/stream.h"

extern const pylon_stream_handlers pylon_sync_ws_endpoint;
extern const pylon_stream_handlers pylon_sse_endpoint;
extern const pylon_stream_handlers pylon_shard_ws_endpoint;

#endif
