/* shard_api.c — see shard_api.h. */
#include "shards/shard_api.h"

#include "actors/json_load.h"
#include "actors/reply.h"
#include "shards/codec.h"
#include "shards/json_scan.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- WebSocket --------------------------------------------------------------------------- */

typedef struct ws_sub {
    pylon_shard *shard;
    pylon_shard_format fmt;
    char sid[PYLON_SHARD_SID_MAX + 1];
} ws_sub;

/* The subprotocols of the shard WebSocket (shard_api.h): the echoed one picks the frames. */
static const char *const SUBPROTOCOLS[] = {"pylon.msgpack", "pylon.delta", NULL};

/* Snapshot frames that may wait for a subscriber's I/O loop before the oldest is skipped.
 * More than one: a shard catching up after a stall sends up to 3 ticks at once (shard.c
 * MAX_CATCHUP), and a client whose loop keeps up gets every tick (protocol.md §4.2). Few: a
 * loop that falls behind sends the newest frames, not a queue of stale ones. */
#define MAX_PENDING_FRAMES 4

static pylon_shard_format format_of(const char *protocol)
{
    if (protocol && strcmp(protocol, "pylon.msgpack") == 0) return PYLON_SHARD_FMT_MSGPACK;
    if (protocol && strcmp(protocol, "pylon.delta") == 0) return PYLON_SHARD_FMT_DELTA;
    return PYLON_SHARD_FMT_JSON;
}

static void query_value(const char *q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    out[0] = '\0';
    for (const char *p = q; p && *p;) {
        const char *e = strchr(p, '&');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char raw[256];
            snprintf(raw, sizeof raw, "%.*s", (int)(len - nl - 1), p + nl + 1);
            for (char *c = raw; *c; c++)
                if (*c == '+') *c = ' '; /* form encoding */
            pylon_http_pct_decode(raw, strlen(raw), out, cap);
            return;
        }
        p = e ? e + 1 : NULL;
    }
}

/* The `sid` query value into sid (PYLON_SHARD_SID_MAX + 1 bytes); false when it is longer. */
static bool query_sid(const char *q, char *sid)
{
    char full[256];
    query_value(q, "sid", full, sizeof full);
    if (strlen(full) > PYLON_SHARD_SID_MAX) return false;
    memcpy(sid, full, strlen(full) + 1);
    return true;
}

static void *ws_open(pylon_stream *s, const pylon_stream_open *info)
{
    pylon_shard_api *api = info->ctx;
    pylon_shard *shard = info->shard_id ? pylon_shards_get(api->shards, info->shard_id) : NULL;
    if (!shard) { /* protocol.md §4.1: dropped without a close frame */
        pylon_stream_close(s, 0, NULL);
        return NULL;
    }
    char sid[PYLON_SHARD_SID_MAX + 1];
    if (!query_sid(info->req->query, sid)) {
        pylon_shard_release(shard);
        pylon_stream_close(s, 1008, "subscriber id longer than 63 bytes");
        return NULL;
    }
    if (!sid[0]) snprintf(sid, sizeof sid, "anon");
    pylon_auth_result who;
    pylon_auth_resolve_session(api->auth, info->bearer, &who);
    /* The default authorize_subscribe: the admin, or the user whose id is the sid. */
    if (!who.id.user_id) {
        pylon_shard_release(shard);
        pylon_stream_close(s, 1008, "unauthorized: authenticated user required");
        return NULL;
    }
    if (strcmp(who.id.user_id, sid) != 0) {
        char why[160];
        snprintf(why, sizeof why,
                 "unauthorized: subscriber id \"%.40s\" does not match authenticated user", sid);
        pylon_shard_release(shard);
        pylon_stream_close(s, 1008, why);
        return NULL;
    }
    pylon_shard_format fmt = format_of(info->protocol);
    pylon_shard_result r = pylon_shard_subscribe(shard, s, sid, fmt);
    if (r != PYLON_SHARD_OK) {
        pylon_shard_release(shard);
        pylon_stream_close(
            s, 1013, r == PYLON_SHARD_FULL ? "shard is at max subscribers" : "shard is stopped");
        return NULL;
    }
    ws_sub *sub = calloc(1, sizeof *sub);
    if (!sub) {
        pylon_shard_unsubscribe(shard, s);
        pylon_shard_release(shard);
        pylon_stream_close(s, 1013, "server out of memory");
        return NULL;
    }
    sub->shard = shard;
    sub->fmt = fmt;
    snprintf(sub->sid, sizeof sub->sid, "%s", sid);
    return sub;
}

