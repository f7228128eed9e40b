/*
 * router.h — from method + path to a handler.
 *
 * Owns: the route table, built once at start and read-only afterwards (so every loop reads it
 * without locks). Patterns are '/'-separated segments; ":name" matches one segment and a final
 * "*" matches the rest. A handler runs inline on the I/O loop (it must not block) or in an
 * actor, which receives a pylon_http_msg and answers with pylon_http_respond.
 */
#ifndef PYLON_HTTP_ROUTER_H
#define PYLON_HTTP_ROUTER_H

#include "engine/actor.h"
#include "http/http.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pylon_router pylon_router;

enum {
    PYLON_M_GET = 1u << 0,
    PYLON_M_POST = 1u << 1,
    PYLON_M_PUT = 1u << 2,
    PYLON_M_PATCH = 1u << 3,
    PYLON_M_DELETE = 1u << 4,
    PYLON_M_HEAD = 1u << 5,
};

#define PYLON_ROUTE_MAX_PARAMS 4

typedef void (*pylon_http_inline_fn)(pylon_http_exchange *ex, void *ctx);

/* What an actor route's actor receives; it owns the message (pylon_msg_free). */
typedef struct pylon_http_msg {
    pylon_msg msg;
    pylon_http_exchange *ex;
    void *ctx;
} pylon_http_msg;

typedef struct pylon_route_match {
    int status;       /* 0 found, 404 no such path, 405 path exists with other methods */
    unsigned allowed; /* for 405: the methods the path accepts */
    pylon_http_inline_fn fn;
    pylon_actor *actor;
    uint32_t msg_type;
    void *ctx;
    size_t nparams;
    struct {
        const char *start;
        size_t len;
    } params[PYLON_ROUTE_MAX_PARAMS];
} pylon_route_match;

pylon_router *pylon_router_new(void);
void pylon_router_free(pylon_router *r);

/* False on a malformed pattern or memory exhaustion. */
bool pylon_router_add_inline(pylon_router *r, unsigned methods, const char *pattern,
                             pylon_http_inline_fn fn, void *ctx);
/* The router keeps a reference to `actor` until it is freed. */
bool pylon_router_add_actor(pylon_router *r, unsigned methods, const char *pattern,
                            pylon_actor *actor, uint32_t msg_type, void *ctx);

/* `method` is one PYLON_M_* bit (0 for methods no route accepts). */
void pylon_router_match(const pylon_router *r, unsigned method, const char *path,
                        pylon_route_match *out);

/* Path parameter `i` of the matched route, percent-decoded into `out` (NUL-terminated,
 * truncated); malformed escapes are kept as they are. */
bool pylon_http_param(const pylon_http_exchange *ex, size_t i, char *out, size_t cap);

/* Percent-decodes `len` bytes of `in` into out (NUL-terminated); returns the length. */
size_t pylon_http_pct_decode(const char *in, size_t len, char *out, size_t cap);

#endif
