/* sync_api.c — see sync_api.h. */
#include "sync/sync_api.h"

#include "actors/change_tail.h"

#include "actors/ids.h"
#include "actors/json_load.h"
#include "actors/reply.h"
#include "sync/hub.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PULL_DEFAULT 100
#define PULL_MAX     1000
#define PUSH_MAX     1000

static bool query_u64(const char *q, const char *name, int64_t *out)
{
    size_t nl = strlen(name);
    for (const char *p = q; p && *p;) {
        const char *e = strchr(p, '&');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char buf[32];
            size_t vl = len - nl - 1;
            if (vl == 0 || vl >= sizeof buf) return false;
            memcpy(buf, p + nl + 1, vl);
            buf[vl] = '\0';
            char *end;
            long long v = strtoll(buf, &end, 10);
            if (*end || v < 0) return false;
            *out = v;
            return true;
        }
        p = e ? e + 1 : NULL;
    }
    return false;
}

/* ---- pull -------------------------------------------------------------------------------- */

typedef struct pull_job {
    pylon_read_req req;
    pylon_data_api *api;
    pylon_http_exchange *ex;
    pylon_auth_result who;
    int64_t since, limit;
} pull_job;

static void run_pull(pylon_read_req *req, const pylon_store_backend *b, pylon_store_conn *c)
{
    pull_job *j = (pull_job *)req;
    int64_t head = pylon_persistence_head_seq(j->api->writer), seen = 0;
    pylon_store_error err = {0};
    /* The writer sets its head just after its COMMIT, so a reader may already have handed out
     * a newer seq: ask the database before calling a cursor ahead. */
    if (j->since > head && b->head_seq(c, &seen, &err) && seen > head) head = seen;
    /* A cursor ahead of the head comes from another database (or a reset one): it cannot be
     * continued. Any older cursor can (retention keeps each row's latest event and every
     * tombstone, store.h), so unlike the original there is no 410 for falling behind. */
    if (j->since > head) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "cursor last_seq=%lld is ahead of the newest seq=%lld; client must re-sync",
                 (long long)j->since, (long long)head);
        /* protocol.md §1.3: ahead of the head, the oldest valid cursor is head+1. */
        json_t *e = json_pack("{s:{s:s,s:s,s:I}}", "error", "code", "RESYNC_REQUIRED", "message",
                              msg, "oldest_seq", (json_int_t)(head + 1));
        pylon_reply_json(j->ex, 410, e, NULL);
        free(j);
        return;
    }
    json_t *rows = NULL;
    /* The newest events are in memory (a client that keeps up pulls only those); an older
     * cursor reads the durable log. */
    pylon_change_tail *tail = pylon_persistence_tail(j->api->writer);
    if (!(tail && pylon_change_tail_since(tail, j->since, j->limit + 1, &rows)) &&
        !b->changes_since(c, j->since, j->limit + 1, &rows, &err)) {
        pylon_http_respond_error(j->ex, err.status, err.code, err.message, NULL);
        free(j);
        return;
    }
    bool has_more = (int64_t)json_array_size(rows) > j->limit;
    if (has_more) json_array_remove(rows, (size_t)j->limit);
    int64_t last = j->since;
    json_t *changes = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        last = json_integer_value(json_object_get(row, "seq"));
        const char *entity = json_string_value(json_object_get(row, "entity"));
        const pylon_entity *e = pylon_manifest_entity(j->api->m, entity);
        json_t *data = json_object_get(row, "data");
        if (!j->who.id.is_admin) { /* only what this caller may read */
            if (!e) continue;
            pylon_policy_env env = {.auth = &j->who.id, .data = data, .existing = data};
            if (!pylon_policy_check(j->api->policies, entity, PYLON_OP_READ, &env, NULL)) continue;
        }
        char ts[32];
        snprintf(ts, sizeof ts, "%lldZ",
                 (long long)(json_integer_value(json_object_get(row, "ts")) / 1000));
        json_t *ev =
            pylon_change_event_json(entity, json_string_value(json_object_get(row, "row_id")),
                                    json_string_value(json_object_get(row, "kind")),
                                    json_object_get(row, "fields"), data, last, ts);
        if (ev) json_array_append_new(changes, ev);
    }
    json_decref(rows);
    if (j->limit == 0) last = head; /* limit=0: "where is the head?" (SSR hydration) */
    pylon_reply_json(j->ex, 200,
                     json_pack("{s:o,s:{s:I},s:b}", "changes", changes, "cursor", "last_seq",
                               (json_int_t)last, "has_more", has_more && j->limit > 0),
                     NULL);
    free(j);
}

