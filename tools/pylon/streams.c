/* streams.c — see streams.h. */
#include "streams.h"

#include <stddef.h>

static void *sync_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)info;
    pylon_stream_close(s, 1008, "unauthorized: bearer token required");
    return NULL;
}

static void *sse_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)s;
    (void)info;
    return NULL;
}

static void *shard_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)info;
    pylon_stream_close(s, 0, NULL);
    return NULL;
}

const pylon_stream_handlers pylon_sync_ws_endpoint = {.on_open = sync_open,
                                                      .backlog_policy = PYLON_BACKLOG_CLOSE};
const pylon_stream_handlers pylon_sse_endpoint = {.on_open = sse_open,
                                                  .backlog_policy = PYLON_BACKLOG_CLOSE};
const pylon_stream_handlers pylon_shard_ws_endpoint = {.on_open = shard_open,
                                                       .backlog_policy = PYLON_BACKLOG_SKIP};