static void ws_message(void *user, pylon_stream *s, bool binary, const uint8_t *data, size_t len)
{
    (void)s;
    ws_sub *sub = user;
    if (!sub) return;
    const char *in;
    size_t in_len;
    uint64_t seq;
    /* The plain shape (nearly every input) is handed on as sent, without a parse and a dump
     * here; the simulation parses the value once. */
    if (!(binary && sub->fmt == PYLON_SHARD_FMT_MSGPACK) &&
        pylon_scan_input_msg((const char *)data, len, &in, &in_len, &seq)) {
        pylon_shard_input(sub->shard, sub->sid, in, in_len, seq, NULL);
        return;
    }
    /* Binary frames are read as UTF-8 JSON too (protocol.md §4.3), except from a pylon.msgpack
     * client: there they are msgpack of the same {"input": …, "client_seq": n} map. */
    json_t *j = binary && sub->fmt == PYLON_SHARD_FMT_MSGPACK
                    ? pylon_msgpack_to_json(data, len)
                    : pylon_json_loadb((const char *)data, len, 0, NULL);
    json_t *input = json_object_get(j, "input");
    json_t *cseq = json_object_get(j, "client_seq");
    /* client_seq is a uint64 (protocol.md §4.3): a negative one is malformed. */
    if (json_is_object(j) && (!cseq || (json_is_integer(cseq) && json_integer_value(cseq) >= 0))) {
        char *text = json_dumps(input ? input : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
        if (text)
            pylon_shard_input(sub->shard, sub->sid, text, strlen(text),
                              cseq ? (uint64_t)json_integer_value(cseq) : 0, NULL);
        free(text);
    } else {
        /* malformed: dropped (the connection survives) and counted. Not queued: an
         * event-driven shard would tick for it, and it would take a queue slot. */
        pylon_shard_count_dropped(sub->shard);
    }
    json_decref(j);
}

static void ws_close(void *user, pylon_stream *s)
{
    ws_sub *sub = user;
    if (!sub) return;
    pylon_shard_unsubscribe(sub->shard, s);
    pylon_shard_release(sub->shard);
    free(sub);
}

/* ---- SSE: GET /api/shards/<id>/connect?sid= (protocol.md §4.4) --------------------------- */

/* Who subscribes as which sid; NULL sid with the refusal filled in. */
static bool sse_who(pylon_shard_api *api, const pylon_stream_open *info,
                    char sid[PYLON_SHARD_SID_MAX + 1], pylon_stream_refusal *no)
{
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, info->req, &who);
    if (!who.id.user_id) {
        no->status = 401;
        no->code = "AUTH_REQUIRED";
        snprintf(no->message, sizeof no->message, "A user session is required");
        return false;
    }
    if (!query_sid(info->req->query, sid) ||
        (!sid[0] && strlen(who.id.user_id) > PYLON_SHARD_SID_MAX)) {
        no->status = 400;
        no->code = "INVALID_SID";
        snprintf(no->message, sizeof no->message, "The subscriber id is longer than %d bytes",
                 PYLON_SHARD_SID_MAX);
        return false;
    }
    if (!sid[0]) snprintf(sid, PYLON_SHARD_SID_MAX + 1, "%s", who.id.user_id);
    if (!who.id.is_admin && strcmp(sid, who.id.user_id) != 0) {
        no->status = 403;
        no->code = "UNAUTHORIZED";
        snprintf(no->message, sizeof no->message,
                 "subscriber id \"%.60s\" does not match authenticated user", sid);
        return false;
    }
    return true;
}

