/* data_api.c — see data_api.h. */
#include "actors/data_api.h"

#include "actors/ids.h"
#include "actors/json_load.h"
#include "actors/reply.h"

#include <stdio.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool pylon_data_admin_routes(pylon_router *r, pylon_data_api *api);

#define LIST_DEFAULT_LIMIT   100
#define CURSOR_DEFAULT_LIMIT 20
#define CURSOR_MAX_LIMIT     100

/* ---- answers ----------------------------------------------------------------------------- */

static void respond_store_error(pylon_http_exchange *ex, const pylon_store_error *err)
{
    const char *hint = NULL;
    if (err->status == 403) hint = "Check your auth token or the policy rules in your schema";
    if (err->status == 503) {
        pylon_http_response res = {
            .status = 503,
            .headers = "Retry-After: 1\r\n",
            .body = pylon_http_error_body(err->code, err->message, "retry in a moment")};
        pylon_http_respond(ex, &res);
        return;
    }
    pylon_http_respond_error(ex, err->status ? err->status : 500,
                             err->code ? err->code : "INTERNAL", err->message, hint);
}

static void deny(pylon_http_exchange *ex)
{
    pylon_http_respond_error(ex, 403, "POLICY_DENIED", "Access denied by policy",
                             "Check your auth token or the policy rules in your schema");
}

/* ---- request helpers --------------------------------------------------------------------- */

static const pylon_entity *entity_or_404(pylon_data_api *api, pylon_http_exchange *ex,
                                         const char *name)
{
    const pylon_entity *e = pylon_manifest_entity(api->m, name);
    if (e) return e;
    char msg[300], hint[600] = "Known entities: ";
    snprintf(msg, sizeof msg, "Unknown entity: \"%.200s\"", name);
    for (size_t i = 0; i < api->m->nentities; i++) {
        size_t n = strlen(hint);
        snprintf(hint + n, sizeof hint - n, "%s%s", i ? ", " : "", api->m->entities[i].name);
    }
    if (api->m->nentities == 0) snprintf(hint, sizeof hint, "The manifest declares no entities");
    pylon_http_respond_error(ex, 404, "ENTITY_NOT_FOUND", msg, hint);
    return NULL;
}

/* The entity named by the route's first parameter (/api/entities/<Entity>/...), or a 404. */
static const pylon_entity *path_entity(pylon_data_api *api, pylon_http_exchange *ex)
{
    char name[128];
    pylon_http_param(ex, 0, name, sizeof name);
    return entity_or_404(api, ex, name);
}

/* The JSON body, or NULL after answering 400. */
static json_t *body_json(pylon_http_exchange *ex, bool want_object)
{
    const pylon_http_request *req = pylon_http_request_of(ex);
    json_error_t jerr;
    json_t *j = pylon_json_loadb((const char *)req->body, req->body_len,
                                 JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!j) {
        char hint[200];
        snprintf(hint, sizeof hint, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        pylon_http_respond_error(ex, 400, "INVALID_JSON", "Invalid request body", hint);
        return NULL;
    }
    if (want_object && !json_is_object(j)) {
        json_decref(j);
        pylon_http_respond_error(ex, 400, "INVALID_DATA", "The body must be a JSON object",
                                 "send {\"field\": value, ...}");
        return NULL;
    }
    return j;
}

/* ?name=<integer>; false after answering 400 when present but malformed. */
static bool query_int(pylon_http_exchange *ex, const char *name, int64_t *out, bool *present)
{
    const char *q = pylon_http_request_of(ex)->query;
    size_t nl = strlen(name);
    *present = false;
    for (const char *p = q; p && *p;) {
        const char *e = strchr(p, '&');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char buf[32];
            size_t vl = len - nl - 1;
            char *end;
            if (vl == 0 || vl >= sizeof buf) goto bad;
            memcpy(buf, p + nl + 1, vl);
            buf[vl] = '\0';
            long long v = strtoll(buf, &end, 10);
            if (*end || v < 0) goto bad;
            *out = v;
            *present = true;
            return true;
        }
        p = e ? e + 1 : NULL;
    }
    return true;
bad : {
    char msg[120];
    snprintf(msg, sizeof msg, "?%s must be a non-negative integer", name);
    pylon_http_respond_error(ex, 400, "INVALID_QUERY", msg, NULL);
    return false;
}
}

static char *query_str(const char *q, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = q; p && *p;) {
        const char *e = strchr(p, '&');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            char *out = malloc(len - nl);
            if (out) pylon_http_pct_decode(p + nl + 1, len - nl - 1, out, len - nl);
            return out;
        }
        p = e ? e + 1 : NULL;
    }
    return NULL;
}

/* ---- read policy ------------------------------------------------------------------------- */

typedef enum { GATE_ALL, GATE_DENY, GATE_PER_ROW } read_gate;

/* Whether rows of `e` are visible to `who`: all, none, or it depends on each row. */
static read_gate gate_for(pylon_data_api *api, const pylon_entity *e, const pylon_identity *who)
{
    if (who->is_admin || !pylon_policy_entity_has_rules(api->policies, e->name, PYLON_OP_READ))
        return GATE_ALL;
    if (pylon_policy_entity_reads_row(api->policies, e->name, PYLON_OP_READ)) return GATE_PER_ROW;
    pylon_policy_env env = {.auth = who};
    return pylon_policy_check(api->policies, e->name, PYLON_OP_READ, &env, NULL) ? GATE_ALL
                                                                                 : GATE_DENY;
}

static bool row_visible(pylon_data_api *api, const pylon_entity *e, const pylon_identity *who,
                        const json_t *row)
{
    pylon_policy_env env = {.auth = who, .data = row, .existing = row};
    return pylon_policy_check(api->policies, e->name, PYLON_OP_READ, &env, NULL);
}

/* Keeps only the visible rows (in place). */
static void filter_rows(pylon_data_api *api, const pylon_entity *e, const pylon_identity *who,
                        json_t *rows)
{
    for (size_t i = json_array_size(rows); i-- > 0;)
        if (!row_visible(api, e, who, json_array_get(rows, i))) json_array_remove(rows, i);
}

/* ---- reads ------------------------------------------------------------------------------- */

/* Rows matching `filter` that `who` may read, with offset/limit applied AFTER the policy
 * (otherwise a page of other people's rows would come back empty). With a row-dependent
 * policy every matching row is read and checked; without one the database pages directly. */
