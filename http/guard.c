/* guard.c — see guard.h. */
#include "http/guard.h"

#include "engine/fmt.h"
#include "engine/hash.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ORIGINS 16

struct pylon_guard {
    pylon_guard_config cfg;
    char *cors_list[MAX_ORIGINS]; /* the configured CORS origin(s) */
    size_t ncors;
    bool cors_any;
    char *csrf_list[MAX_ORIGINS];
    size_t ncsrf;
    bool csrf_any;
};

static const char SECURITY_HEADERS[] =
    "X-Content-Type-Options: nosniff\r\n"
    "X-Frame-Options: DENY\r\n"
    "X-XSS-Protection: 1; mode=block\r\n"
    "Referrer-Policy: strict-origin-when-cross-origin\r\n"
    "Permissions-Policy: accelerometer=(), camera=(), geolocation=(), gyroscope=(), "
    "microphone=(), payment=(), usb=()\r\n";

static size_t split_list(const char *s, char **out, bool *any)
{
    size_t n = 0;
    while (s && *s && n < MAX_ORIGINS) {
        while (*s == ' ' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && t[-1] == ' ')
            t--;
        if (t > s) {
            out[n] = strndup(s, (size_t)(t - s));
            if (strcmp(out[n], "*") == 0) *any = true;
            n++;
        }
        s = e;
    }
    return n;
}

pylon_guard *pylon_guard_new(const pylon_guard_config *cfg)
{
    pylon_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->cfg = *cfg;
    const char *cors = cfg->cors_origin ? cfg->cors_origin : (cfg->dev ? "*" : NULL);
    g->ncors = split_list(cors, g->cors_list, &g->cors_any);
    const char *csrf = cfg->csrf_origins;
    if (!csrf) csrf = cfg->dev ? "*" : cors;
    g->ncsrf = split_list(csrf, g->csrf_list, &g->csrf_any);
    return g;
}

void pylon_guard_free(pylon_guard *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->ncors; i++)
        free(g->cors_list[i]);
    for (size_t i = 0; i < g->ncsrf; i++)
        free(g->csrf_list[i]);
    free(g);
}

size_t pylon_guard_response_headers(const pylon_guard *g, const char *origin, char *out, size_t cap)
{
    /* One configured origin is sent verbatim (the original's behaviour); with several, the
     * request's Origin is echoed when it is one of them, so browsers accept it. */
    const char *allow = g->ncors ? g->cors_list[0] : NULL;
    if (g->cors_any)
        allow = "*";
    else if (origin && g->ncors > 1)
        for (size_t i = 0; i < g->ncors; i++)
            if (strcmp(origin, g->cors_list[i]) == 0) allow = g->cors_list[i];
    /* Appended by hand (this runs for every answer; snprintf of these ~600 bytes was not
     * free). Truncated at cap - 1 like snprintf, always NUL-terminated. */
    static const char METHODS[] =
        "Access-Control-Allow-Methods: GET, POST, PATCH, DELETE, OPTIONS\r\n"
        "Access-Control-Allow-Headers: Content-Type, Authorization\r\n";
    const char *parts[6];
    size_t np = 0;
    if (allow) {
        parts[np++] = "Access-Control-Allow-Origin: ";
        parts[np++] = allow;
        parts[np++] = "\r\n";
        parts[np++] = METHODS;
        if (!g->cors_any)
            parts[np++] = "Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n";
    }
    parts[np++] = SECURITY_HEADERS;
    size_t n = 0;
    for (size_t i = 0; i < np && cap > 0; i++) {
        size_t len = strlen(parts[i]);
        if (len > cap - 1 - n) len = cap - 1 - n;
        memcpy(out + n, parts[i], len);
        n += len;
    }
    if (cap > 0) out[n] = '\0';
    return n;
}

