/* router.c — see router.h. A linear scan over segments: the table is small and hot in cache. */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

typedef struct route {
    unsigned methods;
    char **segs; /* ":x" = parameter, "*" = rest (last only) */
    size_t nsegs;
    pylon_http_inline_fn fn;
    pylon_actor *actor;
    uint32_t msg_type;
    void *ctx;
} route;

struct pylon_router {
    route *routes;
    size_t n, cap;
};

pylon_router *pylon_router_new(void)
{
    return calloc(1, sizeof(pylon_router));
}

void pylon_router_free(pylon_router *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n; i++) {
        for (size_t j = 0; j < r->routes[i].nsegs; j++)
            free(r->routes[i].segs[j]);
        free(r->routes[i].segs);
        if (r->routes[i].actor) pylon_actor_release(r->routes[i].actor);
    }
    free(r->routes);
    free(r);
}

static bool add(pylon_router *r, unsigned methods, const char *pattern, route proto)
{
    if (!pattern || pattern[0] != '/') return false;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        route *nr = realloc(r->routes, cap * sizeof *nr);
        if (!nr) return false;
        r->routes = nr;
        r->cap = cap;
    }
    route *rt = &r->routes[r->n];
    *rt = proto;
    rt->methods = methods;
    rt->segs = NULL;
    rt->nsegs = 0;
    const char *p = pattern + 1;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char **ns = realloc(rt->segs, (rt->nsegs + 1) * sizeof *ns);
        if (!ns) return false;
        rt->segs = ns;
        rt->segs[rt->nsegs] = strndup(p, len);
        if (!rt->segs[rt->nsegs]) return false;
        rt->nsegs++;
        if (!e) break;
        p = e + 1;
    }
    r->n++;
    return true;
}

bool pylon_router_add_inline(pylon_router *r, unsigned methods, const char *pattern,
                             pylon_http_inline_fn fn, void *ctx)
{
    return add(r, methods, pattern, (route){.fn = fn, .ctx = ctx});
}

bool pylon_router_add_actor(pylon_router *r, unsigned methods, const char *pattern,
                            pylon_actor *actor, uint32_t msg_type, void *ctx)
{
    if (!add(r, methods, pattern, (route){.actor = actor, .msg_type = msg_type, .ctx = ctx}))
        return false;
    pylon_actor_retain(actor);
    return true;
}

/* Does `path` fit the route's segments? Fills params. */
static bool fits(const route *rt, const char *path, pylon_route_match *m)
{
    const char *p = path[0] == '/' ? path + 1 : path;
    m->nparams = 0;
    for (size_t i = 0; i < rt->nsegs; i++) {
        const char *seg = rt->segs[i];
        if (strcmp(seg, "*") == 0 && i + 1 == rt->nsegs) {
            if (m->nparams < PYLON_ROUTE_MAX_PARAMS) {
                m->params[m->nparams].start = p;
                m->params[m->nparams].len = strlen(p);
                m->nparams++;
            }
            return true;
        }
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (seg[0] == ':') {
            if (len == 0) return false;
            if (m->nparams < PYLON_ROUTE_MAX_PARAMS) {
                m->params[m->nparams].start = p;
                m->params[m->nparams].len = len;
                m->nparams++;
            }
        } else if (strlen(seg) != len || memcmp(seg, p, len) != 0) {
            return false;
        }
        if (i + 1 == rt->nsegs) return e == NULL || e[1] == '\0'; /* allow one trailing '/' */
        if (!e) return false;
        p = e + 1;
    }
    return rt->nsegs == 0 && *p == '\0';
}

void pylon_router_match(const pylon_router *r, unsigned method, const char *path,
                        pylon_route_match *out)
{
    memset(out, 0, sizeof *out);
    out->status = 404;
    pylon_route_match m; /* fits() sets what it uses; no per-route memset (a /health request
                            tried ~80 routes before its own) */
    for (size_t i = 0; i < r->n; i++) {
        const route *rt = &r->routes[i];
        if (!fits(rt, path, &m)) continue;
        if (!(rt->methods & method)) {
            out->status = 405;
            out->allowed |= rt->methods;
            continue;
        }
        m.status = 0;
        m.allowed = 0;
        m.fn = rt->fn;
        m.actor = rt->actor;
        m.msg_type = rt->msg_type;
        m.ctx = rt->ctx;
        *out = m;
        return;
    }
}