static bool find_visible(pylon_data_api *api, const pylon_store_backend *b, pylon_store_conn *c,
                         const pylon_entity *e, const pylon_identity *who, read_gate gate,
                         const json_t *filter, int64_t offset, int64_t limit, json_t **rows,
                         pylon_store_error *err)
{
    if (gate != GATE_PER_ROW) {
        pylon_store_query q = {.filter = filter, .limit = limit, .offset = offset};
        return b->find(c, e, &q, rows, err);
    }
    json_t *f = filter ? json_copy((json_t *)filter) : NULL;
    if (f) { /* paging moves out of SQL */
        json_t *l = json_object_get(f, "$limit"), *o = json_object_get(f, "$offset");
        if (json_is_integer(l) && (limit < 0 || json_integer_value(l) < limit))
            limit = json_integer_value(l);
        if (json_is_integer(o)) offset = json_integer_value(o);
        json_object_del(f, "$limit");
        json_object_del(f, "$offset");
    }
    pylon_store_query q = {.filter = f, .limit = -1};
    bool ok = b->find(c, e, &q, rows, err);
    json_decref(f);
    if (!ok) return false;
    filter_rows(api, e, who, *rows);
    json_t *page = json_array();
    for (size_t i = (size_t)(offset > 0 ? offset : 0);
         i < json_array_size(*rows) && (limit < 0 || (int64_t)json_array_size(page) < limit); i++)
        json_array_append(page, json_array_get(*rows, i));
    json_decref(*rows);
    *rows = page;
    return true;
}

typedef enum { R_LIST, R_GET, R_CURSOR, R_QUERY, R_LOOKUP, R_AGGREGATE, R_GRAPH } read_kind;

typedef struct read_job {
    pylon_read_req req;
    pylon_data_api *api;
    pylon_http_exchange *ex;
    const pylon_entity *e;
    pylon_auth_result who;
    read_kind kind;
    read_gate gate;
    char *id; /* GET: the id; LOOKUP: the value */
    const pylon_field *field;
    int64_t limit, offset;
    bool has_limit;
    char *after;
    json_t *filter;
} read_job;

static void job_free(read_job *j)
{
    free(j->id);
    free(j->after);
    json_decref(j->filter);
    free(j);
}

static void job_cancelled(pylon_read_req *req)
{
    read_job *j = (read_job *)req;
    pylon_http_respond_error(j->ex, 503, "SHUTTING_DOWN", "The server is shutting down",
                             "retry on another instance");
    job_free(j);
}

/* Related rows for one row: many=false follows row[field] to the target's id. many=true finds
 * the target rows whose `field` equals this row's `field` when this entity has that field too
 * (the original's rule, backend.md §3.6: e.g. the users sharing an orgId), and otherwise the
 * target rows whose `field` holds this row's id (one-to-many: a project's todos by projectId,
 * which the original's rule cannot express). Hidden rows are left out. */
static bool include_relation(read_job *j, const pylon_store_backend *b, pylon_store_conn *c,
                             const pylon_entity *e, const pylon_relation *rel, json_t *row,
                             pylon_store_error *err)
{
    const pylon_entity *t = pylon_manifest_entity(j->api->m, rel->target);
    const pylon_identity *who = &j->who.id;
    read_gate gate = gate_for(j->api, t, who);
    if (!rel->many) {
        const char *tid = json_string_value(json_object_get(row, rel->field));
        json_t *target = NULL;
        if (tid && gate != GATE_DENY && !b->get(c, t, tid, &target, err)) return false;
        if (target && gate == GATE_PER_ROW && !row_visible(j->api, t, who, target)) {
            json_decref(target);
            target = NULL;
        }
        json_object_set_new(row, rel->name, target ? target : json_null());
        return true;
    }
    json_t *rows = json_array();
    json_t *key = pylon_entity_field(e, rel->field) ? json_object_get(row, rel->field)
                                                    : json_object_get(row, "id");
    if (gate != GATE_DENY && key && !json_is_null(key)) {
        json_t *filter = json_pack("{s:O}", rel->field, key);
        pylon_store_query q = {.filter = filter, .limit = -1};
        json_decref(rows);
        bool ok = b->find(c, t, &q, &rows, err);
        json_decref(filter);
        if (!ok) return false;
        if (gate == GATE_PER_ROW) filter_rows(j->api, t, who, rows);
    }
    json_object_set_new(row, rel->name, rows);
    return true;
}

/* POST /api/query {"E": {"where","include","limit"}, ...} (backend.md §3.6). */
static bool run_graph(read_job *j, const pylon_store_backend *b, pylon_store_conn *c, json_t **out,
                      pylon_store_error *err)
{
    json_t *result = json_object();
    const char *name;
    json_t *spec;
    json_object_foreach(j->filter, name, spec)
    {
        const pylon_entity *e = pylon_manifest_entity(j->api->m, name);
        if (!e) {
            json_decref(result);
            return pylon_store_fail(err, 404, "ENTITY_NOT_FOUND", "Unknown entity: \"%s\"", name);
        }
        read_gate gate = gate_for(j->api, e, &j->who.id);
        if (gate == GATE_DENY) {
            json_decref(result);
            return pylon_store_fail(err, 403, "POLICY_DENIED", "Access denied by policy");
        }
        json_t *where = json_is_object(spec) ? json_object_get(spec, "where") : NULL;
        json_t *include = json_is_object(spec) ? json_object_get(spec, "include") : NULL;
        json_t *limit = json_is_object(spec) ? json_object_get(spec, "limit") : NULL;
        if (!json_is_object(spec) || (where && !json_is_object(where)) ||
            (include && !json_is_object(include)) || (limit && !json_is_integer(limit))) {
            json_decref(result);
            return pylon_store_fail(err, 400, "INVALID_QUERY",
                                    "%s: expected {\"where\": {...}, \"include\": {...}, "
                                    "\"limit\": n}",
                                    name);
        }
        json_t *rows = NULL;
        pylon_store_query q = {.filter = where, .limit = -1};
        if (!b->find(c, e, &q, &rows, err)) {
            json_decref(result);
            return false;
        }
        if (gate == GATE_PER_ROW) filter_rows(j->api, e, &j->who.id, rows);
        if (limit)
            while ((json_int_t)json_array_size(rows) > json_integer_value(limit))
                json_array_remove(rows, json_array_size(rows) - 1);
        const char *rname;
        json_t *ignored;
        json_object_foreach(include, rname, ignored)
        {
            const pylon_relation *rel = pylon_entity_relation(e, rname);
            if (!rel) {
                json_decref(rows);
                json_decref(result);
                return pylon_store_fail(err, 400, "RELATION_NOT_FOUND", "%s has no relation \"%s\"",
                                        name, rname);
            }
            size_t i;
            json_t *row;
            json_array_foreach(rows, i, row) if (!include_relation(j, b, c, e, rel, row, err))
            {
                json_decref(rows);
                json_decref(result);
                return false;
            }
        }
        json_object_set_new(result, name, rows);
    }
    *out = result;
    return true;
}

