/*
 * manifest.c — load and validate the manifest (see manifest.h for the rules).
 *
 * Two passes. The first walks the JSON and fills the C structures, reporting shape errors
 * (missing key, wrong JSON type, unknown field type); a value that fails is left NULL so the
 * second pass, which checks names and cross references, skips it instead of piling a second
 * error onto the first. Every string and array lives in the manifest's arena, so freeing is
 * one walk over a few chunks and no struct needs its own destructor.
 */
#include "actors/manifest.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- arena ---------------------------------------------------------------------------------- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct pylon_manifest_arena {
    chunk *head;
    bool oom; /* an allocation failed: the parse fails with "out of memory" */
};

#define CHUNK_BYTES 8192

/* Zeroed memory that lives as long as the arena. NULL (and a->oom) when out of memory. */
static void *arena_alloc(struct pylon_manifest_arena *a, size_t n)
{
    if (n == 0) return NULL;
    size_t align = _Alignof(max_align_t);
    if (n > SIZE_MAX - align) {
        a->oom = true;
        return NULL;
    }
    n = (n + align - 1) / align * align;
    chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > CHUNK_BYTES ? n : CHUNK_BYTES;
        c = malloc(sizeof *c + cap);
        if (!c) {
            a->oom = true;
            return NULL;
        }
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

/* Array of n elements; NULL when n is 0 (callers store the count beside it). */
static void *arena_array(struct pylon_manifest_arena *a, size_t n, size_t size)
{
    if (n > SIZE_MAX / size) {
        a->oom = true;
        return NULL;
    }
    return arena_alloc(a, n * size);
}

/* Copy of s[0..n); "" when out of memory (a->oom says so), so callers never see NULL. */
static const char *arena_strn(struct pylon_manifest_arena *a, const char *s, size_t n)
{
    if (n == SIZE_MAX) {
        a->oom = true;
        return "";
    }
    char *p = arena_alloc(a, n + 1);
    if (!p) return "";
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void arena_free(struct pylon_manifest_arena *a)
{
    if (!a) return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* ---- error list ----------------------------------------------------------------------------- */

static pylon_manifest_errors *errors_new(void)
{
    return calloc(1, sizeof(pylon_manifest_errors));
}

/* Adds "<path>: <cause>". Past PYLON_MANIFEST_MAX_ERRORS only the total grows. */
static void errors_addv(pylon_manifest_errors *e, const char *code, const char *path,
                        const char *fmt, va_list ap)
{
    if (!e) return;
    e->total++;
    if (e->count >= PYLON_MANIFEST_MAX_ERRORS) return;
    if (!e->items) {
        e->items = calloc(PYLON_MANIFEST_MAX_ERRORS, sizeof *e->items);
        if (!e->items) return;
    }
    char *cause = NULL, *msg = NULL, *p = strdup(path);
    if (vasprintf(&cause, fmt, ap) < 0) cause = NULL;
    /* Document-level errors (syntax, file) carry their own context: no path prefix. */
    if (cause && p && !*path) {
        msg = cause;
        cause = NULL;
    } else if (cause && p && asprintf(&msg, "%s: %s", path, cause) < 0) {
        msg = NULL;
    }
    free(cause);
    if (!msg || !p) {
        free(msg);
        free(p);
        return;
    }
    e->items[e->count++] = (pylon_manifest_error){.code = code, .path = p, .message = msg};
}

static void errors_add(pylon_manifest_errors *e, const char *code, const char *path,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void errors_add(pylon_manifest_errors *e, const char *code, const char *path,
                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errors_addv(e, code, path, fmt, ap);
    va_end(ap);
}

/* Joins the messages into e->text (NULL if that allocation fails). */
static void errors_finish(pylon_manifest_errors *e)
{
    size_t n = 64;
    for (size_t i = 0; i < e->count; i++)
        n += strlen(e->items[i].message) + 1;
    char *t = malloc(n);
    if (!t) return;
    size_t off = 0;
    for (size_t i = 0; i < e->count; i++) {
        size_t l = strlen(e->items[i].message);
        memcpy(t + off, e->items[i].message, l);
        off += l;
        t[off++] = '\n';
    }
    if (e->total > e->count)
        off += (size_t)snprintf(t + off, n - off, "... and %zu more errors\n", e->total - e->count);
    if (off > 0) off--; /* no trailing newline */
    t[off] = '\0';
    e->text = t;
}

void pylon_manifest_errors_free(pylon_manifest_errors *errs)
{
    if (!errs) return;
    for (size_t i = 0; i < errs->count; i++) {
        free(errs->items[i].path);
        free(errs->items[i].message);
    }
    free(errs->items);
    free(errs->text);
    free(errs);
}

const char *pylon_manifest_errors_text(const pylon_manifest_errors *errs)
{
    return errs && errs->text ? errs->text : "out of memory";
}

/* ---- parse context -------------------------------------------------------------------------- */

#define PATH_MAX_LEN 256
#define QBUFS        4
#define QLEN         80

typedef struct ctx {
    pylon_manifest *m;
    struct pylon_manifest_arena *a;
    pylon_manifest_errors *errs;
    char path[PATH_MAX_LEN]; /* JSON path of the value being looked at */
    size_t plen;
    char qbuf[QBUFS][QLEN]; /* rotating buffers for quoted values in messages */
    unsigned qnext;
} ctx;

/* Appends a path segment; returns the previous length, which path_pop restores. The keys are
 * ours and indexes are short, so the buffer only overflows on absurd nesting: truncate then. */
static size_t path_push_key(ctx *c, const char *key)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "%s%s", c->plen ? "." : "", key);
    if (n > 0) c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : 0;
    return old;
}

static size_t path_push_index(ctx *c, size_t i)
{
    size_t old = c->plen;
    int n = snprintf(c->path + c->plen, sizeof c->path - c->plen, "[%zu]", i);
    if (n > 0) c->plen += (size_t)n < sizeof c->path - c->plen ? (size_t)n : 0;
    return old;
}

static void path_pop(ctx *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}

static void err(ctx *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err(ctx *c, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    errors_addv(c->errs, code, c->path, fmt, ap);
    va_end(ap);
}

/* Error at path + "." + key, without disturbing the current path. */
static void err_at(ctx *c, const char *key, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void err_at(ctx *c, const char *key, const char *code, const char *fmt, ...)
{
    size_t old = path_push_key(c, key);
    va_list ap;
    va_start(ap, fmt);
    errors_addv(c->errs, code, c->path, fmt, ap);
    va_end(ap);
    path_pop(c, old);
}

/* A user value ready to print inside double quotes: quotes, backslashes and control bytes
 * escaped, long values cut (a 1 MB name should not become a 1 MB log line). */
static const char *q(ctx *c, const char *s)
{
    char *b = c->qbuf[c->qnext++ % QBUFS];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o + 8 >= QLEN) {
            memcpy(b + o, "...", 4);
            return b;
        }
        if (*p == '"' || *p == '\\') {
            b[o++] = '\\';
            b[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(b + o, QLEN - o, "\\x%02x", *p);
        } else {
            b[o++] = (char)*p;
        }
    }
    b[o] = '\0';
    return b;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

/* ---- typed getters -------------------------------------------------------------------------- */

typedef enum want { W_STRING, W_BOOL, W_INT, W_ARRAY, W_OBJECT } want;

static const char *want_name(want w)
{
    static const char *const names[] = {"a string", "a boolean", "an integer", "an array",
                                        "an object"};
    return names[w];
}

static bool is_want(const json_t *v, want w)
{
    switch (w) {
    case W_STRING:
        return json_is_string(v);
    case W_BOOL:
        return json_is_boolean(v);
    case W_INT:
        return json_is_integer(v);
    case W_ARRAY:
        return json_is_array(v);
    case W_OBJECT:
        return json_is_object(v);
    }
    return false;
}

/* obj[key] when it has the wanted type. Absent (or null, for optional keys) → NULL, with an
 * error only when required; a wrong type → NULL and an error. */
static json_t *get(ctx *c, const json_t *obj, const char *key, want w, bool required)
{
    json_t *v = json_object_get(obj, key);
    if (!v || (json_is_null(v) && !required)) {
        if (required)
            err_at(c, key, "MANIFEST_PARSE_ERROR", "missing (required, %s)", want_name(w));
        return NULL;
    }
    if (!is_want(v, w)) {
        err_at(c, key, "MANIFEST_PARSE_ERROR", "expected %s, got %s", want_name(w), json_kind(v));
        return NULL;
    }
    return v;
}

/* Arena copy of a string value. jansson refuses \u0000 (no JSON_ALLOW_NUL), so C strings are
 * never cut short. */
static const char *str_value(ctx *c, const json_t *v)
{
    return arena_strn(c->a, json_string_value(v), json_string_length(v));
}

static const char *get_str(ctx *c, const json_t *obj, const char *key, bool required)
{
    json_t *v = get(c, obj, key, W_STRING, required);
    return v ? str_value(c, v) : NULL;
}

static bool get_bool(ctx *c, const json_t *obj, const char *key, bool required, bool def)
{
    json_t *v = get(c, obj, key, W_BOOL, required);
    return v ? json_is_true(v) : def;
}

/* A string array as an arena array (NULL when empty). Non-string elements are errors. */
static const char *const *get_str_array(ctx *c, const json_t *obj, const char *key, bool required,
                                        size_t *n)
{
    *n = 0;
    json_t *arr = get(c, obj, key, W_ARRAY, required);
    if (!arr) return NULL;
    size_t len = json_array_size(arr);
    const char **out = arena_array(c->a, len, sizeof *out);
    if (!out) return NULL;
    size_t old = path_push_key(c, key);
    for (size_t i = 0; i < len; i++) {
        json_t *v = json_array_get(arr, i);
        size_t o2 = path_push_index(c, i);
        if (json_is_string(v))
            out[i] = str_value(c, v);
        else
            err(c, "MANIFEST_PARSE_ERROR", "expected a string, got %s", json_kind(v));
        path_pop(c, o2);
    }
    path_pop(c, old);
    *n = len;
    return out;
}

/* ---- names ---------------------------------------------------------------------------------- */

bool pylon_manifest_is_identifier(const char *s)
{
    if (!s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
    return true;
}

/* A set of names keyed case-insensitively (SQLite's identifier rule), remembering the index
 * of the first holder. A jansson object is the hash table; keys are lower-cased copies. */
static long nameset_add(json_t *set, const char *name, size_t index, bool *oom)
{
    size_t n = strlen(name);
    char stackbuf[128];
    char *k = n < sizeof stackbuf ? stackbuf : malloc(n + 1);
    if (!k) {
        *oom = true;
        return -1;
    }
    for (size_t i = 0; i <= n; i++)
        k[i] = (char)tolower((unsigned char)name[i]);
    long prev = -1;
    json_t *v = json_object_get(set, k);
    if (v)
        prev = (long)json_integer_value(v);
    else if (json_object_set_new(set, k, json_integer((json_int_t)index)) != 0)
        *oom = true; /* or a key that is not UTF-8, which the parser never produces */
    if (k != stackbuf) free(k);
    return prev;
}

/* Checks a name that becomes an SQL identifier (at the current path + key): not empty, only
 * identifier characters. `what` = "entity", "field" or "index"; codes are the original's. */
static bool check_ident(ctx *c, const char *name, const char *key, const char *what,
                        const char *code_empty, const char *code_invalid)
{
    if (!*name) {
        err_at(c, key, code_empty, "%s name must not be empty", what);
        return false;
    }
    if (!pylon_manifest_is_identifier(name)) {
        err_at(c, key, code_invalid,
               "\"%s\" is not a valid %s name (letters, digits and _, not starting with a digit)",
               q(c, name), what);
        return false;
    }
    return true;
}

static bool entity_name_reserved(const char *n)
{
    return strncasecmp(n, "_pylon", 6) == 0 || strncasecmp(n, "sqlite_", 7) == 0 ||
           strncasecmp(n, "_fts_", 5) == 0 || strcasecmp(n, "_facet_bitmap") == 0;
}

/* ---- first pass: JSON → structures ---------------------------------------------------------- */

static const char *const SCALARS[] = {"string", "int", "float", "bool", "datetime", "richtext"};
static const pylon_field_type SCALAR_TYPES[] = {PYLON_FIELD_STRING,   PYLON_FIELD_INT,
                                                PYLON_FIELD_FLOAT,    PYLON_FIELD_BOOL,
                                                PYLON_FIELD_DATETIME, PYLON_FIELD_RICHTEXT};
static const char *const CRDT_NAMES[] = {"lww", "text", "counter", "list", "movable-list", "tree"};

const char *pylon_field_type_name(pylon_field_type t)
{
    return t == PYLON_FIELD_ID ? "id" : (unsigned)t < 6 ? SCALARS[t] : "?";
}

/* One field object into *f. `input`: a query/action input field (optional/unique may be
 * absent; unknown types reported as INPUT_FIELD_TYPE_UNKNOWN). */
static void parse_field(ctx *c, const json_t *fv, pylon_field *f, bool input)
{
    if (!json_is_object(fv)) {
        err(c, "MANIFEST_PARSE_ERROR", "expected an object, got %s", json_kind(fv));
        return;
    }
    f->name = get_str(c, fv, "name", true);
    f->optional = get_bool(c, fv, "optional", !input, false);
    f->unique = get_bool(c, fv, "unique", !input, false);
    const char *t = get_str(c, fv, "type", true);
    if (t) {
        bool known = false;
        for (size_t i = 0; i < 6; i++)
            if (strcmp(t, SCALARS[i]) == 0) {
                f->type = SCALAR_TYPES[i];
                known = true;
            }
        size_t n = strlen(t);
        if (!known && n > 4 && strncmp(t, "id(", 3) == 0 && t[n - 1] == ')') {
            f->type = PYLON_FIELD_ID;
            f->target = arena_strn(c->a, t + 3, n - 4);
            known = true;
        }
        if (known)
            f->type_text = t;
        else
            err_at(c, "type", input ? "INPUT_FIELD_TYPE_UNKNOWN" : "FIELD_TYPE_UNKNOWN",
                   "unknown type \"%s\" (expected string, int, float, bool, datetime, richtext "
                   "or id(Entity))",
                   q(c, t));
    }
    const char *crdt = get_str(c, fv, "crdt", false);
    if (crdt) {
        bool known = false;
        for (size_t i = 0; i < 6; i++)
            if (strcmp(crdt, CRDT_NAMES[i]) == 0) {
                f->crdt = (pylon_crdt_kind)(PYLON_CRDT_LWW + i);
                known = true;
            }
        if (!known)
            err_at(c, "crdt", "MANIFEST_PARSE_ERROR",
                   "unknown crdt kind \"%s\" (expected lww, text, counter, list, movable-list "
                   "or tree)",
                   q(c, crdt));
    }
}

/* An array of field objects under obj[key]. */
static const pylon_field *parse_fields(ctx *c, const json_t *obj, const char *key, bool required,
                                       bool input, size_t *n)
{
    *n = 0;
    json_t *arr = get(c, obj, key, W_ARRAY, required);
    if (!arr) return NULL;
    size_t len = json_array_size(arr);
    pylon_field *fs = arena_array(c->a, len, sizeof *fs);
    if (!fs) return NULL;
    size_t old = path_push_key(c, key);
    for (size_t i = 0; i < len; i++) {
        size_t o2 = path_push_index(c, i);
        parse_field(c, json_array_get(arr, i), &fs[i], input);
        path_pop(c, o2);
    }
    path_pop(c, old);
    *n = len;
    return fs;
}

/* Iterates obj[key] (an array of objects) calling fn for each element with the path set. */
typedef void (*elem_fn)(ctx *c, const json_t *v, void *out);
static void *parse_objects(ctx *c, const json_t *obj, const char *key, bool required, size_t size,
                           elem_fn fn, size_t *n)
{
    *n = 0;
    json_t *arr = get(c, obj, key, W_ARRAY, required);
    if (!arr) return NULL;
    size_t len = json_array_size(arr);
    char *out = arena_array(c->a, len, size);
    if (!out) return NULL;
    size_t old = path_push_key(c, key);
    for (size_t i = 0; i < len; i++) {
        size_t o2 = path_push_index(c, i);
        json_t *v = json_array_get(arr, i);
        if (json_is_object(v))
            fn(c, v, out + i * size);
        else
            err(c, "MANIFEST_PARSE_ERROR", "expected an object, got %s", json_kind(v));
        path_pop(c, o2);
    }
    path_pop(c, old);
    *n = len;
    return out;
}

static void parse_index(ctx *c, const json_t *v, void *out)
{
    pylon_index *ix = out;
    ix->name = get_str(c, v, "name", true);
    ix->fields = get_str_array(c, v, "fields", true, &ix->nfields);
    if (json_is_array(json_object_get(v, "fields")) && ix->nfields == 0)
        err_at(c, "fields", "INDEX_FIELDS_EMPTY", "an index needs at least one field");
    ix->unique = get_bool(c, v, "unique", true, false);
}

static void parse_relation(ctx *c, const json_t *v, void *out)
{
    pylon_relation *r = out;
    r->name = get_str(c, v, "name", true);
    r->target = get_str(c, v, "target", true);
    r->field = get_str(c, v, "field", true);
    r->many = get_bool(c, v, "many", false, false);
}

static void parse_entity(ctx *c, const json_t *v, void *out)
{
    pylon_entity *e = out;
    e->name = get_str(c, v, "name", true);
    e->fields = parse_fields(c, v, "fields", true, false, &e->nfields);
    e->indexes =
        parse_objects(c, v, "indexes", true, sizeof(pylon_index), parse_index, &e->nindexes);
    e->relations = parse_objects(c, v, "relations", false, sizeof(pylon_relation), parse_relation,
                                 &e->nrelations);
    e->crdt = get_bool(c, v, "crdt", false, true);
    json_t *s = get(c, v, "search", W_OBJECT, false);
    if (s) {
        pylon_search *ps = arena_alloc(c->a, sizeof *ps);
        if (!ps) return;
        size_t old = path_push_key(c, "search");
        ps->text = get_str_array(c, s, "text", false, &ps->ntext);
        ps->facets = get_str_array(c, s, "facets", false, &ps->nfacets);
        ps->sortable = get_str_array(c, s, "sortable", false, &ps->nsortable);
        ps->language = get_str(c, s, "language", false);
        path_pop(c, old);
        e->search = ps;
    }
}

static void parse_callable(ctx *c, const json_t *v, void *out)
{
    pylon_manifest_callable *q = out;
    q->name = get_str(c, v, "name", true);
    q->input = parse_fields(c, v, "input", false, true, &q->ninput);
}

static void parse_policy(ctx *c, const json_t *v, void *out)
{
    pylon_manifest_policy *p = out;
    p->name = get_str(c, v, "name", true);
    p->entity = get_str(c, v, "entity", false);
    p->action = get_str(c, v, "action", false);
    p->allow = get_str(c, v, "allow", false);
    p->allow_read = get_str(c, v, "allowRead", false);
    p->allow_insert = get_str(c, v, "allowInsert", false);
    p->allow_update = get_str(c, v, "allowUpdate", false);
    p->allow_delete = get_str(c, v, "allowDelete", false);
    p->allow_write = get_str(c, v, "allowWrite", false);
}

static void parse_route(ctx *c, const json_t *v, void *out)
{
    pylon_manifest_route *r = out;
    r->path = get_str(c, v, "path", true);
    r->mode = get_str(c, v, "mode", true);
    r->query = get_str(c, v, "query", false);
    r->auth = get_str(c, v, "auth", false);
}

/* auth: every key optional. Returns whether auth.user.entity was given explicitly. */
static bool parse_auth(ctx *c, const json_t *root, pylon_manifest_auth *au)
{
    au->user_entity = "User";
    au->session_expires_in = PYLON_MANIFEST_SESSION_EXPIRES_IN;
    au->cookie_cache_max_age = 300;
    json_t *a = get(c, root, "auth", W_OBJECT, false);
    if (!a) return false;
    bool explicit_user = false;
    size_t old = path_push_key(c, "auth");
    json_t *u = get(c, a, "user", W_OBJECT, false);
    if (u) {
        size_t o2 = path_push_key(c, "user");
        const char *ent = get_str(c, u, "entity", false);
        if (ent) {
            au->user_entity = ent;
            explicit_user = true;
        }
        au->expose = get_str_array(c, u, "expose", false, &au->nexpose);
        au->hide = get_str_array(c, u, "hide", false, &au->nhide);
        path_pop(c, o2);
    }
    json_t *s = get(c, a, "session", W_OBJECT, false);
    if (s) {
        size_t o2 = path_push_key(c, "session");
        json_t *ei = get(c, s, "expires_in", W_INT, false);
        if (ei) {
            au->session_expires_in = json_integer_value(ei);
            if (au->session_expires_in <= 0)
                err_at(c, "expires_in", "AUTH_SESSION_EXPIRES_INVALID",
                       "session lifetime must be a positive number of seconds, got %lld",
                       (long long)au->session_expires_in);
        }
        json_t *cc = get(c, s, "cookie_cache", W_OBJECT, false);
        if (cc) {
            size_t o3 = path_push_key(c, "cookie_cache");
            au->cookie_cache_enabled = get_bool(c, cc, "enabled", false, false);
            json_t *ma = get(c, cc, "max_age", W_INT, false);
            if (ma) au->cookie_cache_max_age = json_integer_value(ma);
            size_t nclaims;
            (void)get_str_array(c, cc, "claims", false, &nclaims);
            path_pop(c, o3);
        }
        path_pop(c, o2);
    }
    au->trusted_origins = get_str_array(c, a, "trusted_origins", false, &au->ntrusted_origins);
    path_pop(c, old);
    return explicit_user;
}

/* ---- second pass: names and cross references ------------------------------------------------ */

static const pylon_entity *find_entity(const pylon_manifest *m, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < m->nentities; i++)
        if (m->entities[i].name && strcmp(m->entities[i].name, name) == 0) return &m->entities[i];
    return NULL;
}

static bool entity_has_field(const pylon_entity *e, const char *name, bool allow_id)
{
    if (allow_id && strcmp(name, "id") == 0) return true;
    for (size_t i = 0; i < e->nfields; i++)
        if (e->fields[i].name && strcmp(e->fields[i].name, name) == 0) return true;
    return false;
}

/* "id, a, b" into the arena. */
static const char *column_list(struct pylon_manifest_arena *a, const pylon_entity *e)
{
    size_t n = 3;
    for (size_t i = 0; i < e->nfields; i++)
        n += strlen(e->fields[i].name) + 2;
    char *s = arena_alloc(a, n);
    if (!s) return "id";
    size_t o = 0;
    memcpy(s, "id", 2);
    o = 2;
    for (size_t i = 0; i < e->nfields; i++) {
        size_t l = strlen(e->fields[i].name);
        memcpy(s + o, ", ", 2);
        memcpy(s + o + 2, e->fields[i].name, l);
        o += l + 2;
    }
    s[o] = '\0';
    return s;
}

/* An id(X) field's target must be a declared entity. Path: the field. */
static void check_id_target(ctx *c, const pylon_manifest *m, const pylon_field *f)
{
    if (f->type_text && f->type == PYLON_FIELD_ID && !find_entity(m, f->target))
        err_at(c, "type", "FIELD_ID_TARGET_NOT_FOUND", "%s references unknown entity \"%s\"",
               q(c, f->type_text), q(c, f->target));
}

/* Shared by entity-less name lists (queries, actions, policies): empty and duplicate. */
static void check_plain_name(ctx *c, json_t *set, const char *name, size_t i, const char *kind,
                             const char *code_empty, const char *code_dup, const char *collection)
{
    if (!name) return;
    if (!*name) {
        err_at(c, "name", code_empty, "%s name must not be empty", kind);
        return;
    }
    /* Exact duplicates only: these names are not SQL identifiers. A json object keyed by the
     * exact name does the lookup. */
    json_t *prev = json_object_get(set, name);
    if (prev)
        err_at(c, "name", code_dup, "duplicate %s name \"%s\" (first declared at %s[%lld])", kind,
               q(c, name), collection, (long long)json_integer_value(prev));
    else
        json_object_set_new(set, name, json_integer((json_int_t)i));
}

static void check_inputs(ctx *c, const pylon_manifest *m, const pylon_manifest_callable *q_,
                         const char *kind)
{
    json_t *seen = json_object();
    size_t old = path_push_key(c, "input");
    for (size_t k = 0; k < q_->ninput; k++) {
        const pylon_field *f = &q_->input[k];
        size_t o2 = path_push_index(c, k);
        if (f->name && !*f->name) {
            err_at(c, "name", "INPUT_FIELD_NAME_EMPTY", "input field name must not be empty");
        } else if (f->name && seen) {
            json_t *prev = json_object_get(seen, f->name);
            if (prev)
                err_at(c, "name", "INPUT_FIELD_DUPLICATE",
                       "duplicate input field \"%s\" in %s \"%s\" (same as input[%lld])",
                       q(c, f->name), kind, q(c, q_->name ? q_->name : ""),
                       (long long)json_integer_value(prev));
            else
                json_object_set_new(seen, f->name, json_integer((json_int_t)k));
        }
        check_id_target(c, m, f);
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(seen);
}

/* Generated SQL index names share SQLite's one namespace with tables (ignoring case). */
static void claim_sql_name(ctx *c, json_t *sqlnames, const char *sqlname, const char *what,
                           const char *key)
{
    bool oom = false;
    long prev = nameset_add(sqlnames, sqlname, 0, &oom);
    if (oom) c->a->oom = true;
    if (prev < 0) return;
    size_t old = key ? path_push_key(c, key) : c->plen;
    err(c, "INDEX_NAME_CONFLICT",
        "%s \"%s\" clashes with another table or index of that name (SQLite names ignore case)",
        what, q(c, sqlname));
    path_pop(c, old);
}

static void check_entity(ctx *c, const pylon_manifest *m, const pylon_entity *e, json_t *sqlnames)
{
    bool oom = false;
    /* fields */
    json_t *fset = json_object();
    size_t old = path_push_key(c, "fields");
    for (size_t k = 0; k < e->nfields; k++) {
        const pylon_field *f = &e->fields[k];
        size_t o2 = path_push_index(c, k);
        if (f->name &&
            check_ident(c, f->name, "name", "field", "FIELD_NAME_EMPTY", "FIELD_NAME_INVALID")) {
            if (strcasecmp(f->name, "id") == 0) {
                err_at(c, "name", "FIELD_NAME_RESERVED",
                       "\"%s\" is the system column (every entity has id TEXT PRIMARY KEY); "
                       "remove this field",
                       q(c, f->name));
            } else if (fset) {
                long prev = nameset_add(fset, f->name, k, &oom);
                if (prev >= 0) {
                    const char *first = e->fields[prev].name;
                    if (strcmp(first, f->name) == 0)
                        err_at(c, "name", "FIELD_DUPLICATE",
                               "duplicate field name \"%s\" (first declared at fields[%ld])",
                               q(c, f->name), prev);
                    else
                        err_at(c, "name", "FIELD_DUPLICATE",
                               "field name \"%s\" clashes with \"%s\" at fields[%ld] (SQLite "
                               "column names ignore case)",
                               q(c, f->name), q(c, first), prev);
                }
            }
        }
        check_id_target(c, m, f);
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(fset);

    /* indexes */
    json_t *iset = json_object();
    old = path_push_key(c, "indexes");
    for (size_t k = 0; k < e->nindexes; k++) {
        const pylon_index *ix = &e->indexes[k];
        size_t o2 = path_push_index(c, k);
        if (ix->name &&
            check_ident(c, ix->name, "name", "index", "INDEX_NAME_EMPTY", "INDEX_NAME_INVALID") &&
            iset) {
            long prev = nameset_add(iset, ix->name, k, &oom);
            if (prev >= 0)
                err_at(c, "name", "INDEX_NAME_DUPLICATE",
                       "duplicate index name \"%s\" (first declared at indexes[%ld])",
                       q(c, ix->name), prev);
            else if (e->name && pylon_manifest_is_identifier(e->name)) {
                char *sqlname = NULL;
                if (asprintf(&sqlname, "%s_%s", e->name, ix->name) >= 0) {
                    claim_sql_name(c, sqlnames, sqlname, "index name", "name");
                    free(sqlname);
                }
            }
        }
        size_t o3 = path_push_key(c, "fields");
        for (size_t j = 0; j < ix->nfields; j++) {
            if (!ix->fields[j] || entity_has_field(e, ix->fields[j], true)) continue;
            size_t o4 = path_push_index(c, j);
            err(c, "INDEX_FIELD_NOT_FOUND", "unknown field \"%s\" in index \"%s\"",
                q(c, ix->fields[j]), q(c, ix->name ? ix->name : ""));
            path_pop(c, o4);
        }
        path_pop(c, o3);
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(iset);

    /* relations */
    json_t *rset = json_object();
    old = path_push_key(c, "relations");
    for (size_t k = 0; k < e->nrelations; k++) {
        const pylon_relation *r = &e->relations[k];
        size_t o2 = path_push_index(c, k);
        if (r->name) {
            if (!*r->name)
                err_at(c, "name", "RELATION_NAME_EMPTY", "relation name must not be empty");
            else if (rset && json_object_get(rset, r->name))
                err_at(c, "name", "RELATION_DUPLICATE",
                       "duplicate relation name \"%s\" (first declared at relations[%lld])",
                       q(c, r->name),
                       (long long)json_integer_value(json_object_get(rset, r->name)));
            else if (rset)
                json_object_set_new(rset, r->name, json_integer((json_int_t)k));
        }
        const pylon_entity *t = r->target ? find_entity(m, r->target) : NULL;
        if (r->target && !t)
            err_at(c, "target", "RELATION_TARGET_NOT_FOUND", "unknown entity \"%s\"",
                   q(c, r->target));
        if (r->field) {
            /* many:false → this entity holds the target's id; many:true → the target rows
             * hold ours (see manifest.h). */
            const pylon_entity *holder = r->many ? t : e;
            if (holder && !entity_has_field(holder, r->field, true))
                err_at(c, "field", "RELATION_FIELD_NOT_FOUND",
                       "unknown field \"%s\" on entity \"%s\"", q(c, r->field),
                       q(c, holder->name ? holder->name : ""));
        }
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(rset);

    /* search */
    if (e->search) {
        const pylon_search *s = e->search;
        struct {
            const char *key;
            const char *const *v;
            size_t n;
        } lists[] = {{"text", s->text, s->ntext},
                     {"facets", s->facets, s->nfacets},
                     {"sortable", s->sortable, s->nsortable}};
        old = path_push_key(c, "search");
        for (size_t l = 0; l < 3; l++) {
            size_t o2 = path_push_key(c, lists[l].key);
            for (size_t j = 0; j < lists[l].n; j++) {
                const char *fname = lists[l].v[j];
                if (!fname) continue;
                size_t o3 = path_push_index(c, j);
                if (!entity_has_field(e, fname, false)) {
                    err(c, "SEARCH_FIELD_NOT_FOUND", "unknown field \"%s\"", q(c, fname));
                } else if (l == 2 && e->name && pylon_manifest_is_identifier(e->name)) {
                    char *sqlname = NULL;
                    if (asprintf(&sqlname, "%s_sort_%s", e->name, fname) >= 0) {
                        claim_sql_name(c, sqlnames, sqlname, "sort index", NULL);
                        free(sqlname);
                    }
                }
                path_pop(c, o3);
            }
            path_pop(c, o2);
        }
        path_pop(c, old);
    }
    if (oom) c->a->oom = true;
}

static void extract_route_param_check(ctx *c, const pylon_manifest *m,
                                      const pylon_manifest_route *r)
{
    const pylon_manifest_callable *qq = NULL;
    for (size_t i = 0; i < m->nqueries; i++)
        if (m->queries[i].name && strcmp(m->queries[i].name, r->query) == 0) qq = &m->queries[i];
    if (!qq) {
        err_at(c, "query", "ROUTE_QUERY_NOT_FOUND", "unknown query \"%s\"", q(c, r->query));
        return;
    }
    if (!r->path) return;
    /* Path params are segments starting with ':'; each must be an input of the query. */
    for (const char *p = r->path; *p;) {
        const char *seg = p;
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (len > 1 && seg[0] == ':') {
            bool found = false;
            for (size_t k = 0; k < qq->ninput; k++) {
                const char *in = qq->input[k].name;
                if (in && strlen(in) == len - 1 && memcmp(in, seg + 1, len - 1) == 0) found = true;
            }
            if (!found) {
                char pname[QLEN];
                snprintf(pname, sizeof pname, "%.*s",
                         (int)(len - 1 < QLEN - 1 ? len - 1 : QLEN - 1), seg + 1);
                err_at(c, "path", "ROUTE_PARAM_NOT_IN_QUERY",
                       "path parameter \"%s\" is not an input of query \"%s\"", q(c, pname),
                       q(c, r->query));
            }
        }
        p = slash ? slash + 1 : seg + len;
    }
}

/* Present with a non-null, non-string value (a type error reported in the first pass). */
static bool present(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) && !json_is_string(v);
}

static void check_all(ctx *c, bool explicit_user)
{
    const pylon_manifest *m = c->m;
    bool oom = false;

    json_t *eset = json_object();     /* entity names, case-insensitive */
    json_t *sqlnames = json_object(); /* every table and generated index name */
    if (!eset || !sqlnames) c->a->oom = true;
    size_t old = path_push_key(c, "entities");
    for (size_t i = 0; i < m->nentities && eset && sqlnames; i++) {
        const pylon_entity *e = &m->entities[i];
        size_t o2 = path_push_index(c, i);
        if (e->name &&
            check_ident(c, e->name, "name", "entity", "ENTITY_NAME_EMPTY", "ENTITY_NAME_INVALID")) {
            if (entity_name_reserved(e->name)) {
                err_at(c, "name", "ENTITY_NAME_RESERVED",
                       "\"%s\" is reserved for internal tables (names starting with _pylon, "
                       "sqlite_ or _fts_, and _facet_bitmap)",
                       q(c, e->name));
            } else {
                long prev = nameset_add(eset, e->name, i, &oom);
                if (prev >= 0) {
                    const char *first = m->entities[prev].name;
                    if (strcmp(first, e->name) == 0)
                        err_at(c, "name", "ENTITY_DUPLICATE",
                               "duplicate entity name \"%s\" (first declared at entities[%ld])",
                               q(c, e->name), prev);
                    else
                        err_at(c, "name", "ENTITY_DUPLICATE",
                               "entity name \"%s\" clashes with \"%s\" at entities[%ld] (SQLite "
                               "table names ignore case)",
                               q(c, e->name), q(c, first), prev);
                } else {
                    nameset_add(sqlnames, e->name, i, &oom);
                }
            }
        }
        path_pop(c, o2);
    }
    /* Indexes after all tables are known, so an index never steals a later table's name. */
    for (size_t i = 0; i < m->nentities && eset && sqlnames; i++) {
        size_t o2 = path_push_index(c, i);
        check_entity(c, m, &m->entities[i], sqlnames);
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(eset);
    json_decref(sqlnames);

    json_t *set = json_object();
    old = path_push_key(c, "queries");
    for (size_t i = 0; i < m->nqueries && set; i++) {
        size_t o2 = path_push_index(c, i);
        check_plain_name(c, set, m->queries[i].name, i, "query", "QUERY_NAME_EMPTY",
                         "QUERY_DUPLICATE", "queries");
        check_inputs(c, m, &m->queries[i], "query");
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(set);

    set = json_object();
    old = path_push_key(c, "actions");
    for (size_t i = 0; i < m->nactions && set; i++) {
        size_t o2 = path_push_index(c, i);
        check_plain_name(c, set, m->actions[i].name, i, "action", "ACTION_NAME_EMPTY",
                         "ACTION_DUPLICATE", "actions");
        check_inputs(c, m, &m->actions[i], "action");
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(set);

    set = json_object();
    old = path_push_key(c, "policies");
    for (size_t i = 0; i < m->npolicies && set; i++) {
        const pylon_manifest_policy *p = &m->policies[i];
        size_t o2 = path_push_index(c, i);
        check_plain_name(c, set, p->name, i, "policy", "POLICY_NAME_EMPTY", "POLICY_DUPLICATE",
                         "policies");
        const char *exprs[] = {p->allow,        p->allow_read,   p->allow_insert,
                               p->allow_update, p->allow_delete, p->allow_write};
        bool any = false;
        for (size_t k = 0; k < 6; k++)
            any |= exprs[k] && *exprs[k];
        /* A key that is present but mistyped already has its own error: do not add a second. */
        const json_t *pj = json_array_get(json_object_get(m->json, "policies"), i);
        static const char *const rule_keys[] = {"allow",       "allowRead",   "allowInsert",
                                                "allowUpdate", "allowDelete", "allowWrite"};
        for (size_t k = 0; k < 6; k++)
            any |= present(pj, rule_keys[k]);
        if (!any)
            err(c, "POLICY_ALLOW_EMPTY",
                "policy \"%s\" has no rule (set allow, allowRead, allowInsert, allowUpdate, "
                "allowDelete or allowWrite)",
                q(c, p->name ? p->name : ""));
        if (!p->entity && !p->action && !present(pj, "entity") && !present(pj, "action"))
            err(c, "POLICY_NO_TARGET", "policy \"%s\" needs an entity or an action",
                q(c, p->name ? p->name : ""));
        if (p->entity && !find_entity(m, p->entity))
            err_at(c, "entity", "POLICY_ENTITY_NOT_FOUND", "unknown entity \"%s\"",
                   q(c, p->entity));
        if (p->action) {
            bool found = false;
            for (size_t k = 0; k < m->nactions; k++)
                found |= m->actions[k].name && strcmp(m->actions[k].name, p->action) == 0;
            if (!found)
                err_at(c, "action", "POLICY_ACTION_NOT_FOUND", "unknown action \"%s\"",
                       q(c, p->action));
        }
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(set);

    set = json_object();
    old = path_push_key(c, "routes");
    for (size_t i = 0; i < m->nroutes && set; i++) {
        const pylon_manifest_route *r = &m->routes[i];
        size_t o2 = path_push_index(c, i);
        if (r->path) {
            if (!*r->path)
                err_at(c, "path", "ROUTE_PATH_EMPTY", "route path must not be empty");
            else if (r->path[0] != '/')
                err_at(c, "path", "ROUTE_PATH_NO_SLASH", "route path \"%s\" must start with /",
                       q(c, r->path));
            if (*r->path) {
                json_t *prev = json_object_get(set, r->path);
                if (prev)
                    err_at(c, "path", "ROUTE_PATH_DUPLICATE",
                           "duplicate route path \"%s\" (first declared at routes[%lld])",
                           q(c, r->path), (long long)json_integer_value(prev));
                else
                    json_object_set_new(set, r->path, json_integer((json_int_t)i));
            }
        }
        if (r->query) extract_route_param_check(c, m, r);
        if (r->auth && strcmp(r->auth, "public") != 0 && strcmp(r->auth, "user") != 0)
            err_at(c, "auth", "ROUTE_AUTH_INVALID",
                   "invalid auth mode \"%s\" (expected public or user)", q(c, r->auth));
        path_pop(c, o2);
    }
    path_pop(c, old);
    json_decref(set);

    /* auth: an explicit user entity must exist; expose/hide name its fields. */
    const pylon_entity *ue = find_entity(m, m->auth.user_entity);
    if (explicit_user && !ue)
        err_at(c, "auth.user.entity", "AUTH_USER_ENTITY_NOT_FOUND", "unknown entity \"%s\"",
               q(c, m->auth.user_entity));
    if (ue) {
        struct {
            const char *key;
            const char *const *v;
            size_t n;
        } lists[] = {{"auth.user.expose", m->auth.expose, m->auth.nexpose},
                     {"auth.user.hide", m->auth.hide, m->auth.nhide}};
        for (size_t l = 0; l < 2; l++)
            for (size_t j = 0; j < lists[l].n; j++) {
                if (!lists[l].v[j] || entity_has_field(ue, lists[l].v[j], true)) continue;
                size_t o2 = path_push_key(c, lists[l].key);
                size_t o3 = path_push_index(c, j);
                err(c, "AUTH_FIELD_NOT_FOUND", "unknown field \"%s\" on entity \"%s\"",
                    q(c, lists[l].v[j]), q(c, ue->name));
                path_pop(c, o3);
                path_pop(c, o2);
            }
    }
    if (oom) c->a->oom = true;
}

/* ---- entry points --------------------------------------------------------------------------- */

void pylon_manifest_free(pylon_manifest *m)
{
    if (!m) return;
    json_decref(m->json);
    arena_free(m->arena);
    free(m);
}

/* Makes sure the optional arrays exist in the stored document, so /api/manifest and the policy
 * module always see them. */
static bool fill_defaults(json_t *root)
{
    static const char *const keys[] = {"queries", "actions", "policies", "routes"};
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(root, keys[i]);
        if (!v || json_is_null(v))
            if (json_object_set_new(root, keys[i], json_array()) != 0) return false;
    }
    return true;
}

/* Builds the manifest from a parsed document (taking the reference). */
static pylon_manifest *from_json(json_t *root, pylon_manifest_errors *errs)
{
    pylon_manifest *m = calloc(1, sizeof *m);
    ctx *c = calloc(1, sizeof *c);
    if (m) m->arena = calloc(1, sizeof *m->arena);
    if (!m || !c || !m->arena) {
        free(c);
        if (m) free(m->arena);
        free(m);
        json_decref(root);
        errors_add(errs, "OUT_OF_MEMORY", "", "out of memory");
        return NULL;
    }
    m->json = root;
    c->m = m;
    c->a = m->arena;
    c->errs = errs;

    if (!json_is_object(root)) {
        err(c, "MANIFEST_PARSE_ERROR", "the manifest must be a JSON object, got %s",
            json_kind(root));
        goto fail;
    }
    json_t *ver = get(c, root, "manifest_version", W_INT, true);
    if (ver) {
        json_int_t v = json_integer_value(ver);
        m->manifest_version = PYLON_MANIFEST_VERSION;
        if (v != PYLON_MANIFEST_VERSION)
            err_at(c, "manifest_version", "MANIFEST_VERSION_UNSUPPORTED",
                   "manifest version %lld is not supported (expected %d)", (long long)v,
                   PYLON_MANIFEST_VERSION);
    }
    m->name = get_str(c, root, "name", true);
    if (m->name && !*m->name)
        err_at(c, "name", "MANIFEST_NAME_EMPTY", "app name must not be empty");
    m->version = get_str(c, root, "version", true);

    pylon_entity *ents =
        parse_objects(c, root, "entities", true, sizeof(pylon_entity), parse_entity, &m->nentities);
    m->entities = ents;
    m->queries = parse_objects(c, root, "queries", false, sizeof(pylon_manifest_callable),
                               parse_callable, &m->nqueries);
    m->actions = parse_objects(c, root, "actions", false, sizeof(pylon_manifest_callable),
                               parse_callable, &m->nactions);
    m->policies = parse_objects(c, root, "policies", false, sizeof(pylon_manifest_policy),
                                parse_policy, &m->npolicies);
    m->routes = parse_objects(c, root, "routes", false, sizeof(pylon_manifest_route), parse_route,
                              &m->nroutes);
    bool explicit_user = parse_auth(c, root, &m->auth);
    if (m->arena->oom) goto oom;

    check_all(c, explicit_user);
    if (m->arena->oom) goto oom;
    if (errs->total > 0) goto fail;

    for (size_t i = 0; i < m->nentities; i++)
        ents[i].columns = column_list(m->arena, &ents[i]);
    if (!fill_defaults(root) || m->arena->oom) goto oom;
    m->policies_json = json_object_get(root, "policies");
    free(c);
    return m;

oom:
    errors_add(errs, "OUT_OF_MEMORY", "", "out of memory");
fail:
    free(c);
    pylon_manifest_free(m);
    return NULL;
}

/* jansson's error text quotes the input near the error: keep it printable. */
static void printable(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f) *s = '?';
}

pylon_manifest *pylon_manifest_parse(const char *json, size_t len, pylon_manifest_errors **errs)
{
    if (errs) *errs = NULL;
    pylon_manifest_errors *e = errors_new();
    if (!e) return NULL;
    json_error_t jerr;
    /* Duplicate keys are refused: in a hand-edited manifest the second copy silently winning is
     * a bug waiting to happen. */
    json_t *root = json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES, &jerr);
    pylon_manifest *m = NULL;
    if (!root) {
        printable(jerr.text);
        errors_add(e, "MANIFEST_PARSE_ERROR", "", "line %d, column %d: invalid JSON: %s", jerr.line,
                   jerr.column, jerr.text);
    } else {
        m = from_json(root, e);
    }
    if (m) {
        pylon_manifest_errors_free(e);
        return m;
    }
    errors_finish(e);
    if (errs)
        *errs = e;
    else
        pylon_manifest_errors_free(e);
    return NULL;
}

static pylon_manifest *file_error(pylon_manifest_errors **errs, bool not_found, const char *code,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static pylon_manifest *file_error(pylon_manifest_errors **errs, bool not_found, const char *code,
                                  const char *fmt, ...)
{
    pylon_manifest_errors *e = errors_new();
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        errors_addv(e, code, "", fmt, ap);
        va_end(ap);
        e->not_found = not_found;
        errors_finish(e);
    }
    if (errs)
        *errs = e;
    else
        pylon_manifest_errors_free(e);
    return NULL;
}

pylon_manifest *pylon_manifest_load_file(const char *path, pylon_manifest_errors **errs)
{
    if (errs) *errs = NULL;
    char ebuf[128];
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        if (e == ENOENT)
            return file_error(errs, true, "MANIFEST_NOT_FOUND",
                              "%s: no such file (set PYLON_MANIFEST to the manifest's path)", path);
        return file_error(errs, false, "MANIFEST_READ_FAILED", "%s: cannot open: %s", path,
                          strerror_r(e, ebuf, sizeof ebuf));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return file_error(errs, false, "MANIFEST_READ_FAILED", "%s: not a regular file", path);
    }
    if ((unsigned long long)st.st_size > PYLON_MANIFEST_MAX_BYTES) {
        fclose(f);
        return file_error(errs, false, "MANIFEST_TOO_LARGE",
                          "%s: %lld bytes, more than the %u allowed", path, (long long)st.st_size,
                          PYLON_MANIFEST_MAX_BYTES);
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return file_error(errs, false, "OUT_OF_MEMORY", "%s: out of memory", path);
    }
    /* Read what is there now (the file may change under us); never past the cap. */
    size_t n = fread(buf, 1, cap + 1, f);
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr || n > cap) {
        free(buf);
        return file_error(errs, false, "MANIFEST_READ_FAILED", "%s: read failed%s%s", path,
                          rerr ? ": " : " (file changed while reading)",
                          rerr ? strerror_r(rerr, ebuf, sizeof ebuf) : "");
    }
    pylon_manifest *m = pylon_manifest_parse(buf, n, errs);
    free(buf);
    return m;
}

pylon_manifest *pylon_manifest_new_empty(void)
{
    static const char doc[] =
        "{\"manifest_version\":1,\"name\":\"pylon-app\",\"version\":\"0.0.0\","
        "\"entities\":[],\"routes\":[]}";
    return pylon_manifest_parse(doc, sizeof doc - 1, NULL);
}

/* ---- lookups -------------------------------------------------------------------------------- */

const pylon_entity *pylon_manifest_entity(const pylon_manifest *m, const char *name)
{
    return name ? find_entity(m, name) : NULL;
}

static const pylon_manifest_callable *find_callable(const pylon_manifest_callable *v, size_t n,
                                                    const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].name, name) == 0) return &v[i];
    return NULL;
}

const pylon_manifest_callable *pylon_manifest_action(const pylon_manifest *m, const char *name)
{
    return find_callable(m->actions, m->nactions, name);
}

const pylon_manifest_callable *pylon_manifest_query(const pylon_manifest *m, const char *name)
{
    return find_callable(m->queries, m->nqueries, name);
}

const pylon_field *pylon_entity_field(const pylon_entity *e, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < e->nfields; i++)
        if (strcmp(e->fields[i].name, name) == 0) return &e->fields[i];
    return NULL;
}

const pylon_relation *pylon_entity_relation(const pylon_entity *e, const char *name)
{
    if (!name) return NULL;
    for (size_t i = 0; i < e->nrelations; i++)
        if (strcmp(e->relations[i].name, name) == 0) return &e->relations[i];
    return NULL;
}

bool pylon_entity_has_column(const pylon_entity *e, const char *name)
{
    return name && (strcmp(name, "id") == 0 || pylon_entity_field(e, name) != NULL);
}

const char *pylon_entity_unknown_column(const pylon_entity *e, const char *name, char *buf,
                                        size_t len)
{
    if (len == 0) return buf;
    snprintf(buf, len, "Unknown column \"%s\" -- valid columns: %s", name ? name : "",
             e->columns ? e->columns : "id");
    return buf;
}