static void pull(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_http_request *req = pylon_http_request_of(ex);
    pull_job *j = calloc(1, sizeof *j);
    if (!j) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    if (!query_u64(req->query, "since", &j->since)) j->since = 0; /* missing/garbled: from 0 */
    if (!query_u64(req->query, "limit", &j->limit)) j->limit = PULL_DEFAULT;
    if (j->limit > PULL_MAX) j->limit = PULL_MAX;
    j->req.run = run_pull;
    j->req.ex = ex;
    j->api = api;
    j->ex = ex;
    pylon_auth_resolve(api->auth, req, &j->who);
    pylon_readers_submit(api->readers, &j->req);
}

/* ---- push -------------------------------------------------------------------------------- */

typedef struct push_ctx {
    pylon_data_api *api;
    pylon_http_exchange *ex;
    pylon_auth_result who;
    char *early_error; /* refused before the write (e.g. insert policy), after the ops sent */
} push_ctx;

static bool push_authorize(pylon_write_req *req, pylon_write_op *op, const json_t *existing,
                           pylon_store_error *err)
{
    push_ctx *p = req->ctx;
    return pylon_data_authorize_write(p->api->policies, &p->who.id, op, existing, err);
}

static void push_done(pylon_write_req *req)
{
    push_ctx *p = req->ctx;
    json_int_t applied = 0, deduped = 0;
    json_t *errors = json_array();
    for (size_t i = 0; i < req->nops; i++) {
        pylon_write_op *op = &req->ops[i];
        if (op->ok && req->committed) {
            applied++;
            deduped += op->deduped;
            continue;
        }
        if (op->err.code) { /* the first failure; what follows was not run */
            char msg[600];
            if (op->kind == PYLON_CHANGE_INSERT)
                snprintf(msg, sizeof msg, "insert %s: %s", op->entity->name, op->err.message);
            else
                snprintf(msg, sizeof msg, "%s %s/%s: %s", pylon_change_kind_name(op->kind),
                         op->entity->name, op->id, op->err.message);
            json_array_append_new(errors, json_string(msg));
        }
        break;
    }
    if (p->early_error && json_array_size(errors) == 0 && applied == (json_int_t)req->nops)
        json_array_append_new(errors, json_string(p->early_error));
    pylon_reply_json(p->ex, 200,
                     json_pack("{s:I,s:I,s:o,s:{s:I}}", "applied", applied, "deduped", deduped,
                               "errors", errors, "cursor", "last_seq",
                               (json_int_t)pylon_persistence_head_seq(p->api->writer)),
                     NULL);
    free(p->early_error);
    free(p);
    pylon_write_req_free(req);
}