static void run_read(pylon_read_req *req, const pylon_store_backend *b, pylon_store_conn *c)
{
    read_job *j = (read_job *)req;
    pylon_data_api *api = j->api;
    const pylon_identity *who = &j->who.id;
    pylon_store_error err = {0};
    json_t *rows = NULL, *row = NULL;
    switch (j->kind) {
    case R_GET:
        if (j->gate != GATE_PER_ROW && b->get_text) { /* no policy needs the row: text only */
            char *text = NULL;
            size_t len = 0;
            if (!b->get_text(c, j->e, j->id, &text, &len, &err)) break;
            if (!text) {
                pylon_store_fail(&err, 404, "NOT_FOUND", "%s with id \"%s\" not found", j->e->name,
                                 j->id);
                break;
            }
            pylon_http_response res = {.status = 200, .body = pylon_buf_take(text, len)};
            if (res.body)
                pylon_http_respond(j->ex, &res);
            else
                pylon_http_respond_error(j->ex, 503, "OVERLOADED", "Out of memory", NULL);
            job_free(j);
            return;
        }
        if (!b->get(c, j->e, j->id, &row, &err)) break;
        if (!row) {
            pylon_store_fail(&err, 404, "NOT_FOUND", "%s with id \"%s\" not found", j->e->name,
                             j->id);
            break;
        }
        if (j->gate == GATE_PER_ROW && !row_visible(api, j->e, who, row)) {
            json_decref(row);
            deny(j->ex);
            job_free(j);
            return;
        }
        pylon_reply_json(j->ex, 200, row, NULL);
        job_free(j);
        return;
    case R_LOOKUP: {
        json_t *filter = json_object();
        /* the URL's text as the field's type (lookup() checked it parses) */
        pylon_field_type t = j->field ? j->field->type : PYLON_FIELD_STRING;
        json_t *v = t == PYLON_FIELD_INT     ? json_integer(strtoll(j->id, NULL, 10))
                    : t == PYLON_FIELD_FLOAT ? json_real(strtod(j->id, NULL))
                    : t == PYLON_FIELD_BOOL  ? json_boolean(j->id[0] == 't')
                                             : json_string(j->id);
        json_object_set_new(filter, j->field ? j->field->name : "id", v);
        json_object_set_new(filter, "$limit", json_integer(1));
        pylon_store_query q = {.filter = filter, .limit = -1};
        bool ok = b->find(c, j->e, &q, &rows, &err);
        json_decref(filter);
        if (!ok) break;
        if (json_array_size(rows) == 0) {
            pylon_store_fail(&err, 404, "NOT_FOUND", "%s.%s = %s not found", j->e->name,
                             j->field ? j->field->name : "id", j->id);
            break;
        }
        row = json_incref(json_array_get(rows, 0));
        json_decref(rows);
        rows = NULL;
        if (j->gate == GATE_PER_ROW && !row_visible(api, j->e, who, row)) {
            json_decref(row);
            pylon_http_respond_error(j->ex, 403, "POLICY_DENIED", "Access denied by policy", NULL);
            job_free(j);
            return;
        }
        pylon_reply_json(j->ex, 200, row, NULL);
        job_free(j);
        return;
    }
    case R_LIST: {
        if (!find_visible(api, b, c, j->e, who, j->gate, NULL, j->offset,
                          j->has_limit ? j->limit : -1, &rows, &err))
            break;
        json_t *out = json_pack("{s:o,s:I,s:I,s:o}", "data", rows, "count",
                                (json_int_t)json_array_size(rows), "offset", (json_int_t)j->offset,
                                "limit", j->has_limit ? json_integer(j->limit) : json_null());
        pylon_reply_json(j->ex, 200, out, NULL);
        job_free(j);
        return;
    }
    case R_CURSOR: {
        /* Pages by id. With a row-dependent policy, hidden rows are skipped until the page is
         * full, and the cursor is always the id of a row the caller saw. */
        json_t *page = json_array();
        char *after = j->after ? strdup(j->after) : NULL;
        bool exhausted = false, ok = true;
        while (ok && !exhausted && (int64_t)json_array_size(page) <= j->limit) {
            int64_t want = j->limit + 1;
            if (j->gate == GATE_PER_ROW && want < 100) want = 100;
            pylon_store_query q = {.after = after, .limit = want};
            if (!(ok = b->find(c, j->e, &q, &rows, &err))) break;
            exhausted = (int64_t)json_array_size(rows) < want;
            if (json_array_size(rows)) {
                free(after);
                after = strdup(json_string_value(
                    json_object_get(json_array_get(rows, json_array_size(rows) - 1), "id")));
            }
            if (j->gate == GATE_PER_ROW) filter_rows(api, j->e, who, rows);
            size_t k;
            json_t *r;
            json_array_foreach(rows, k, r) if ((int64_t)json_array_size(page) <= j->limit)
                json_array_append(page, r);
            json_decref(rows);
            rows = NULL;
            if (j->gate != GATE_PER_ROW) break; /* one query answers it */
        }
        free(after);
        if (!ok) {
            json_decref(page);
            break;
        }
        bool has_more = (int64_t)json_array_size(page) > j->limit;
        if (has_more) json_array_remove(page, (size_t)j->limit);
        json_t *last =
            json_array_size(page) ? json_array_get(page, json_array_size(page) - 1) : NULL;
        json_t *next = last && has_more ? json_incref(json_object_get(last, "id")) : json_null();
        pylon_reply_json(
            j->ex, 200,
            json_pack("{s:o,s:o,s:b}", "data", page, "next_cursor", next, "has_more", has_more),
            NULL);
        job_free(j);
        return;
    }
    case R_QUERY: {
        if (!find_visible(api, b, c, j->e, who, j->gate, j->filter, 0, -1, &rows, &err)) break;
        pylon_reply_json(j->ex, 200, rows, NULL);
        job_free(j);
        return;
    }
    case R_AGGREGATE:
        if (!b->aggregate(c, j->e, j->filter, &rows, &err)) break;
        pylon_reply_json(j->ex, 200, json_pack("{s:o}", "rows", rows), NULL);
        job_free(j);
        return;
    case R_GRAPH: {
        json_t *out = NULL;
        if (!run_graph(j, b, c, &out, &err)) break;
        pylon_reply_json(j->ex, 200, out, NULL);
        job_free(j);
        return;
    }
    }
    json_decref(rows); /* a failure path may hold a partial result */
    respond_store_error(j->ex, &err);
    job_free(j);
}

