/*
 * test_router.c — route matching (http/router.h).
 *
 * Proves: literal segments, ":param" segments (non-empty), a final "*" taking the rest of the
 * path (also across more than 32 segments), one trailing '/' allowed, "/" only for "/", first
 * match in insertion order, 405 with the union of the methods of the paths that fit otherwise;
 * and, against a straightforward reference matcher (the previous implementation, kept here as
 * the oracle), the same status, allowed methods, route and parameters for 200 000 generated
 * paths over a table of generated and fixed patterns.
 */
#include "http/router.h"

#include "support.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GET  PYLON_M_GET
#define POST PYLON_M_POST

static void handler(pylon_http_exchange *ex, void *ctx)
{
    (void)ex;
    (void)ctx;
}

/* ---- the reference: one pattern, matched segment by segment on the raw path ------------ */

typedef struct ref_route {
    unsigned methods;
    const char *pattern;
    void *ctx;
} ref_route;

static bool ref_fits(const char *pattern, const char *path, pylon_route_match *m)
{
    char segs[64][64];
    size_t nsegs = 0;
    const char *q = pattern + 1;
    while (*q) {
        const char *e = strchr(q, '/');
        size_t len = e ? (size_t)(e - q) : strlen(q);
        snprintf(segs[nsegs++], sizeof segs[0], "%.*s", (int)len, q);
        if (!e) break;
        q = e + 1;
    }
    const char *p = path[0] == '/' ? path + 1 : path;
    m->nparams = 0;
    for (size_t i = 0; i < nsegs; i++) {
        const char *seg = segs[i];
        if (strcmp(seg, "*") == 0 && i + 1 == nsegs) {
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
        if (i + 1 == nsegs) return e == NULL || e[1] == '\0';
        if (!e) return false;
        p = e + 1;
    }
    return nsegs == 0 && *p == '\0';
}

static void ref_match(const ref_route *routes, size_t n, unsigned method, const char *path,
                      pylon_route_match *out)
{
    memset(out, 0, sizeof *out);
    out->status = 404;
    for (size_t i = 0; i < n; i++) {
        pylon_route_match m;
        memset(&m, 0, sizeof m);
        if (!ref_fits(routes[i].pattern, path, &m)) continue;
        if (!(routes[i].methods & method)) {
            out->status = 405;
            out->allowed |= routes[i].methods;
            continue;
        }
        m.status = 0;
        m.allowed = 0;
        m.ctx = routes[i].ctx;
        *out = m;
        return;
    }
}

static void same(const pylon_route_match *got, const pylon_route_match *want, const char *path)
{
    cr_assert_eq(got->status, want->status, "%s: status %d, want %d", path, got->status,
                 want->status);
    if (want->status == 405) cr_assert_eq(got->allowed, want->allowed, "%s: allowed", path);
    if (want->status != 0) return;
    cr_assert_eq(got->ctx, want->ctx, "%s: another route", path);
    cr_assert_eq(got->fn, handler);
    cr_assert_eq(got->nparams, want->nparams, "%s: params", path);
    for (size_t i = 0; i < want->nparams; i++) {
        cr_assert_eq(got->params[i].start, want->params[i].start, "%s: param %zu", path, i);
        cr_assert_eq(got->params[i].len, want->params[i].len, "%s: param %zu", path, i);
    }
}

/* ---- fixed cases -------------------------------------------------------------------------- */

static const ref_route FIXED[] = {
    {GET, "/", (void *)1},
    {GET, "/health", (void *)2},
    {GET | POST, "/api/entities/:entity", (void *)3},
    {GET, "/api/entities/:entity/:id", (void *)4},
    {POST, "/api/entities/:entity/:id/link", (void *)5},
    {GET, "/files/*", (void *)6},
    {POST, "/health", (void *)7},
    {GET, "/a//b", (void *)8},
    {GET, "/x/*/y", (void *)9},
    {GET, "/api/", (void *)10},
};

static pylon_router *fixed_router(void)
{
    pylon_router *r = pylon_router_new();
    cr_assert_not_null(r);
    for (size_t i = 0; i < sizeof FIXED / sizeof *FIXED; i++)
        cr_assert(
            pylon_router_add_inline(r, FIXED[i].methods, FIXED[i].pattern, handler, FIXED[i].ctx));
    return r;
}

Test(router, fixed_cases)
{
    pylon_router *r = fixed_router();
    static const struct {
        unsigned method;
        const char *path;
        int status;
        uintptr_t ctx;
    } cases[] = {
        {GET, "/", 0, 1},
        {GET, "", 0, 1},
        {GET, "//", 404, 0},
        {GET, "/health", 0, 2},
        {GET, "/health/", 0, 2},
        {GET, "/health//", 404, 0},
        {POST, "/health", 0, 7}, /* the first route fits but not by method: the next one */
        {PYLON_M_DELETE, "/health", 405, 0},
        {GET, "/api/entities/Item", 0, 3},
        {GET, "/api/entities/", 404, 0}, /* a parameter is never empty */
        {GET, "/api/entities/Item/abc", 0, 4},
        {GET, "/api/entities/Item/abc/", 0, 4},
        {POST, "/api/entities/Item/abc/link", 0, 5},
        {GET, "/api/entities/Item/abc/link", 405, 0},
        {GET, "/files/a/b/c.txt", 0, 6},
        {GET, "/files/", 0, 6},
        {GET, "/files", 404, 0},
        {GET, "/a//b", 0, 8},
        {GET, "/a/b", 404, 0},
        {GET, "/x/*/y", 0, 9},
        {GET, "/x/z/y", 404, 0}, /* '*' is literal unless last */
        {GET, "/api", 0, 10},
        {GET, "/api/", 0, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unsigned method = cases[i].method;
        pylon_route_match m, want;
        pylon_router_match(r, method, cases[i].path, &m);
        cr_assert_eq(m.status, cases[i].status, "%s: %d", cases[i].path, m.status);
        if (m.status == 0) cr_assert_eq((uintptr_t)m.ctx, cases[i].ctx, "%s", cases[i].path);
        ref_match(FIXED, sizeof FIXED / sizeof *FIXED, method, cases[i].path, &want);
        same(&m, &want, cases[i].path);
    }
    pylon_route_match m;
    pylon_router_match(r, PYLON_M_DELETE, "/health", &m);
    cr_assert_eq(m.allowed, GET | POST);
    pylon_router_match(r, GET, "/api/entities/Item/abc", &m);
    cr_assert_eq(m.nparams, 2);
    cr_assert_eq(m.params[0].len, 4);
    cr_assert(memcmp(m.params[0].start, "Item", 4) == 0);
    cr_assert(memcmp(m.params[1].start, "abc", 3) == 0);
    pylon_router_free(r);
}

Test(router, rest_pattern_takes_paths_of_any_depth)
{
    pylon_router *r = fixed_router();
    char path[512] = "/files";
    for (int i = 0; i < 60; i++)
        strcat(path, "/d");
    pylon_route_match m;
    pylon_router_match(r, GET, path, &m);
    cr_assert_eq(m.status, 0);
    cr_assert_eq((uintptr_t)m.ctx, 6);
    cr_assert_eq(m.params[0].start, path + 7);
    cr_assert_eq(m.params[0].len, strlen(path) - 7);
    pylon_router_free(r);
}

/* ---- generated ---------------------------------------------------------------------------- */

static uint64_t rng = 0x853c49e6748fea9bu;
static unsigned pick(unsigned n)
{
    return (unsigned)(test_random(&rng) % n);
}

static const char *const WORDS[] = {
    "api", "entities",          "Item", "health", "a", "b", "", "*", "files",
    "x",   "long-segment-name", "api2"};

Test(router, generated_paths_match_the_reference)
{
    enum { NROUTES = 120 };
    static char patterns[NROUTES][256];
    ref_route routes[NROUTES];
    pylon_router *r = pylon_router_new();
    cr_assert_not_null(r);
    for (int i = 0; i < NROUTES; i++) {
        char *p = patterns[i];
        p[0] = '\0';
        unsigned nsegs = pick(6);
        for (unsigned s = 0; s < nsegs; s++) {
            strcat(p, "/");
            unsigned k = pick(4);
            if (k == 0)
                strcat(p, ":p");
            else
                strcat(p, WORDS[pick(sizeof WORDS / sizeof *WORDS)]);
        }
        if (nsegs == 0 || pick(8) == 0) strcat(p, "/");
        routes[i] = (ref_route){
            .methods = pick(2) ? GET : POST, .pattern = p, .ctx = (void *)(uintptr_t)(i + 1)};
        cr_assert(pylon_router_add_inline(r, routes[i].methods, p, handler, routes[i].ctx), "%s",
                  p);
    }
    char path[1024];
    for (int t = 0; t < 200000; t++) {
        path[0] = '\0';
        if (pick(10)) strcat(path, "/");
        unsigned nsegs = pick(8) == 0 ? 30 + pick(10) : pick(7);
        for (unsigned s = 0; s < nsegs; s++) {
            if (s) strcat(path, "/");
            strcat(path, pick(5) == 0 ? "v42" : WORDS[pick(sizeof WORDS / sizeof *WORDS)]);
        }
        if (pick(6) == 0) strcat(path, "/");
        unsigned method = pick(3) == 0 ? PYLON_M_DELETE : pick(2) ? GET : POST;
        pylon_route_match got, want;
        pylon_router_match(r, method, path, &got);
        ref_match(routes, NROUTES, method, path, &want);
        same(&got, &want, path);
    }
    pylon_router_free(r);
}

Test(router, refuses_patterns_without_a_leading_slash_or_too_deep)
{
    pylon_router *r = pylon_router_new();
    cr_assert_not(pylon_router_add_inline(r, GET, "health", handler, NULL));
    char deep[256] = "";
    for (int i = 0; i < 40; i++)
        strcat(deep, "/s");
    cr_assert_not(pylon_router_add_inline(r, GET, deep, handler, NULL));
    pylon_route_match m;
    pylon_router_match(r, GET, deep, &m);
    cr_assert_eq(m.status, 404); /* nothing half-added */
    pylon_router_free(r);
}
