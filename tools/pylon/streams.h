/*
 * streams.h — the stream endpoints not yet owned by their layer.
 *
 * Shard WebSocket: no shard exists yet, so the connection is dropped without a close frame
 * (protocol.md §4.1). The sync WebSocket and SSE endpoints belong to the sync hub (sync/hub.h).
 */
#ifndef PYLON_TOOLS_STREAMS_H
#define PYLON_TOOLS_STREAMS_H

#include "http/stream.h"

typedef struct pylon_streams {
    pylon_stream_handlers sync_ws, sse, shard_ws;
} pylon_streams;

/* Fills shard_ws; sync_ws and sse are filled by the hub. */
void pylon_streams_init(pylon_streams *s);

#endif