static void sse_precheck(const pylon_stream_open *info, pylon_stream_refusal *no)
{
    pylon_shard_api *api = info->ctx;
    pylon_shard *s = info->shard_id ? pylon_shards_get(api->shards, info->shard_id) : NULL;
    if (!s) {
        no->status = 404;
        no->code = "SHARD_NOT_FOUND";
        snprintf(no->message, sizeof no->message, "No shard \"%.100s\"",
                 info->shard_id ? info->shard_id : "");
        return;
    }
    char sid[PYLON_SHARD_SID_MAX + 1];
    if (sse_who(api, info, sid, no)) {
        pylon_shard_status st;
        pylon_shard_status_get(s, &st);
        /* protocol.md §4.4: 429 for a full or stopped shard, as the WebSocket's 1013. Checked
         * here, before the 200: once the stream is open a refusal can only close it. */
        if (!st.running || (st.max_subscribers && st.subscribers >= st.max_subscribers)) {
            no->status = 429;
            no->code = "SUBSCRIBE_FAILED";
            snprintf(no->message, sizeof no->message, "%s",
                     st.running ? "shard is at max subscribers" : "shard is stopped");
        }
    }
    pylon_shard_release(s);
}

static void *sse_open(pylon_stream *st, const pylon_stream_open *info)
{
    pylon_shard_api *api = info->ctx;
    pylon_stream_refusal no = {0};
    ws_sub *sub = calloc(1, sizeof *sub);
    pylon_shard *s = pylon_shards_get(api->shards, info->shard_id);
    if (!sub || !s || !sse_who(api, info, sub->sid, &no) ||
        pylon_shard_subscribe(s, st, sub->sid, PYLON_SHARD_FMT_JSON) != PYLON_SHARD_OK) {
        free(sub);
        if (s) pylon_shard_release(s);
        /* The precheck passed a moment ago: the shard filled up or stopped since (a race, not a
         * bug); the 200 is out, so the stream just ends. */
        pylon_stream_close(st, 0, NULL);
        return NULL;
    }
    sub->shard = s;
    return sub;
}

void pylon_shard_sse_handlers(pylon_shard_api *api, pylon_stream_handlers *out)
{
    *out = (pylon_stream_handlers){.precheck = sse_precheck,
                                   .on_open = sse_open,
                                   .on_close = ws_close,
                                   .backlog_policy = PYLON_BACKLOG_SKIP,
                                   .max_pending = MAX_PENDING_FRAMES,
                                   .ctx = api};
}

void pylon_shard_ws_handlers(pylon_shard_api *api, pylon_stream_handlers *out)
{
    *out = (pylon_stream_handlers){.on_open = ws_open,
                                   .on_message = ws_message,
                                   .on_close = ws_close,
                                   .backlog_policy = PYLON_BACKLOG_SKIP,
                                   .max_pending = MAX_PENDING_FRAMES,
                                   .ctx = api,
                                   .subprotocols = SUBPROTOCOLS};
}

/* ---- HTTP -------------------------------------------------------------------------------- */

static json_t *status_json(const pylon_shard_status *st)
{
    json_t *j =
        json_pack("{s:s,s:s,s:b,s:I,s:i,s:i,s:I,s:I}", "id", st->id, "kind", st->kind, "running",
                  st->running, "tick", (json_int_t)st->tick, "subscribers", (int)st->subscribers,
                  "input_queue", (int)st->input_queue, "inputs_dropped",
                  (json_int_t)st->inputs_dropped, "frames_skipped", (json_int_t)st->frames_skipped);
    if (j && st->record_path[0])
        json_object_set_new(j, "replay_file", json_string(st->record_path));
    return j;
}

static bool admin_only(pylon_shard_api *api, pylon_http_exchange *ex)
{
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &who);
    if (who.id.is_admin) return true;
    pylon_http_respond_error(ex, 403, "FORBIDDEN",
                             "this endpoint requires admin auth (PYLON_ADMIN_TOKEN)", NULL);
    return false;
}

static uint32_t cfg_u32(json_t *body, const char *key, uint32_t def, bool *bad)
{
    json_t *v = json_object_get(body, key);
    if (!v) return def;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1000000) {
        *bad = true;
        return def;
    }
    return (uint32_t)json_integer_value(v);
}

