/* ops.c — /health, /metrics, /api/transports (see ops.h). */
#include "actors/ops.h"

#include "actors/change_tail.h"

#include "engine/clock.h"

#include <jansson.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static uint64_t uptime_s(const pylon_ops *ops)
{
    return (pylon_clock_now_ns() - ops->start_ns) / PYLON_NS_PER_SEC;
}

bool pylon_ops_is_admin(const pylon_ops *ops, const pylon_http_request *req)
{
    const char *auth = pylon_http_header_get(req, "authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !ops->admin_token) return false;
    const char *t = auth + 7;
    size_t n = strlen(ops->admin_token);
    return strlen(t) == n && CRYPTO_memcmp(t, ops->admin_token, n) == 0;
}

static void health(pylon_http_exchange *ex, void *ctx)
{
    pylon_ops *ops = ctx;
    char body[160];
    uint64_t up = uptime_s(ops);
    snprintf(body, sizeof body,
             "{\"status\":\"ok\",\"uptime_seconds\":%llu,\"uptime_secs\":%llu,\"version\":\"%s\"}",
             (unsigned long long)up, (unsigned long long)up, PYLON_VERSION);
    pylon_http_respond_json(ex, 200, body);
}

/* ---- /metrics ---------------------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t len, cap;
} text;

static void tf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tf(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if (t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *np = realloc(t->p, cap);
        if (!np) return;
        t->p = np;
        t->cap = cap;
    }
}

static void metric(text *t, const char *name, const char *type, const char *help)
{
    tf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *const METHODS[5] = {"GET", "POST", "PATCH", "DELETE", "OPTIONS"};
static const char *const TRANSPORTS[] = {"http",          "sync_ws_port", "sse_port",
                                         "shard_ws_port", "websocket",    "sse"};

static void metrics(pylon_http_exchange *ex, void *ctx)
{
    pylon_ops *ops = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    if (!ops->dev && !pylon_ops_is_admin(ops, req)) {
        pylon_http_respond_error(ex, 401, "UNAUTHORIZED",
                                 "/metrics requires admin bearer token in non-dev mode",
                                 "send Authorization: Bearer <PYLON_ADMIN_TOKEN>");
        return;
    }
    pylon_http_stats st;
    memset(&st, 0, sizeof st);
    pylon_http_server *srv = atomic_load(&ops->server);
    if (srv) pylon_http_server_stats(srv, &st);
    pylon_runtime_stats rs;
    pylon_runtime_stats_get(ops->rt, &rs);
    const char *accept = pylon_http_header_get(req, "accept");
    bool prom =
        accept && (strstr(accept, "text/plain") || strstr(accept, "application/openmetrics-text"));
    text t = {malloc(8192), 0, 8192};
    if (!t.p) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    t.p[0] = '\0';
    if (prom) {
        metric(&t, "pylon_uptime_seconds", "gauge", "Seconds since the server started");
        tf(&t, "pylon_uptime_seconds %llu\n", (unsigned long long)uptime_s(ops));
        metric(&t, "pylon_http_requests_total", "counter", "HTTP requests answered");
        tf(&t, "pylon_http_requests_total %llu\n", (unsigned long long)st.requests);
        metric(&t, "pylon_http_requests_ok_total", "counter", "Answers with status 200-399");
        tf(&t, "pylon_http_requests_ok_total %llu\n", (unsigned long long)st.ok);
        metric(&t, "pylon_http_requests_errors_total", "counter", "Answers with any other status");
        tf(&t, "pylon_http_requests_errors_total %llu\n", (unsigned long long)st.errors);
        metric(&t, "pylon_http_requests_by_method", "counter", "HTTP requests by method");
        for (int i = 0; i < 5; i++)
            tf(&t, "pylon_http_requests_by_method{method=\"%s\"} %llu\n", METHODS[i],
               (unsigned long long)st.by_method[i]);
        metric(&t, "pylon_http_responses_by_class_total", "counter", "Answers by status class");
        for (int i = 1; i < 6; i++)
            tf(&t, "pylon_http_responses_by_class_total{class=\"%dxx\"} %llu\n", i,
               (unsigned long long)st.by_class[i]);
        metric(&t, "pylon_http_request_duration_seconds", "histogram",
               "Time from a complete request to its answer");
        uint64_t cum = 0;
        for (int i = 0; i < 12; i++) {
            cum += st.latency_buckets[i];
            if (i < 11)
                tf(&t, "pylon_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                   pylon_http_latency_bounds[i], (unsigned long long)cum);
            else
                tf(&t, "pylon_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                   (unsigned long long)cum);
        }
        tf(&t, "pylon_http_request_duration_seconds_sum %.6f\n", st.latency_sum_s);
        tf(&t, "pylon_http_request_duration_seconds_count %llu\n",
           (unsigned long long)st.latency_count);
        metric(&t, "pylon_open_connections", "gauge", "Open connections by transport");
        for (int i = 0; i < PYLON_LISTEN_COUNT + 2; i++)
            tf(&t, "pylon_open_connections{transport=\"%s\"} %llu\n", TRANSPORTS[i],
               (unsigned long long)st.open[i]);
        metric(&t, "pylon_rejected_connections_total", "counter",
               "Connections closed at accept (per-IP cap or shutdown)");
        tf(&t, "pylon_rejected_connections_total %llu\n", (unsigned long long)st.rejected_conns);
        metric(&t, "pylon_http_timeouts_total", "counter", "Requests that timed out (408)");
        tf(&t, "pylon_http_timeouts_total %llu\n", (unsigned long long)st.timeouts);
        if (ops->writer) {
            metric(&t, "pylon_changelog_head_seq", "gauge", "Last change-log seq committed");
            tf(&t, "pylon_changelog_head_seq %lld\n",
               (long long)pylon_persistence_head_seq(ops->writer));
            uint64_t mem = 0, log = 0;
            if (pylon_persistence_tail(ops->writer))
                pylon_change_tail_counts(pylon_persistence_tail(ops->writer), &mem, &log);
            metric(&t, "pylon_sync_pulls_total", "counter",
                   "Sync pulls answered from the in-memory tail, and from the durable log");
            tf(&t, "pylon_sync_pulls_total{source=\"memory\"} %llu\n", (unsigned long long)mem);
            tf(&t, "pylon_sync_pulls_total{source=\"log\"} %llu\n", (unsigned long long)log);
            metric(&t, "pylon_persistence_queue_depth", "gauge", "Write requests queued");
            tf(&t, "pylon_persistence_queue_depth %u\n",
               pylon_persistence_queue_depth(ops->writer));
            metric(&t, "pylon_persistence_commit_batch_mean", "gauge",
                   "Mean write requests per transaction (group commit)");
            tf(&t, "pylon_persistence_commit_batch_mean %.3f\n",
               pylon_persistence_mean_batch(ops->writer));
        }
        if (ops->more_prometheus) { /* e.g. the shards' tick histograms */
            char *more = ops->more_prometheus(ops->more_ctx);
            if (more) tf(&t, "%s", more);
            free(more);
        }
        metric(&t, "pylon_actors", "gauge", "Live actors");
        tf(&t, "pylon_actors %llu\n", (unsigned long long)rs.live_actors);
        metric(&t, "pylon_actor_messages_total", "counter", "Messages delivered to actors");
        tf(&t, "pylon_actor_messages_total %llu\n", (unsigned long long)rs.messages);
        pylon_http_response res = {.status = 200,
                                   .content_type = "text/plain; version=0.0.4",
                                   .body = pylon_buf_take(t.p, t.len)};
        pylon_http_respond(ex, &res);
        return;
    }
    free(t.p);
    json_t *open = json_object();
    for (int i = 0; i < PYLON_LISTEN_COUNT + 2; i++)
        json_object_set_new(open, TRANSPORTS[i], json_integer((json_int_t)st.open[i]));
    json_t *methods = json_object();
    for (int i = 0; i < 4; i++)
        json_object_set_new(methods, METHODS[i], json_integer((json_int_t)st.by_method[i]));
    json_t *j = json_pack("{s:I,s:{s:I,s:I,s:I},s:o,s:o,s:{s:I,s:f},s:{s:I,s:I}}", "uptime_secs",
                          (json_int_t)uptime_s(ops), "requests", "total", (json_int_t)st.requests,
                          "ok", (json_int_t)st.ok, "error", (json_int_t)st.errors, "methods",
                          methods, "connections", open, "latency", "count",
                          (json_int_t)st.latency_count, "sum_secs", st.latency_sum_s, "actors",
                          "live", (json_int_t)rs.live_actors, "messages", (json_int_t)rs.messages);
    if (j && ops->writer)
        json_object_set_new(
            j, "persistence",
            json_pack("{s:I,s:i,s:f}", "head_seq",
                      (json_int_t)pylon_persistence_head_seq(ops->writer), "queue_depth",
                      (int)pylon_persistence_queue_depth(ops->writer), "commit_batch_mean",
                      pylon_persistence_mean_batch(ops->writer)));
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    pylon_http_respond_json(ex, 200, body ? body : "{}");
    free(body);
}

