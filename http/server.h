/*
 * server.h — the HTTP server: listeners, I/O loops, connections, streams, shutdown.
 *
 * Owns: every socket. Each I/O loop (engine/loop.h) has its own listening sockets
 * (SO_REUSEPORT), its own connections and its own counters; nothing on a loop is touched from
 * another thread except through pylon_loop_post. Handlers run inline on the loop (fast, never
 * blocking: /health, /metrics) or in an actor (router.h) that answers with pylon_http_respond.
 *
 * Transports (DECISIONS.md §1): HTTP on the main port; the sync WebSocket on +1 and at /ws;
 * SSE on +2 and at /events; the shard WebSocket on +3 and at /shard/<id> or with ?shard=.
 */
#ifndef PYLON_HTTP_SERVER_H
#define PYLON_HTTP_SERVER_H

#include "http/http.h"
#include "http/stream.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_router pylon_router;
typedef struct pylon_guard pylon_guard;
typedef struct pylon_http_server pylon_http_server;

typedef enum {
    PYLON_LISTEN_MAIN,
    PYLON_LISTEN_SYNC_WS,
    PYLON_LISTEN_SSE,
    PYLON_LISTEN_SHARD_WS,
    PYLON_LISTEN_COUNT
} pylon_listener_kind;

typedef struct pylon_http_server_options {
    const char *host;
    int port; /* main port; the others are port+1..port+3 */
    unsigned io_threads;
    size_t max_header_bytes;   /* 431 beyond */
    size_t max_body_bytes;     /* 413 beyond */
    unsigned header_timeout_s; /* from the first byte of a request to the end of its headers */
    unsigned body_timeout_s;   /* longest pause between two pieces of a body */
    unsigned idle_timeout_s;   /* keep-alive connection with no request */
    unsigned max_conns_per_ip; /* HTTP connections on the main port */
    unsigned max_stream_conns_per_ip; /* per streaming listener (WS, SSE, shard WS) */
    size_t ws_max_frame;              /* PYLON_WS_MAX_FRAME */
    size_t stream_max_backlog;        /* PYLON_WS_MAX_BACKLOG, bytes queued to one client */
    unsigned ws_ping_s, ws_dead_s, sse_keepalive_s;
    unsigned trust_proxy_hops;
    const pylon_router *router;
    pylon_guard *guard;
    const pylon_stream_handlers *streams[PYLON_STREAM_KIND_COUNT];
} pylon_http_server_options;

/* Binds every port and starts the loops. NULL with one line in `err` (e.g. the port in use). */
pylon_http_server *pylon_http_server_start(const pylon_http_server_options *opt, char *err,
                                           size_t errlen);

/* Graceful shutdown, the deployment page's steps 1-3: stop accepting; let in-flight HTTP
 * requests finish for at most `drain_s` seconds (idle keep-alive connections close at once);
 * close WebSockets with 1001 and end SSE streams. Blocks until done. */
void pylon_http_server_shutdown(pylon_http_server *srv, unsigned drain_s);

/* After shutdown: stops the loops and frees everything. */
void pylon_http_server_destroy(pylon_http_server *srv);

/* Counters for /metrics, summed over the loops. */
typedef struct pylon_http_stats {
    uint64_t requests, ok, errors;
    uint64_t by_method[5]; /* GET POST PATCH DELETE OPTIONS */
    uint64_t by_class[6];  /* index = status / 100 */
    uint64_t latency_buckets[12];
    uint64_t latency_count;
    double latency_sum_s;
    uint64_t open[PYLON_LISTEN_COUNT + 2]; /* per listener, then WS and SSE streams */
    uint64_t rejected_conns;
    uint64_t timeouts;
} pylon_http_stats;

extern const double pylon_http_latency_bounds[12]; /* seconds, upper bounds; last is +Inf */

void pylon_http_server_stats(pylon_http_server *srv, pylon_http_stats *out);
bool pylon_http_server_draining(const pylon_http_server *srv);

#endif