static void create(pylon_http_exchange *ex, void *ctx)
{
    pylon_shard_api *api = ctx;
    if (!admin_only(api, ex)) return;
    const pylon_http_request *req = pylon_http_request_of(ex);
    json_t *body = pylon_json_loadb((const char *)req->body, req->body_len, 0, NULL);
    const char *id = json_string_value(json_object_get(body, "id"));
    const char *kind = json_string_value(json_object_get(body, "kind"));
    json_t *config = json_object_get(body, "config");
    pylon_shard_config cfg = PYLON_SHARD_CONFIG_DEFAULT;
    bool bad = !json_is_object(body) || !id || !*id || strlen(id) > 100 ||
               (config && !json_is_object(config));
    cfg.tick_rate_hz = cfg_u32(body, "tick_rate_hz", cfg.tick_rate_hz, &bad);
    cfg.max_subscribers = cfg_u32(body, "max_subscribers", cfg.max_subscribers, &bad);
    cfg.idle_ticks_before_shutdown =
        cfg_u32(body, "idle_ticks_before_shutdown", cfg.idle_ticks_before_shutdown, &bad);
    cfg.max_input_queue = cfg_u32(body, "max_input_queue", cfg.max_input_queue, &bad);
    if (json_object_get(body, "checkpoint_secs"))
        cfg.checkpoint_secs = (int32_t)cfg_u32(body, "checkpoint_secs", 0, &bad);
    if (bad || cfg.tick_rate_hz > 1000) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "INVALID_DATA",
                                 "Expected {\"id\": \"…\", \"kind\": \"arena\", \"config\": {…}, "
                                 "\"tick_rate_hz\": 0..1000, \"max_subscribers\", "
                                 "\"idle_ticks_before_shutdown\", \"max_input_queue\", "
                                 "\"checkpoint_secs\"}",
                                 NULL);
        return;
    }
    /* "record": true writes the inputs to <replay dir>/<id>.replay for `pylon replay`. */
    char record[512];
    if (json_is_true(json_object_get(body, "record"))) {
        bool safe = true;
        for (const char *c = id; *c; c++)
            if (*c == '/' || *c == '\\' || (c == id && *c == '.')) safe = false;
        if (!safe) {
            json_decref(body);
            pylon_http_respond_error(ex, 400, "INVALID_DATA",
                                     "A recorded shard's id must be usable as a file name", NULL);
            return;
        }
        snprintf(record, sizeof record, "%s/%s.replay", api->replay_dir, id);
        cfg.record_path = record;
    }
    char *config_text = config ? json_dumps(config, JSON_COMPACT) : NULL;
    char err[300];
    int rc = pylon_shards_create(api->shards, id, kind ? kind : "arena", config_text, &cfg, err,
                                 sizeof err);
    free(config_text);
    if (rc == 0) {
        pylon_shard *s = pylon_shards_get(api->shards, id);
        pylon_shard_status st;
        pylon_shard_status_get(s, &st);
        pylon_shard_release(s);
        pylon_reply_json(ex, 201, status_json(&st), NULL);
    } else {
        pylon_http_respond_error(ex, rc,
                                 rc == 409   ? "SHARD_EXISTS"
                                 : rc == 400 ? "INVALID_DATA"
                                             : "OVERLOADED",
                                 err, NULL);
    }
    json_decref(body);
}

static void list(pylon_http_exchange *ex, void *ctx)
{
    pylon_shard_api *api = ctx;
    if (!admin_only(api, ex)) return;
    size_t n;
    pylon_shard_status *all = pylon_shards_list(api->shards, &n);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, status_json(&all[i]));
    free(all);
    pylon_reply_json(ex, 200, arr, NULL);
}

static pylon_shard *shard_or_404(pylon_shard_api *api, pylon_http_exchange *ex)
{
    char id[128];
    pylon_http_param(ex, 0, id, sizeof id);
    pylon_shard *s = pylon_shards_get(api->shards, id);
    if (!s) {
        char msg[200];
        snprintf(msg, sizeof msg, "No shard \"%.100s\"", id);
        pylon_http_respond_error(ex, 404, "SHARD_NOT_FOUND", msg, NULL);
    }
    return s;
}