static read_job *job_new(pylon_data_api *api, pylon_http_exchange *ex, const pylon_entity *e,
                         read_kind kind)
{
    read_job *j = calloc(1, sizeof *j);
    if (!j) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return NULL;
    }
    j->req.run = run_read;
    j->req.cancelled = job_cancelled;
    j->api = api;
    j->ex = ex;
    j->e = e;
    j->kind = kind;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &j->who);
    j->gate = gate_for(api, e, &j->who.id);
    if (j->gate == GATE_DENY) {
        deny(ex);
        free(j);
        return NULL;
    }
    return j;
}

static void list(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    int64_t limit = LIST_DEFAULT_LIMIT, offset = 0;
    bool has_limit, has_offset;
    if (!query_int(ex, "limit", &limit, &has_limit) ||
        !query_int(ex, "offset", &offset, &has_offset))
        return;
    read_job *j = job_new(api, ex, e, R_LIST);
    if (!j) return;
    j->limit = limit;
    j->has_limit = has_limit;
    j->offset = offset;
    pylon_readers_submit(api->readers, &j->req);
}

static void cursor(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    int64_t limit = CURSOR_DEFAULT_LIMIT;
    bool has;
    if (!query_int(ex, "limit", &limit, &has)) return;
    if (limit > CURSOR_MAX_LIMIT) limit = CURSOR_MAX_LIMIT;
    if (limit == 0) limit = CURSOR_DEFAULT_LIMIT;
    read_job *j = job_new(api, ex, e, R_CURSOR);
    if (!j) return;
    j->limit = limit;
    j->after = query_str(pylon_http_request_of(ex)->query, "after");
    if (j->after && !j->after[0]) {
        free(j->after);
        j->after = NULL;
    }
    pylon_readers_submit(api->readers, &j->req);
}

static void query(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    json_t *filter = body_json(ex, false);
    if (!filter) return;
    if (!json_is_object(filter)) {
        json_decref(filter);
        pylon_http_respond_error(ex, 400, "INVALID_QUERY", "The filter must be a JSON object",
                                 "send {\"field\": value, \"$order\": {...}, \"$limit\": n}");
        return;
    }
    read_job *j = job_new(api, ex, e, R_QUERY);
    if (!j) {
        json_decref(filter);
        return;
    }
    j->filter = filter;
    pylon_readers_submit(api->readers, &j->req);
}

static void lookup(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    char field[128], value[1024];
    pylon_http_param(ex, 1, field, sizeof field);
    pylon_http_param(ex, 2, value, sizeof value);
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    const pylon_field *f = NULL;
    if (strcmp(field, "id") != 0 && !(f = pylon_entity_field(e, field))) {
        char buf[400];
        pylon_http_respond_error(ex, 400, "INVALID_COLUMN",
                                 pylon_entity_unknown_column(e, field, buf, sizeof buf), NULL);
        return;
    }
    /* The value comes as text from the URL; a number or boolean field gets it as such (a
     * unique int, e.g. an order number, is a natural lookup key). */
    if (f && (f->type == PYLON_FIELD_INT || f->type == PYLON_FIELD_FLOAT)) {
        char *end = NULL;
        double d = strtod(value, &end);
        if (!value[0] || *end || (f->type == PYLON_FIELD_INT && d != (double)(long long)d)) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s.%s is %s: \"%.100s\" is not one", e->name, f->name,
                     f->type == PYLON_FIELD_INT ? "an integer" : "a number", value);
            pylon_http_respond_error(ex, 400, "INVALID_QUERY", msg, NULL);
            return;
        }
    } else if (f && f->type == PYLON_FIELD_BOOL) {
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
            char msg[300];
            snprintf(msg, sizeof msg, "%s.%s is a boolean: use true or false, not \"%.100s\"",
                     e->name, f->name, value);
            pylon_http_respond_error(ex, 400, "INVALID_QUERY", msg, NULL);
            return;
        }
    }
    read_job *j = job_new(api, ex, e, R_LOOKUP);
    if (!j) return;
    j->field = f;
    j->id = strdup(value);
    pylon_readers_submit(api->readers, &j->req);
}

/* POST /api/aggregate/E. Aggregates cannot be filtered row by row, so a read policy that
 * depends on the row refuses them (except for the admin) rather than leak totals. */
static void aggregate(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    json_t *spec = body_json(ex, true);
    if (!spec) return;
    read_job *j = job_new(api, ex, e, R_AGGREGATE);
    if (!j) {
        json_decref(spec);
        return;
    }
    if (j->gate == GATE_PER_ROW) {
        json_decref(spec);
        free(j);
        pylon_http_respond_error(ex, 403, "POLICY_DENIED",
                                 "Aggregates need a read policy that does not depend on the row",
                                 "the policy reads data.*: aggregate as admin, or query rows");
        return;
    }
    /* The tenant clamp (backend.md §3.5): a caller with an active tenant sees only its own. */
    if (j->who.id.tenant_id && pylon_entity_field(e, "orgId")) {
        json_t *where = json_object_get(spec, "where");
        if (!json_is_object(where)) {
            where = json_object();
            json_object_set_new(spec, "where", where);
        }
        json_object_set_new(where, "orgId", json_string(j->who.id.tenant_id));
    }
    j->filter = spec;
    pylon_readers_submit(api->readers, &j->req);
}

