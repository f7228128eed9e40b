/* streams.c — see streams.h. */
#include "streams.h"

#include <stddef.h>

static void *shard_open(pylon_stream *s, const pylon_stream_open *info)
{
    (void)info;
    pylon_stream_close(s, 0, NULL);
    return NULL;
}

void pylon_streams_init(pylon_streams *s)
{
    *s = (pylon_streams){0};
    s->shard_ws =
        (pylon_stream_handlers){.on_open = shard_open, .backlog_policy = PYLON_BACKLOG_SKIP};
}
