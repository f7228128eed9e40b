/* router.c — see router.h. A linear scan over pre-split segments: the table is small and hot
 * in cache. */
#include "http/router.h"

#include <stdlib.h>
#include <string.h>

/* Paths and patterns split at '/' once: a pattern when added, a path once per match (a
 * /health request used to scan ~80 patterns with strchr/strlen/strcmp on each: 3 200
 * instructions of its 9 500, callgrind). */
#define MAX_SEGS 32

enum seg_kind { SEG_LITERAL, SEG_PARAM, SEG_REST };

typedef struct route {
    unsigned methods;
    char **segs; /* ":x" = parameter, "*" = rest (last only) */
    size_t *seg_len;
    unsigned char *seg_kind;
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
        free(r->routes[i].seg_len);
        free(r->routes[i].seg_kind);
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
    rt->seg_len = NULL;
    rt->seg_kind = NULL;
    rt->nsegs = 0;
    size_t cap = 1; /* segments at most: one more than the slashes after the first */
    for (const char *q = pattern + 1; *q; q++)
        cap += *q == '/';
    bool ok = cap < MAX_SEGS && (rt->segs = calloc(cap, sizeof *rt->segs)) &&
              (rt->seg_len = calloc(cap, sizeof *rt->seg_len)) &&
              (rt->seg_kind = calloc(cap, sizeof *rt->seg_kind));
    const char *p = pattern + 1;
    while (ok && *p) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *seg = strndup(p, len);
        if (!(ok = seg != NULL)) break;
        rt->segs[rt->nsegs] = seg;
        rt->seg_len[rt->nsegs] = len;
        rt->seg_kind[rt->nsegs] = seg[0] == ':' ? SEG_PARAM : SEG_LITERAL;
        rt->nsegs++;
        if (!e) break;
        p = e + 1;
    }
    if (ok && rt->nsegs && strcmp(rt->segs[rt->nsegs - 1], "*") == 0)
        rt->seg_kind[rt->nsegs - 1] = SEG_REST;
    if (!ok) { /* not added: nothing of it stays */
        for (size_t j = 0; j < rt->nsegs; j++)
            free(rt->segs[j]);
        free(rt->segs);
        free(rt->seg_len);
        free(rt->seg_kind);
        return false;
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

/* A request path split at '/' (after the leading one): "" is one empty segment, a trailing
 * '/' adds an empty one. More than MAX_SEGS segments: n = MAX_SEGS + 1 (only a rest pattern
 * can match those, through the start of a segment it covers). */
typedef struct split_path {
    const char *start[MAX_SEGS + 1];
    size_t len[MAX_SEGS + 1];
    size_t n;
    const char *end;
} split_path;

static void split(const char *path, split_path *sp)
{
    const char *p = path[0] == '/' ? path + 1 : path;
    sp->n = 0;
    for (;;) {
        if (sp->n == MAX_SEGS + 1) break; /* n stays MAX_SEGS + 1: too many to match exactly */
        const char *e = strchr(p, '/');
        sp->start[sp->n] = p;
        sp->len[sp->n] = e ? (size_t)(e - p) : strlen(p);
        sp->n++;
        if (!e) break;
        p = e + 1;
    }
    sp->end = sp->start[sp->n - 1] + strlen(sp->start[sp->n - 1]);
}

/* Does the path fit the route's segments? Fills params. */
static bool fits(const route *rt, const split_path *sp, pylon_route_match *m)
{
    m->nparams = 0;
    if (rt->nsegs == 0) return sp->n == 1 && sp->len[0] == 0; /* "/" */
    for (size_t i = 0; i < rt->nsegs; i++) {
        bool last = i + 1 == rt->nsegs;
        if (rt->seg_kind[i] == SEG_REST) { /* the rest of the path, from this segment on */
            if (i >= sp->n) return false;
            if (m->nparams < PYLON_ROUTE_MAX_PARAMS) {
                m->params[m->nparams].start = sp->start[i];
                m->params[m->nparams].len = (size_t)(sp->end - sp->start[i]);
                m->nparams++;
            }
            return true;
        }
        if (i >= sp->n || i >= MAX_SEGS) return false;
        size_t len = sp->len[i];
        if (rt->seg_kind[i] == SEG_PARAM) {
            if (len == 0) return false;
            if (m->nparams < PYLON_ROUTE_MAX_PARAMS) {
                m->params[m->nparams].start = sp->start[i];
                m->params[m->nparams].len = len;
                m->nparams++;
            }
        } else if (rt->seg_len[i] != len || memcmp(rt->segs[i], sp->start[i], len) != 0) {
            return false;
        }
        /* exactly these segments, or one trailing '/' more */
        if (last) return sp->n == rt->nsegs || (sp->n == rt->nsegs + 1 && sp->len[rt->nsegs] == 0);
    }
    return false;
}

void pylon_router_match(const pylon_router *r, unsigned method, const char *path,
                        pylon_route_match *out)
{
    memset(out, 0, sizeof *out);
    out->status = 404;
    pylon_route_match m; /* fits() sets what it uses; no per-route memset (a /health request
                            tried ~80 routes before its own) */
    split_path sp;
    split(path, &sp);
    for (size_t i = 0; i < r->n; i++) {
        const route *rt = &r->routes[i];
        if (!fits(rt, &sp, &m)) continue;
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
