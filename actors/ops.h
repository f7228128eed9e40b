/*
 * ops.h — the operations endpoints: /health, /metrics and /api/transports (inline on the I/O
 * loops: they only read counters), plus /readyz (the readiness actor, readiness.h).
 */
#ifndef PYLON_ACTORS_OPS_H
#define PYLON_ACTORS_OPS_H

#include "actors/persistence.h"
#include "engine/runtime.h"
#include "http/router.h"
#include "http/server.h"

#include <stdatomic.h>
#include <stdbool.h>

typedef struct pylon_ops {
    _Atomic(pylon_http_server *) server; /* set once the server runs */
    pylon_runtime *rt;
    pylon_persistence *writer; /* NULL until the database is open */
    /* More Prometheus text from other modules (malloc'd; NULL for none). */
    char *(*more_prometheus)(void *ctx);
    void *more_ctx;
    bool dev;
    const char *admin_token;
    const char *host;
    int port;
    const char *ws_url, *sse_url, *shard_url;
    uint64_t start_ns;
} pylon_ops;

/* Registers GET /health, /metrics, /api/transports. */
bool pylon_ops_routes(pylon_router *r, pylon_ops *ops);

/* Constant-time check of `Authorization: Bearer <admin token>`. */
bool pylon_ops_is_admin(const pylon_ops *ops, const pylon_http_request *req);

#endif