static void graph(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    json_t *body = body_json(ex, false);
    if (!body) return;
    if (!json_is_object(body)) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "INVALID_QUERY",
                                 "The body must be an object of {\"Entity\": {...}}", NULL);
        return;
    }
    read_job *j = calloc(1, sizeof *j);
    if (!j) {
        json_decref(body);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    j->req.run = run_read;
    j->req.cancelled = job_cancelled;
    j->api = api;
    j->ex = ex;
    j->kind = R_GRAPH;
    j->filter = body;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &j->who);
    pylon_readers_submit(api->readers, &j->req);
}

/* GET /api/entities/E/<id> (the id may contain '/') */
static void get_one(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    char id[1024];
    pylon_http_param(ex, 1, id, sizeof id);
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    read_job *j = job_new(api, ex, e, R_GET);
    if (!j) return;
    j->id = strdup(id);
    pylon_readers_submit(api->readers, &j->req);
}

/* ---- writes ------------------------------------------------------------------------------ */

typedef enum { W_INSERT, W_UPDATE, W_DELETE, W_LINK, W_UNLINK } write_kind;

typedef struct write_ctx {
    pylon_data_api *api;
    pylon_http_exchange *ex;
    pylon_auth_result who;
    write_kind kind;
} write_ctx;

bool pylon_data_authorize_write(const pylon_policy_set *policies, const pylon_identity *who,
                                const pylon_write_op *op, const json_t *existing,
                                pylon_store_error *err)
{
    if (who->is_admin) return true;
    json_t *data = NULL;
    if (op->kind == PYLON_CHANGE_UPDATE) { /* what the row will become */
        data = json_deep_copy(existing);
        json_object_update(data, op->data);
    }
    pylon_policy_env env = {.auth = who, .data = data ? data : existing, .existing = existing};
    bool ok = pylon_policy_check(
        policies, op->entity->name,
        op->kind == PYLON_CHANGE_UPDATE ? PYLON_OP_UPDATE : PYLON_OP_DELETE, &env, NULL);
    json_decref(data);
    return ok || pylon_store_fail(err, 403, "POLICY_DENIED", "Access denied by policy");
}

/* Inside the transaction, with the stored row: the update/delete policy. */
static bool authorize(pylon_write_req *req, pylon_write_op *op, const json_t *existing,
                      pylon_store_error *err)
{
    write_ctx *w = req->ctx;
    return pylon_data_authorize_write(w->api->policies, &w->who.id, op, existing, err);
}

/* 201 {"id":"…"}: written directly when the id needs no escaping (always for server ids),
 * since this answers every insert on the writer's thread. */
static void reply_created(pylon_http_exchange *ex, const char *id)
{
    size_t n = strlen(id);
    bool plain = n <= 200;
    for (size_t i = 0; plain && i < n; i++)
        plain = isalnum((unsigned char)id[i]) || strchr("-_.:", id[i]);
    if (!plain) {
        pylon_reply_json(ex, 201, json_pack("{s:s}", "id", id), NULL);
        return;
    }
    char body[224]; /* {"id":"<id>"} */
    memcpy(body, "{\"id\":\"", 7);
    memcpy(body + 7, id, n);
    memcpy(body + 7 + n, "\"}", 3);
    pylon_http_respond_json(ex, 201, body);
}

static void write_done(pylon_write_req *req)
{
    write_ctx *w = req->ctx;
    pylon_write_op *op = &req->ops[0];
    if (!op->ok) {
        respond_store_error(w->ex, &op->err);
    } else if (w->kind == W_INSERT) {
        reply_created(w->ex, op->id);
    } else if (w->kind == W_LINK || w->kind == W_UNLINK) {
        pylon_http_respond_json(w->ex, 200,
                                w->kind == W_LINK ? "{\"linked\":true}" : "{\"unlinked\":true}");
    } else if (w->kind == W_UPDATE) {
        pylon_http_respond_json(w->ex, 200, "{\"updated\":true}");
    } else {
        pylon_http_respond_json(w->ex, 200, "{\"deleted\":true}");
    }
    free(w);
    pylon_write_req_free(req);
}

static void submit_write(pylon_data_api *api, pylon_http_exchange *ex, const pylon_entity *e,
                         write_kind kind, const char *id, json_t *data,
                         const pylon_auth_result *who)
{
    pylon_write_req *req = pylon_write_req_new(1);
    write_ctx *w = calloc(1, sizeof *w);
    char *idc = strdup(id);
    if (!req || !w || !idc) {
        pylon_write_req_free(req);
        free(w);
        free(idc);
        json_decref(data);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    w->api = api;
    w->ex = ex;
    w->who = *who;
    w->who.id.user_id = who->id.user_id ? w->who.user_id : NULL;
    w->who.id.tenant_id = who->id.tenant_id ? w->who.tenant_id : NULL;
    w->kind = kind;
    pylon_write_op *op = &req->ops[0];
    op->kind = kind == W_INSERT   ? PYLON_CHANGE_INSERT
               : kind == W_DELETE ? PYLON_CHANGE_DELETE
                                  : PYLON_CHANGE_UPDATE; /* update, link, unlink */
    op->entity = e;
    op->id = idc;
    op->data = data;
    req->ctx = w;
    req->authorize = authorize;
    req->done = write_done;
    pylon_persistence_submit(api->writer, req);
}

static void insert(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    json_t *body = body_json(ex, true);
    if (!body) return;
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &who);
    pylon_policy_env env = {.auth = &who.id, .data = body};
    if (!pylon_policy_check(api->policies, e->name, PYLON_OP_INSERT, &env, NULL)) {
        json_decref(body);
        deny(ex);
        return;
    }
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(body);
        return;
    }
    /* A client id is kept (offline clients create rows with their own ids), unless it is a
     * placeholder the SDK means to replace. */
    char id[PYLON_ID_LEN + 1];
    const char *use = NULL;
    json_t *cid = json_object_get(body, "id");
    if (cid && !json_is_null(cid)) {
        if (!json_is_string(cid) || json_string_length(cid) == 0 || json_string_length(cid) > 256) {
            json_decref(body);
            pylon_http_respond_error(ex, 400, "INVALID_DATA",
                                     "id must be a non-empty string of at most 256 bytes", NULL);
            return;
        }
        if (strncmp(json_string_value(cid), "_pending_", 9) != 0) use = json_string_value(cid);
    }
    if (!use) {
        pylon_id_new(id);
        use = id;
    }
    char *keep = strdup(use);
    json_object_del(body, "id");
    submit_write(api, ex, e, W_INSERT, keep ? keep : use, body, &who);
    free(keep);
}

