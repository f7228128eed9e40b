/*
 * shard_api.h — the shard transports and HTTP API (protocol.md §4.1, §4.4).
 *
 * WebSocket (port+3, /shard/<id> or ?shard=): the shard id from the path or ?shard=, the sid
 * from ?sid= (default "anon"); unknown shard → dropped without a close frame; the sid must be
 * the caller's user id (or the caller the admin) → else Close 1008; full or stopped → 1013.
 * Text or binary frames {"input": …, "client_seq": n} are queued for the next tick; malformed
 * ones are dropped and counted. Frames above PYLON_WS_MAX_FRAME close the socket with 1009.
 * Subprotocols (offered alone or beside bearer.<token>, which still authenticates; the format
 * is echoed): pylon.msgpack gets [u64 BE tick][msgpack] frames and may send binary inputs as
 * msgpack; pylon.delta gets the text full/delta frames of shard.h. Without one: JSON frames.
 *
 * HTTP: POST /api/shards (admin) creates {"id","kind","config",…,"checkpoint_secs"}; GET
 * /api/shards (admin);
 * GET /api/shards/<id>; POST /api/shards/<id>/input (the sid is the caller's unless the admin
 * names one); DELETE /api/shards/<id> (admin).
 */
#ifndef PYLON_SHARDS_SHARD_API_H
#define PYLON_SHARDS_SHARD_API_H

#include "actors/auth.h"
#include "http/router.h"
#include "http/stream.h"
#include "shards/shard.h"

typedef struct pylon_shard_api {
    pylon_shards *shards;
    pylon_auth *auth;
    const char *replay_dir; /* where "record": true shards write (PYLON_REPLAY_DIR) */
} pylon_shard_api;

bool pylon_shard_routes(pylon_router *r, pylon_shard_api *api);
void pylon_shard_ws_handlers(pylon_shard_api *api, pylon_stream_handlers *out);
/* GET /api/shards/<id>/connect?sid=: the same snapshots as SSE events "id: <tick>". */
void pylon_shard_sse_handlers(pylon_shard_api *api, pylon_stream_handlers *out);

#endif
