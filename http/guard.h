/*
 * guard.h — what every request passes before a handler: CORS, CSRF, per-IP rate limits,
 * the client's IP behind proxies, and the headers every response carries.
 *
 * Owns: those policies and their configuration (read-only after start). The rate limiter's
 * state is per I/O loop (pylon_rate_limiter) so no lock is ever taken on the request path.
 */
#ifndef PYLON_HTTP_GUARD_H
#define PYLON_HTTP_GUARD_H

#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_guard_config {
    bool dev;
    const char *cors_origin;  /* NULL in dev means "*" */
    const char *csrf_origins; /* comma list; NULL: dev "*", else the CORS origin(s) */
    unsigned rate_max;        /* requests per window per client IP; 0 = unlimited */
    unsigned rate_window_s;
    unsigned trust_proxy_hops;
} pylon_guard_config;

typedef struct pylon_guard pylon_guard;

pylon_guard *pylon_guard_new(const pylon_guard_config *cfg);
void pylon_guard_free(pylon_guard *g);

/* CORS and security header lines for a response to a request with this Origin (may be NULL).
 * Writes into out (NUL-terminated); returns the length. */
size_t pylon_guard_response_headers(const pylon_guard *g, const char *origin, char *out,
                                    size_t cap);

/* CSRF (backend.md §5.8). NULL when allowed, else the rejected origin (points into req or
 * into `scratch`). */
const char *pylon_guard_csrf_check(const pylon_guard *g, const pylon_http_request *req,
                                   char *scratch, size_t cap);

/* The client IP: the socket peer, or with N trusted proxy hops the N-th X-Forwarded-For entry
 * from the right when it parses as an IP. Writes into out. */
void pylon_guard_client_ip(const pylon_guard *g, const char *peer_ip, const char *xff, char *out,
                           size_t cap);

/* Sliding-window rate limiter (two fixed windows weighted), one per loop. */
typedef struct pylon_rate_limiter pylon_rate_limiter;
pylon_rate_limiter *pylon_rate_limiter_new(unsigned max, unsigned window_s);
void pylon_rate_limiter_free(pylon_rate_limiter *rl);
/* 0 when allowed, else the seconds to wait (>= 1). `now_s` is a monotonic second count. */
unsigned pylon_rate_limiter_hit(pylon_rate_limiter *rl, const char *ip, uint64_t now_s);
unsigned pylon_guard_rate_max(const pylon_guard *g);
unsigned pylon_guard_rate_window(const pylon_guard *g);

#endif