static void update_or_delete(pylon_http_exchange *ex, void *ctx, write_kind kind)
{
    pylon_data_api *api = ctx;
    char id[1024];
    pylon_http_param(ex, 1, id, sizeof id);
    const pylon_entity *e = path_entity(api, ex);
    if (!e) return;
    json_t *body = NULL;
    if (kind == W_UPDATE) {
        if (!(body = body_json(ex, true))) return;
        json_object_del(body, "id");
    }
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(body);
        return;
    }
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &who);
    submit_write(api, ex, e, kind, id, body, &who);
}

static void update(pylon_http_exchange *ex, void *ctx)
{
    update_or_delete(ex, ctx, W_UPDATE);
}

static void delete_one(pylon_http_exchange *ex, void *ctx)
{
    update_or_delete(ex, ctx, W_DELETE);
}

bool pylon_data_routes(pylon_router *r, pylon_data_api *api)
{
    return pylon_router_add_inline(r, PYLON_M_GET, "/api/entities/:entity/cursor", cursor, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/entities/:entity", list, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/entities/:entity", insert, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/entities/:entity/*", get_one, api) &&
           pylon_router_add_inline(r, PYLON_M_PATCH, "/api/entities/:entity/*", update, api) &&
           pylon_router_add_inline(r, PYLON_M_DELETE, "/api/entities/:entity/*", delete_one, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/query/:entity", query, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/query", graph, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/aggregate/:entity", aggregate, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/lookup/:entity/:field/*", lookup, api) &&
           pylon_data_admin_routes(r, api);
}

/* ---- admin: batch, transact, import, export; links ---------------------------------------- */

#define MAX_BATCH_OPS 1000

static bool require_admin(pylon_data_api *api, pylon_http_exchange *ex, pylon_auth_result *who)
{
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), who);
    if (who->id.is_admin) return true;
    pylon_http_respond_error(ex, 403, "FORBIDDEN",
                             "this endpoint requires admin auth (PYLON_ADMIN_TOKEN)",
                             "send Authorization: Bearer <PYLON_ADMIN_TOKEN>");
    return false;
}

/* Fills `op` from {"op","entity","id"?,"data"?}; false with a reason for the client. */
static bool parse_op(pylon_data_api *api, const json_t *o, pylon_write_op *op, char *why,
                     size_t cap)
{
    const char *kind = json_string_value(json_object_get(o, "op"));
    const char *ent = json_string_value(json_object_get(o, "entity"));
    json_t *id = json_object_get(o, "id"), *data = json_object_get(o, "data");
    if (!json_is_object(o)) return snprintf(why, cap, "each operation must be an object"), false;
    int k = -1;
    for (int i = 0; kind && i < PYLON_CHANGE_KINDS; i++)
        if (strcmp(kind, pylon_change_kind_name((pylon_change_kind)i)) == 0) k = i;
    if (k < 0) return snprintf(why, cap, "unknown operation"), false;
    op->kind = (pylon_change_kind)k;
    if (!ent || !(op->entity = pylon_manifest_entity(api->m, ent)))
        return snprintf(why, cap, "Unknown entity: \"%.100s\"", ent ? ent : ""), false;
    if (k != PYLON_CHANGE_INSERT && !json_is_string(id))
        return snprintf(why, cap, "%s needs an \"id\"", kind), false;
    if (k != PYLON_CHANGE_DELETE && !json_is_object(data))
        return snprintf(why, cap, "%s needs a \"data\" object", kind), false;
    char fresh[PYLON_ID_LEN + 1];
    const char *use = json_is_string(id) ? json_string_value(id) : NULL;
    if (k == PYLON_CHANGE_INSERT && (!use || strncmp(use, "_pending_", 9) == 0)) {
        pylon_id_new(fresh);
        use = fresh;
    }
    op->id = strdup(use);
    if (k != PYLON_CHANGE_DELETE) {
        op->data = json_deep_copy(data);
        json_object_del(op->data, "id");
    }
    return op->id != NULL;
}

typedef struct admin_ctx {
    pylon_data_api *api;
    pylon_http_exchange *ex;
    enum { A_BATCH, A_TRANSACT, A_IMPORT } kind;
    json_t *results; /* batch: pre-filled entries for ops refused before the write */
    size_t *slot;    /* batch: result index of each submitted op */
} admin_ctx;

static json_t *op_result(const pylon_write_op *op)
{
    json_t *r = json_pack("{s:s}", "op", pylon_change_kind_name(op->kind));
    if (op->id) json_object_set_new(r, "id", json_string(op->id));
    if (op->ok)
        json_object_set_new(r, "ok", json_true());
    else {
        json_object_set_new(r, "ok", json_false());
        json_object_set_new(r, "error",
                            json_string(op->err.message[0] ? op->err.message : "not executed"));
        if (op->err.code) json_object_set_new(r, "code", json_string(op->err.code));
    }
    return r;
}

static void admin_done(pylon_write_req *req)
{
    admin_ctx *a = req->ctx;
    if (a->kind == A_TRANSACT) {
        bool all = req->committed;
        json_t *results = json_array();
        for (size_t i = 0; i < req->nops; i++) {
            all = all && req->ops[i].ok;
            json_t *r = json_pack("{s:s}", "op", pylon_change_kind_name(req->ops[i].kind));
            if (all || req->ops[i].ok)
                json_object_set_new(r, "id", json_string(req->ops[i].id));
            else
                json_object_set_new(
                    r, "error",
                    json_string(req->ops[i].err.code
                                    ? req->ops[i].err.message
                                    : "not applied: the transaction was rolled back"));
            json_array_append_new(results, r);
        }
        pylon_reply_json(a->ex, all ? 200 : 400,
                         json_pack("{s:b,s:o}", "committed", all, "results", results), NULL);
    } else if (a->kind == A_BATCH) {
        size_t ok = 0, failed = 0;
        for (size_t i = 0; i < req->nops; i++)
            json_array_set_new(a->results, a->slot[i], op_result(&req->ops[i]));
        for (size_t i = 0; i < json_array_size(a->results); i++)
            json_is_true(json_object_get(json_array_get(a->results, i), "ok")) ? ok++ : failed++;
        pylon_reply_json(a->ex, 200,
                         json_pack("{s:O,s:I,s:I}", "results", a->results, "succeeded",
                                   (json_int_t)ok, "failed", (json_int_t)failed),
                         NULL);
    } else { /* import: counts per entity */
        json_t *by = json_object();
        size_t ok = 0, failed = 0;
        for (size_t i = 0; i < req->nops; i++) {
            const char *name = req->ops[i].entity->name;
            json_t *e = json_object_get(by, name);
            if (!e) {
                e = json_pack("{s:s,s:i,s:i}", "entity", name, "inserted", 0, "failed", 0);
                json_object_set_new(by, name, e);
            }
            const char *k = req->ops[i].ok ? "inserted" : "failed";
            json_object_set_new(e, k, json_integer(json_integer_value(json_object_get(e, k)) + 1));
            req->ops[i].ok ? ok++ : failed++;
        }
        json_t *list = json_array();
        const char *key;
        json_t *v;
        json_object_foreach(by, key, v) json_array_append(list, v);
        json_decref(by);
        pylon_reply_json(a->ex, 200,
                         json_pack("{s:I,s:I,s:o}", "imported", (json_int_t)ok, "failed",
                                   (json_int_t)failed, "by_entity", list),
                         NULL);
    }
    json_decref(a->results);
    free(a->slot);
    free(a);
    pylon_write_req_free(req);
}