static void get(pylon_http_exchange *ex, void *ctx)
{
    pylon_shard *s = shard_or_404(ctx, ex);
    if (!s) return;
    pylon_shard_status st;
    pylon_shard_status_get(s, &st);
    pylon_shard_release(s);
    pylon_reply_json(ex, 200, status_json(&st), NULL);
}

static void remove_shard(pylon_http_exchange *ex, void *ctx)
{
    pylon_shard_api *api = ctx;
    if (!admin_only(api, ex)) return;
    char id[128];
    pylon_http_param(ex, 0, id, sizeof id);
    if (!pylon_shards_remove(api->shards, id)) {
        pylon_http_respond_error(ex, 404, "SHARD_NOT_FOUND", "No such shard", NULL);
        return;
    }
    pylon_reply_json(ex, 200, json_pack("{s:b}", "deleted", 1), NULL);
}

static void input(pylon_http_exchange *ex, void *ctx)
{
    pylon_shard_api *api = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    json_t *body = pylon_json_loadb((const char *)req->body, req->body_len, 0, NULL);
    if (!json_is_object(body)) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "INVALID_JSON", "The body must be {\"input\": …}", NULL);
        return;
    }
    pylon_shard *s = shard_or_404(api, ex);
    if (!s) {
        json_decref(body);
        return;
    }
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, req, &who);
    const char *named = json_string_value(json_object_get(body, "subscriber_id"));
    /* The sid is checked against the caller (the original did not): a user inputs as itself. */
    const char *sid = named ? named : who.id.user_id;
    if (sid && strlen(sid) > PYLON_SHARD_SID_MAX) {
        json_decref(body);
        pylon_shard_release(s);
        pylon_http_respond_error(ex, 400, "INPUT_REJECTED",
                                 "The subscriber id is longer than 63 bytes", NULL);
        return;
    }
    if (!sid || (!who.id.is_admin && (!who.id.user_id || strcmp(sid, who.id.user_id) != 0))) {
        json_decref(body);
        pylon_shard_release(s);
        pylon_http_respond_error(ex, 403, "UNAUTHORIZED",
                                 "Inputs are sent as the signed-in user (subscriber_id must be "
                                 "your user id)",
                                 NULL);
        return;
    }
    json_t *cseq = json_object_get(body, "client_seq");
    if (cseq && (!json_is_integer(cseq) || json_integer_value(cseq) < 0)) {
        json_decref(body);
        pylon_shard_release(s);
        pylon_http_respond_error(ex, 400, "INPUT_REJECTED",
                                 "client_seq must be a non-negative integer", NULL);
        return;
    }
    char *text =
        json_dumps(json_object_get(body, "input") ? json_object_get(body, "input") : json_null(),
                   JSON_COMPACT | JSON_ENCODE_ANY);
    uint64_t seq = 0;
    pylon_shard_result r =
        text ? pylon_shard_input(s, sid, text, strlen(text),
                                 json_is_integer(cseq) ? (uint64_t)json_integer_value(cseq) : 0,
                                 &seq)
             : PYLON_SHARD_QUEUE_FULL;
    free(text);
    json_decref(body);
    pylon_shard_release(s);
    if (r == PYLON_SHARD_OK)
        pylon_reply_json(ex, 200, json_pack("{s:b,s:I}", "accepted", 1, "seq", (json_int_t)seq),
                         NULL);
    else
        pylon_http_respond_error(ex, 400, "INPUT_REJECTED",
                                 r == PYLON_SHARD_STOPPED ? "The shard is stopped"
                                                          : "The shard's input queue is full",
                                 NULL);
}

bool pylon_shard_routes(pylon_router *r, pylon_shard_api *api)
{
    return pylon_router_add_inline(r, PYLON_M_POST, "/api/shards", create, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/shards", list, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/shards/:id", get, api) &&
           pylon_router_add_inline(r, PYLON_M_DELETE, "/api/shards/:id", remove_shard, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/shards/:id/input", input, api);
}
