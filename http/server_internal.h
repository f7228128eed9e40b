/*
 * server_internal.h — the structures shared by server.c, conn.c, ws.c and stream.c.
 * Everything here belongs to one I/O loop and is touched only on that loop's thread, except
 * the fields marked atomic.
 */
#ifndef PYLON_HTTP_SERVER_INTERNAL_H
#define PYLON_HTTP_SERVER_INTERNAL_H

#include "engine/loop.h"
#include "http/guard.h"
#include "http/router.h"
#include "http/server.h"

#include <llhttp.h>
#include <stdatomic.h>
#include <uv.h>

typedef struct io_loop io_loop;
typedef struct pylon_conn pylon_conn;
typedef struct req_state req_state;
typedef struct ws_state ws_state;

/* Connections per IP and listener, to enforce the per-IP caps. */
typedef struct ip_slot {
    struct ip_slot *next;
    uint32_t count[PYLON_LISTEN_COUNT];
    char ip[46];
} ip_slot;

#define IP_BUCKETS 1024u

typedef enum { PHASE_IDLE, PHASE_HEADERS, PHASE_BODY, PHASE_HANDLING, PHASE_STREAM } conn_phase;

/* Stats updated by the loop thread only (load + store), read by anyone (relaxed). */
typedef struct loop_stats {
    _Atomic uint64_t requests, ok, errors, by_method[5], by_class[6];
    _Atomic uint64_t latency_buckets[12], latency_count, latency_sum_us;
    _Atomic uint64_t open[PYLON_LISTEN_COUNT + 2];
    _Atomic uint64_t rejected_conns, timeouts;
} loop_stats;

#define STAT_ADD(field, n)                                                                         \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (n),    \
                          memory_order_relaxed)

struct io_loop {
    pylon_http_server *srv;
    pylon_loop *loop;
    unsigned index;
    uv_tcp_t listeners[PYLON_LISTEN_COUNT];
    bool listening[PYLON_LISTEN_COUNT];
    uv_timer_t sweep;
    uint64_t now_s;     /* seconds since the server started, refreshed each sweep and read */
    pylon_conn *conns;  /* every open connection, for the sweep and shutdown */
    uint8_t *read_buf;  /* one buffer per loop: reads are consumed before the next one */
    unsigned http_busy; /* connections with a request partly received or being handled */
    loop_stats stats;
};

struct pylon_http_server {
    pylon_http_server_options opt;
    io_loop *loops;
    unsigned nloops;
    uint64_t start_ns;
    atomic_bool draining;
    atomic_uint next_loop; /* round-robin: the loop that gets the next accepted connection */
    /* Per-IP connection counts and the request rate limiter are the server's, not a loop's:
     * a client's connections are spread over the loops, and the caps must hold for all of
     * them together. Accepts and closes are rare; one uncontended lock per request for the
     * rate limiter is cheap. */
    pthread_mutex_t per_ip_lock;
    ip_slot *ips[IP_BUCKETS];
    pylon_rate_limiter *rate;
    pthread_mutex_t lock; /* with `cond`: shutdown steps wait for the loops to report */
    pthread_cond_t cond;
    unsigned pending_reports;
};

struct pylon_conn {
    uv_tcp_t tcp;
    io_loop *io;
    pylon_conn *prev, *next;
    ip_slot *ip;
    uint8_t listener; /* pylon_listener_kind */
    uint8_t phase;    /* conn_phase */
    bool closing, reading, close_after_write, lingering, peer_loopback;
    bool resuming, resume_again; /* see pylon_conn_resume_http */
    uint64_t deadline_ms;        /* when the current phase times out (ms since start); 0 = none */
    uint64_t last_recv_s;        /* streams: liveness */
    size_t queued;               /* bytes handed to uv_write and not yet written */
    req_state *rs;               /* HTTP parsing state; NULL once upgraded */
    uint8_t *pending;            /* input received while a request was being handled */
    size_t pending_len;
    pylon_http_exchange *ex; /* the request being handled */
    ws_state *ws;            /* WebSocket or SSE */
    char peer_ip[46];
};

struct pylon_http_exchange {
    pylon_loop_task task; /* posts the answer back to the loop */
    pylon_conn *conn;     /* NULL when the client left before the answer */
    io_loop *io;
    req_state *rs; /* owns the request's memory */
    pylon_http_request req;
    pylon_route_match match;
    uint64_t start_ns;
    bool keep_alive, log;
    pylon_http_response res;
    char *res_headers;
};

/* conn.c */
void pylon_conn_accept(io_loop *io, uv_stream_t *listener, int kind);
void pylon_conn_close(pylon_conn *c);
bool pylon_conn_write(pylon_conn *c, pylon_buf **bufs, size_t n); /* takes the references */
/* Writes what the socket takes at once of bufs (one writev; nothing if something is queued):
 * the byte count, or -1 when the connection failed (it is closing). Keeps the references. */
ssize_t pylon_conn_try_write(pylon_conn *c, pylon_buf *const *bufs, size_t n);
/* pylon_conn_write for bufs whose first `written` bytes pylon_conn_try_write already sent. */
bool pylon_conn_write_rest(pylon_conn *c, pylon_buf **bufs, size_t n, size_t written);
void pylon_conn_close_when_flushed(pylon_conn *c); /* then a lingering close */
void pylon_conn_start_reading(pylon_conn *c);
void pylon_conn_sweep(io_loop *io);
void pylon_conn_shutdown_idle(io_loop *io); /* drain: close connections with no request */
void pylon_conn_resume_http(pylon_conn *c);
void pylon_conn_finish_exchange(pylon_conn *c, pylon_http_exchange *ex);
void *pylon_conn_read_buf_new(void);
void pylon_req_state_free_(void *rs);

/* ws.c (WebSocket and SSE on a connection) */
bool pylon_ws_wants_upgrade(const pylon_http_request *req);
/* Takes over the connection for a stream; answers the handshake (or refuses it). */
void pylon_stream_begin(pylon_conn *c, pylon_http_exchange *ex, pylon_stream_kind kind,
                        const uint8_t *rest, size_t rest_len);
void pylon_ws_on_data(pylon_conn *c, const uint8_t *data, size_t len);
void pylon_stream_on_conn_closed(pylon_conn *c);
void pylon_stream_sweep(pylon_conn *c);
void pylon_stream_shutdown(pylon_conn *c); /* 1001 going away / end of SSE */
void pylon_ws_state_free(ws_state *ws);

/* server.c */
/* The per-IP table's bucket for `ip` (with per_ip_lock held to use it). */
ip_slot **pylon_server_ip_bucket(pylon_http_server *srv, const char *ip);
void pylon_server_ip_release(io_loop *io, ip_slot *slot, int kind);
size_t pylon_server_common_headers(pylon_http_server *srv, const char *origin, char *out,
                                   size_t cap);

#endif