static void batch_or_transact(pylon_http_exchange *ex, void *ctx, bool atomic)
{
    pylon_data_api *api = ctx;
    pylon_auth_result who;
    if (!require_admin(api, ex, &who)) return;
    json_t *body = body_json(ex, false);
    if (!body) return;
    json_t *ops = atomic ? body : json_object_get(body, "operations");
    if (!json_is_array(ops)) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, atomic ? "INVALID_DATA" : "MISSING_OPERATIONS",
                                 atomic ? "The body must be a JSON array of operations"
                                        : "The body needs an \"operations\" array",
                                 NULL);
        return;
    }
    size_t n = json_array_size(ops);
    if (n > MAX_BATCH_OPS) {
        json_decref(body);
        char msg[120];
        snprintf(msg, sizeof msg, "%zu operations in one request: at most %d", n, MAX_BATCH_OPS);
        pylon_http_respond_error(ex, 413, "PAYLOAD_TOO_LARGE", msg, "split it into several");
        return;
    }
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(body);
        return;
    }
    pylon_write_req *req = pylon_write_req_new(n);
    admin_ctx *a = calloc(1, sizeof *a);
    size_t *slot = calloc(n ? n : 1, sizeof *slot);
    json_t *results = json_array();
    if (!req || !a || !slot || !results) {
        pylon_write_req_free(req);
        free(a);
        free(slot);
        json_decref(results);
        json_decref(body);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        char why[200];
        pylon_write_op op = {0};
        if (parse_op(api, json_array_get(ops, i), &op, why, sizeof why)) {
            req->ops[used] = op;
            slot[used++] = i;
            json_array_append_new(results, json_null());
            continue;
        }
        free(op.id);
        json_decref(op.data);
        if (atomic) { /* nothing runs when one operation is malformed */
            char msg[260];
            snprintf(msg, sizeof msg, "operation %zu: %s", i, why);
            req->nops = used;
            pylon_write_req_free(req);
            free(a);
            free(slot);
            json_decref(results);
            json_decref(body);
            pylon_http_respond_error(ex, 400, "INVALID_DATA", msg, NULL);
            return;
        }
        const char *k = json_string_value(json_object_get(json_array_get(ops, i), "op"));
        json_array_append_new(results,
                              json_pack("{s:s,s:b,s:s}", "op", k ? k : "?", "ok", 0, "error", why));
    }
    json_decref(body);
    req->nops = used;
    req->atomic = atomic;
    a->api = api;
    a->ex = ex;
    a->kind = atomic ? A_TRANSACT : A_BATCH;
    a->results = results;
    a->slot = slot;
    req->ctx = a;
    req->done = admin_done; /* admin: no policy (backend.md §3.7, §3.8) */
    pylon_persistence_submit(api->writer, req);
}

static void batch(pylon_http_exchange *ex, void *ctx)
{
    batch_or_transact(ex, ctx, false);
}

static void transact(pylon_http_exchange *ex, void *ctx)
{
    batch_or_transact(ex, ctx, true);
}

static void import_rows(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    pylon_auth_result who;
    if (!require_admin(api, ex, &who)) return;
    json_t *body = body_json(ex, true);
    if (!body) return;
    json_t *ents = json_object_get(body, "entities");
    if (!json_is_object(ents)) {
        json_decref(body);
        pylon_http_respond_error(ex, 400, "MISSING_FIELD",
                                 "The body needs \"entities\": {\"Entity\": [rows]}", NULL);
        return;
    }
    size_t n = 0;
    const char *name;
    json_t *rows;
    json_object_foreach(ents, name, rows)
    {
        const pylon_entity *e = pylon_manifest_entity(api->m, name);
        if (!e || !json_is_array(rows)) {
            char msg[200]; /* `name` lives in `body`: format before letting it go */
            snprintf(msg, sizeof msg, "entities.%.100s: %s", name,
                     e ? "must be an array of rows" : "unknown entity");
            json_decref(body);
            pylon_http_respond_error(ex, 400, "INVALID_DATA", msg, NULL);
            return;
        }
        n += json_array_size(rows);
    }
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(body);
        return;
    }
    pylon_write_req *req = pylon_write_req_new(n);
    admin_ctx *a = calloc(1, sizeof *a);
    if (!req || !a) {
        pylon_write_req_free(req);
        free(a);
        json_decref(body);
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    size_t k = 0;
    json_object_foreach(ents, name, rows)
    {
        const pylon_entity *e = pylon_manifest_entity(api->m, name);
        size_t i;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            pylon_write_op *op = &req->ops[k++];
            op->kind = PYLON_CHANGE_INSERT;
            op->entity = e;
            op->data = json_is_object(row) ? json_deep_copy(row) : json_object();
            json_object_del(op->data, "__internal__");
            /* Exported rows keep their ids, so links between them survive a round trip. */
            const char *id = json_string_value(json_object_get(op->data, "id"));
            char fresh[PYLON_ID_LEN + 1];
            if (!id || strncmp(id, "_pending_", 9) == 0) {
                pylon_id_new(fresh);
                id = fresh;
            }
            op->id = strdup(id);
            json_object_del(op->data, "id");
        }
    }
    json_decref(body);
    a->api = api;
    a->ex = ex;
    a->kind = A_IMPORT;
    req->ctx = a;
    req->done = admin_done;
    pylon_persistence_submit(api->writer, req);
}

