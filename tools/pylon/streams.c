/* streams.c — see streams.h. */
#include "streams.h"

#include <stddef.h>

static void *sync_open(pylon_stream *s, const pylon_stream_open *info)
{
    pylon_auth_result who;
    pylon_auth_resolve_session(info->ctx, info->bearer, &who);
    if (!who.id.user_id) pylon_stream_close(s, 1008, "unauthorized: bearer token required");
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

void pylon_streams_init(pylon_streams *s, pylon_auth *auth)
{
    s->sync_ws = (pylon_stream_handlers){
        .on_open = sync_open, .backlog_policy = PYLON_BACKLOG_CLOSE, .ctx = auth};
    s->sse = (pylon_stream_handlers){.on_open = sse_open, .backlog_policy = PYLON_BACKLOG_CLOSE};
    s->shard_ws =
        (pylon_stream_handlers){.on_open = shard_open, .backlog_policy = PYLON_BACKLOG_SKIP};
}