/* ---- /api/transports --------------------------------------------------------------------- */

static void transports(pylon_http_exchange *ex, void *ctx)
{
    pylon_ops *ops = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    /* Advertise what the client can reach: the configured public URLs, else the Host the
     * client used with our ports. */
    const char *host = pylon_http_header_get(req, "host");
    char hostname[256];
    snprintf(hostname, sizeof hostname, "%s", host ? host : "localhost");
    char *colon = strrchr(hostname, ':');
    if (colon && !strchr(colon, ']')) *colon = '\0';
    char ws[600], sse[600], shard[600], http[560];
    if (ops->ws_url) {
        /* One public origin (DECISIONS.md §1): everything else lives on it by path, with the
         * scheme that matches the WebSocket URL's (wss -> https). */
        const char *u = ops->ws_url;
        bool tls = strncmp(u, "wss://", 6) == 0;
        const char *hostpart = strstr(u, "://") ? strstr(u, "://") + 3 : u;
        size_t hl = strcspn(hostpart, "/?#");
        snprintf(http, sizeof http, "%s://%.*s", tls ? "https" : "http", (int)hl, hostpart);
        snprintf(ws, sizeof ws, "%s", u);
        snprintf(shard, sizeof shard, "%s://%.*s/shard", tls ? "wss" : "ws", (int)hl, hostpart);
        snprintf(sse, sizeof sse, "%s/events", http);
    } else {
        snprintf(http, sizeof http, "http://%s:%d", hostname, ops->port);
        snprintf(ws, sizeof ws, "ws://%s:%d", hostname, ops->port + 1);
        snprintf(sse, sizeof sse, "http://%s:%d/events", hostname, ops->port + 2);
        snprintf(shard, sizeof shard, "ws://%s:%d", hostname, ops->port + 3);
    }
    if (ops->sse_url) snprintf(sse, sizeof sse, "%s", ops->sse_url);
    if (ops->shard_url) snprintf(shard, sizeof shard, "%s", ops->shard_url);
    json_t *j = json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s,s:s}}", "http", http, "websocket", ws, "sse",
                          sse, "shards", shard, "paths", "websocket", "/ws", "sse", "/events",
                          "shards", "/shard/<id>");
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    pylon_http_respond_json(ex, 200, body ? body : "{}");
    free(body);
}

bool pylon_ops_routes(pylon_router *r, pylon_ops *ops)
{
    return pylon_router_add_inline(r, PYLON_M_GET | PYLON_M_HEAD, "/health", health, ops) &&
           pylon_router_add_inline(r, PYLON_M_GET | PYLON_M_HEAD, "/metrics", metrics, ops) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/transports", transports, ops);
}