const char *pylon_guard_csrf_check(const pylon_guard *g, const pylon_http_request *req,
                                   char *scratch, size_t cap)
{
    const char *m = req->method_name;
    if (!strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS")) return NULL;
    const char *auth = pylon_http_header_get(req, "authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) return NULL; /* not a browser cookie */
    const char *origin = pylon_http_header_get(req, "origin");
    if (!origin) {
        const char *ref = pylon_http_header_get(req, "referer");
        if (!ref) return NULL; /* server-to-server */
        /* scheme://host from the first three '/'-separated parts */
        const char *p = strstr(ref, "://");
        size_t len = strlen(ref);
        if (p) {
            const char *slash = strchr(p + 3, '/');
            if (slash) len = (size_t)(slash - ref);
        }
        snprintf(scratch, cap, "%.*s", (int)len, ref);
        origin = scratch;
    }
    if (g->csrf_any) return NULL;
    for (size_t i = 0; i < g->ncsrf; i++)
        if (strcmp(origin, g->csrf_list[i]) == 0) return NULL;
    return origin;
}

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

void pylon_guard_client_ip(const pylon_guard *g, const char *peer_ip, const char *xff, char *out,
                           size_t cap)
{
    pylon_fmt_copy(out, cap, peer_ip);
    unsigned hops = g->cfg.trust_proxy_hops;
    if (hops == 0 || !xff) return;
    /* Walk the list from the right: entry N (1-based) is what the N-th proxy saw. */
    const char *entries[64];
    size_t lens[64], n = 0;
    const char *p = xff;
    while (*p && n < 64) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        entries[n] = p;
        lens[n] = (size_t)(t - p);
        n++;
        p = e;
    }
    if (n < hops) return;
    char cand[64];
    size_t i = n - hops;
    if (lens[i] >= sizeof cand) return;
    memcpy(cand, entries[i], lens[i]);
    cand[lens[i]] = '\0';
    if (is_ip(cand)) pylon_fmt_copy(out, cap, cand);
}

unsigned pylon_guard_rate_max(const pylon_guard *g)
{
    return g->cfg.rate_max;
}

unsigned pylon_guard_rate_window(const pylon_guard *g)
{
    return g->cfg.rate_window_s;
}

/* ---- rate limiter ------------------------------------------------------------------------ */

#define RL_BUCKETS 4096u

typedef struct rl_entry {
    struct rl_entry *next;
    uint64_t window; /* index of the current fixed window */
    uint32_t cur, prev;
    char ip[46];
} rl_entry;

struct pylon_rate_limiter {
    unsigned max, window_s;
    rl_entry *buckets[RL_BUCKETS];
    size_t entries;
    uint64_t last_sweep;
};

pylon_rate_limiter *pylon_rate_limiter_new(unsigned max, unsigned window_s)
{
    pylon_rate_limiter *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->max = max;
    rl->window_s = window_s ? window_s : 60;
    return rl;
}

void pylon_rate_limiter_free(pylon_rate_limiter *rl)
{
    if (!rl) return;
    for (size_t i = 0; i < RL_BUCKETS; i++) {
        rl_entry *e = rl->buckets[i];
        while (e) {
            rl_entry *n = e->next;
            free(e);
            e = n;
        }
    }
    free(rl);
}

/* Entries idle for two windows carry no weight any more: drop them (bounded memory). */
static void sweep(pylon_rate_limiter *rl, uint64_t window)
{
    for (size_t i = 0; i < RL_BUCKETS; i++) {
        rl_entry **pp = &rl->buckets[i];
        while (*pp) {
            rl_entry *e = *pp;
            if (e->window + 1 < window) {
                *pp = e->next;
                free(e);
                rl->entries--;
            } else {
                pp = &e->next;
            }
        }
    }
}

unsigned pylon_rate_limiter_hit(pylon_rate_limiter *rl, const char *ip, uint64_t now_s)
{
    if (!rl || rl->max == 0) return 0;
    uint64_t window = now_s / rl->window_s;
    if (window > rl->last_sweep + 1) {
        sweep(rl, window);
        rl->last_sweep = window;
    }
    uint32_t b = pylon_hash_str(ip) % RL_BUCKETS;
    rl_entry *e = rl->buckets[b];
    while (e && strcmp(e->ip, ip) != 0)
        e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) return 0; /* out of memory: fail open rather than refuse everyone */
        snprintf(e->ip, sizeof e->ip, "%s", ip);
        e->window = window;
        e->next = rl->buckets[b];
        rl->buckets[b] = e;
        rl->entries++;
    }
    if (e->window != window) {
        e->prev = e->window + 1 == window ? e->cur : 0;
        e->cur = 0;
        e->window = window;
    }
    /* Sliding estimate: the previous window weighted by how much of it still overlaps. */
    uint64_t into = now_s % rl->window_s;
    double weight = (double)(rl->window_s - into) / rl->window_s;
    double count = e->prev * weight + e->cur;
    if (count >= rl->max) {
        unsigned wait = (unsigned)(rl->window_s - into);
        return wait ? wait : 1;
    }
    e->cur++;
    return 0;
}