static void push(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_http_request *rq = pylon_http_request_of(ex);
    json_error_t jerr;
    json_t *body = pylon_json_loadb((const char *)rq->body, rq->body_len, 0, &jerr);
    json_t *changes = json_object_get(body, "changes");
    if (!body || !json_is_array(changes)) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "INVALID_JSON",
                                 body ? "The body needs a \"changes\" array"
                                      : "Invalid request body",
                                 body ? NULL : jerr.text);
        return;
    }
    size_t n = json_array_size(changes);
    if (n > PUSH_MAX) {
        json_decref(body);
        pylon_http_respond_error(ex, 413, "PAYLOAD_TOO_LARGE", "At most 1000 changes per push",
                                 "push in smaller batches");
        return;
    }
    /* The whole request is refused for a change that is not a change at all. */
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(changes, i);
        const char *kind = json_string_value(json_object_get(c, "kind"));
        if (!json_is_object(c) || !kind ||
            (strcmp(kind, "insert") && strcmp(kind, "update") && strcmp(kind, "delete")) ||
            !json_is_string(json_object_get(c, "entity")) ||
            !json_is_string(json_object_get(c, "row_id"))) {
            char msg[120];
            snprintf(msg, sizeof msg,
                     "changes[%zu]: needs entity, row_id and kind (insert, update or delete)", i);
            json_decref(body);
            pylon_http_respond_error(ex, 400, "INVALID_JSON", msg, NULL);
            return;
        }
    }
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(body);
        return;
    }
    push_ctx *p = calloc(1, sizeof *p);
    pylon_write_req *req = pylon_write_req_new(n);
    if (!p || !req) {
        free(p);
        pylon_write_req_free(req);
        json_decref(body);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    p->api = api;
    p->ex = ex;
    pylon_auth_resolve(api->auth, rq, &p->who);
    /* Ops are taken in order up to the first one refused before the write. A `_pending_` id
     * inserted earlier in the same push stands for the server id it got (the stock clients
     * edit their optimistic rows before the first push lands). */
    size_t used = 0;
    json_t *pending_ids = json_object();
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_array_get(changes, i);
        const char *kind = json_string_value(json_object_get(c, "kind"));
        const char *entity = json_string_value(json_object_get(c, "entity"));
        const char *row_id = json_string_value(json_object_get(c, "row_id"));
        json_t *data = json_object_get(c, "data");
        const char *op_id = json_string_value(json_object_get(c, "op_id"));
        const pylon_entity *e = pylon_manifest_entity(api->m, entity);
        char why[300] = "";
        if (!e)
            snprintf(why, sizeof why, "%s %s: Unknown entity: \"%s\"", kind, entity, entity);
        else if (strcmp(kind, "delete") != 0 && !json_is_object(data))
            snprintf(why, sizeof why, "%s %s/%s: data (an object) is required", kind, entity,
                     row_id);
        else if (strcmp(kind, "insert") == 0 && !p->who.id.is_admin) {
            pylon_policy_env env = {.auth = &p->who.id, .data = data};
            if (!pylon_policy_check(api->policies, entity, PYLON_OP_INSERT, &env, NULL))
                snprintf(why, sizeof why, "insert %s: Access denied by policy", entity);
        }
        if (why[0]) {
            p->early_error = strdup(why);
            break;
        }
        pylon_write_op *op = &req->ops[used++];
        op->kind = kind[0] == 'i'   ? PYLON_CHANGE_INSERT
                   : kind[0] == 'u' ? PYLON_CHANGE_UPDATE
                                    : PYLON_CHANGE_DELETE;
        op->entity = e;
        char fresh[PYLON_ID_LEN + 1];
        if (op->kind == PYLON_CHANGE_INSERT && strncmp(row_id, "_pending_", 9) == 0) {
            pylon_id_new(fresh); /* a placeholder the client replaces on its next pull */
            json_object_set_new(pending_ids, row_id, json_string(fresh));
            row_id = fresh;
        } else if (json_object_get(pending_ids, row_id)) {
            row_id = json_string_value(json_object_get(pending_ids, row_id));
        }
        op->id = strdup(row_id);
        op->op_id = op_id ? strdup(op_id) : NULL;
        if (op->kind != PYLON_CHANGE_DELETE) {
            op->data = json_deep_copy(data);
            json_object_del(op->data, "id");
        }
    }
    json_decref(body);
    json_decref(pending_ids);
    req->nops = used;
    req->stop_on_error = true;
    req->ctx = p;
    req->authorize = push_authorize;
    req->done = push_done;
    pylon_persistence_submit(api->writer, req);
}

bool pylon_sync_routes(pylon_router *r, pylon_data_api *api)
{
    return pylon_router_add_inline(r, PYLON_M_GET, "/api/sync/pull", pull, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/sync/push", push, api);
}