/* Export runs on a reader: one consistent snapshot per entity. */
typedef struct export_job {
    pylon_read_req req;
    pylon_data_api *api;
    pylon_http_exchange *ex;
    const pylon_entity *only; /* NULL: every entity */
} export_job;

static void run_export(pylon_read_req *req, const pylon_store_backend *b, pylon_store_conn *c)
{
    export_job *j = (export_job *)req;
    json_t *ents = json_object(), *counts = json_object();
    pylon_store_error err = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < j->api->m->nentities; i++) {
        const pylon_entity *e = &j->api->m->entities[i];
        if (j->only && e != j->only) continue;
        json_t *rows = NULL;
        pylon_store_query q = {.limit = -1};
        if (!(ok = b->find(c, e, &q, &rows, &err))) break;
        json_object_set_new(counts, e->name, json_integer((json_int_t)json_array_size(rows)));
        json_object_set_new(ents, e->name, rows);
    }
    if (!ok) {
        json_decref(ents);
        json_decref(counts);
        respond_store_error(j->ex, &err);
    } else {
        char ts[40];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        pylon_reply_json(
            j->ex, 200,
            json_pack("{s:s,s:o,s:o}", "exported_at", ts, "entities", ents, "counts", counts),
            NULL);
    }
    free(j);
}

static void export_rows(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    pylon_auth_result who;
    if (!require_admin(api, ex, &who)) return;
    const pylon_entity *only = NULL;
    char name[128];
    if (pylon_http_param(ex, 0, name, sizeof name) && !(only = entity_or_404(api, ex, name)))
        return;
    export_job *j = calloc(1, sizeof *j);
    if (!j) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    j->req.run = run_export;
    j->req.ex = ex;
    j->api = api;
    j->ex = ex;
    j->only = only;
    pylon_readers_submit(api->readers, &j->req);
}

/* POST /api/link {"entity","id","relation","target_id"}, /api/unlink without target_id. */
static void link_or_unlink(pylon_http_exchange *ex, void *ctx, bool link)
{
    pylon_data_api *api = ctx;
    json_t *body = body_json(ex, true);
    if (!body) return;
    const char *ent = json_string_value(json_object_get(body, "entity"));
    const char *id = json_string_value(json_object_get(body, "id"));
    const char *rel = json_string_value(json_object_get(body, "relation"));
    json_t *target = json_object_get(body, "target_id");
    const pylon_entity *e = ent ? entity_or_404(api, ex, ent) : NULL;
    if (!ent) pylon_http_respond_error(ex, 400, "MISSING_FIELD", "\"entity\" is required", NULL);
    if (!e) {
        json_decref(body);
        return;
    }
    const pylon_relation *r = rel ? pylon_entity_relation(e, rel) : NULL;
    if (!id || !r || r->many || (link && !json_is_string(target))) {
        const char *why = !id       ? "\"id\" is required"
                          : !r      ? "Unknown relation"
                          : r->many ? "A to-many relation is set on the target rows"
                                    : "\"target_id\" (a string) is required";
        pylon_http_respond_error(ex, 400, !r && id ? "RELATION_NOT_FOUND" : "MISSING_FIELD", why,
                                 NULL);
        json_decref(body);
        return;
    }
    pylon_auth_result who;
    pylon_auth_resolve(api->auth, pylon_http_request_of(ex), &who);
    pylon_policy_env env = {.auth = &who.id, .data = body};
    if (!pylon_policy_check(api->policies, e->name, PYLON_OP_INSERT, &env, NULL)) {
        json_decref(body);
        deny(ex);
        return;
    }
    json_t *patch = json_pack("{s:O}", r->field, link ? target : json_null());
    char *idc = strdup(id);
    json_decref(body);
    if (pylon_reply_if_writer_busy(api->writer, ex)) {
        json_decref(patch);
        free(idc);
        return;
    }
    submit_write(api, ex, e, link ? W_LINK : W_UNLINK, idc ? idc : "", patch, &who);
    free(idc);
}

static void link_rows(pylon_http_exchange *ex, void *ctx)
{
    link_or_unlink(ex, ctx, true);
}

static void unlink_rows(pylon_http_exchange *ex, void *ctx)
{
    link_or_unlink(ex, ctx, false);
}

/* POST /api/__test__/reset: dev + in-memory database + a loopback peer, nothing else. */
static void reset_done(pylon_write_req *req)
{
    pylon_http_exchange *ex = req->ctx;
    if (req->committed && req->ops[0].ok)
        pylon_reply_json(ex, 200, json_pack("{s:b}", "reset", 1), NULL);
    else
        pylon_http_respond_error(ex, 500, "RESET_FAILED", req->ops[0].err.message, NULL);
    pylon_write_req_free(req);
}

static void test_reset(pylon_http_exchange *ex, void *ctx)
{
    pylon_data_api *api = ctx;
    if (!api->reset_allowed || !pylon_http_request_of(ex)->peer_is_loopback) {
        pylon_http_respond_error(ex, 403, "RESET_REFUSED",
                                 "reset endpoint is only available in dev mode + in-memory DB + "
                                 "from loopback",
                                 "run `PYLON_DB_PATH=:memory: pylon dev` for tests");
        return;
    }
    pylon_write_req *req = pylon_write_req_new(1);
    if (!req) {
        pylon_http_respond_error(ex, 503, "OVERLOADED", "Out of memory", NULL);
        return;
    }
    req->reset = true;
    req->ctx = ex;
    req->done = reset_done;
    pylon_persistence_submit(api->writer, req);
}

static bool pylon_data_admin_routes(pylon_router *r, pylon_data_api *api)
{
    if (!pylon_router_add_inline(r, PYLON_M_POST, "/api/__test__/reset", test_reset, api))
        return false;
    return pylon_router_add_inline(r, PYLON_M_POST, "/api/batch", batch, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/transact", transact, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/import", import_rows, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/export", export_rows, api) &&
           pylon_router_add_inline(r, PYLON_M_GET, "/api/export/:entity", export_rows, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/link", link_rows, api) &&
           pylon_router_add_inline(r, PYLON_M_POST, "/api/unlink", unlink_rows, api);
}
