/*
 * store_sqlite.c — the SQLite backend of store.h.
 *
 * Statements are prepared once per connection and cached by their SQL text (a connection runs
 * a small, repeating set of statements). Queries are built from the manifest and the filter
 * with every identifier checked against the manifest and every value bound, never spliced, so
 * nothing a client sends becomes SQL text.
 */
#include "actors/schema.h"
#include "actors/store.h"
#include "engine/hash.h"
#include "engine/log.h"

#include <ctype.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define STMT_CACHE 128

typedef struct cached_stmt {
    char *sql;
    sqlite3_stmt *st;
} cached_stmt;

/* An entity's kept statements. An insert's statement depends on which fields the body gives
 * (bit i: e->fields[i]); a few such shapes are kept, others go through the SQL-keyed cache. */
enum { INSERT_SHAPES = 4 };
typedef struct entity_stmts {
    sqlite3_stmt *by_id;        /* SELECT * … WHERE id = ? */
    pylon_row_plan *by_id_plan; /* its columns as row text (readers) */
    sqlite3_stmt *insert[INSERT_SHAPES];
    uint64_t insert_fields[INSERT_SHAPES];
} entity_stmts;

struct pylon_store_conn {
    sqlite3 *db;
    bool writer;
    const pylon_manifest *m;
    cached_stmt cache[STMT_CACHE];
    unsigned next_evict;
    /* The commonest statements, kept per manifest entity (same order) and prepared on first
     * use: finding them in `cache` meant formatting, hashing and comparing their SQL text on
     * every get and every insert. */
    entity_stmts *per_entity;
    sqlite3_stmt *log_change; /* the change-log INSERT (writer) */
    /* Writer: the last change-log seq handed out, and its value when the open transaction and
     * savepoint began, so a rollback gives the numbers back. The writer numbers changes itself
     * (no AUTOINCREMENT: its sqlite_sequence update cost a b-tree write per change). */
    int64_t seq, seq_at_begin, seq_at_savepoint;
    bool memory; /* the shared-cache in-memory database (no WAL snapshots) */
};

bool pylon_store_fail(pylon_store_error *err, int status, const char *code, const char *fmt, ...)
{
    if (err) {
        err->status = status;
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return false;
}

/* ---- statements -------------------------------------------------------------------------- */

static sqlite3_stmt *prepare(pylon_store_conn *c, const char *sql, pylon_store_error *err)
{
    uint32_t h = pylon_hash_str(sql);
    for (unsigned probe = 0; probe < 8; probe++) {
        cached_stmt *cs = &c->cache[(h + probe) % STMT_CACHE];
        if (cs->sql && strcmp(cs->sql, sql) == 0) {
            sqlite3_reset(cs->st);
            sqlite3_clear_bindings(cs->st);
            return cs->st;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        pylon_store_fail(err, 500, "QUERY_FAILED", "%s", sqlite3_errmsg(c->db));
        return NULL;
    }
    /* Take a free slot near the hash, else evict one in turn. */
    cached_stmt *slot = NULL;
    for (unsigned probe = 0; probe < 8 && !slot; probe++)
        if (!c->cache[(h + probe) % STMT_CACHE].sql) slot = &c->cache[(h + probe) % STMT_CACHE];
    if (!slot) {
        slot = &c->cache[(h + (c->next_evict++ % 8)) % STMT_CACHE];
        sqlite3_finalize(slot->st);
        free(slot->sql);
    }
    slot->sql = strdup(sql);
    slot->st = st;
    if (!slot->sql) { /* cannot cache: still usable once, the caller resets it */
        slot->st = NULL;
        sqlite3_finalize(st);
        pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        return NULL;
    }
    return st;
}

/* Maps a failed step to the answer a client can act on. */
static bool step_error(pylon_store_conn *c, int rc, const char *what, pylon_store_error *err)
{
    const char *msg = sqlite3_errmsg(c->db);
    int ext = sqlite3_extended_errcode(c->db);
    if (ext == SQLITE_CONSTRAINT_UNIQUE || ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
        const char *col = strstr(msg, "failed: ");
        return pylon_store_fail(err, 409, "UNIQUE_VIOLATION",
                                "A row with the same %s already exists",
                                col ? col + 8 : "unique value");
    }
    if (ext == SQLITE_CONSTRAINT_NOTNULL) {
        const char *col = strstr(msg, "failed: ");
        const char *dot = col ? strrchr(col, '.') : NULL;
        return pylon_store_fail(err, 400, "MISSING_FIELD", "Missing required field \"%s\"",
                                dot ? dot + 1 : (col ? col + 8 : "?"));
    }
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return pylon_store_fail(err, 503, "OVERLOADED", "The database is busy: retry shortly");
    return pylon_store_fail(err, 500, what, "%s", msg);
}

/* ---- SQL text ---------------------------------------------------------------------------- */

typedef struct sqlbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sqlbuf;

static void sb_put(sqlbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_cat(sqlbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Identifiers come from the manifest (validated as [A-Za-z_][A-Za-z0-9_]*), quoted anyway. */
static void sb_ident(sqlbuf *b, const char *name)
{
    sb_cat(b, "\"");
    sb_cat(b, name);
    sb_cat(b, "\"");
}

/* ---- binding ----------------------------------------------------------------------------- */

/* What a filter binds: the value and the field that decides its SQL type (NULL: id, text). */
typedef struct bind_item {
    const json_t *v;
    const pylon_field *f;
    char *owned_text; /* for $like patterns */
} bind_item;

typedef struct binds {
    bind_item *items;
    size_t n, cap;
} binds;

static bool binds_add(binds *b, const json_t *v, const pylon_field *f, char *owned)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        bind_item *ni = realloc(b->items, cap * sizeof *ni);
        if (!ni) return false;
        b->items = ni;
        b->cap = cap;
    }
    b->items[b->n++] = (bind_item){v, f, owned};
    return true;
}

static void binds_free(binds *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->items[i].owned_text);
    free(b->items);
}

static bool bind_one(sqlite3_stmt *st, int idx, const bind_item *it, pylon_store_error *err)
{
    if (it->owned_text)
        return sqlite3_bind_text(st, idx, it->owned_text, -1, SQLITE_TRANSIENT) == SQLITE_OK;
    if (!it->f) { /* the id column */
        if (!json_is_string(it->v))
            return pylon_store_fail(err, 400, "INVALID_QUERY", "id must be a string");
        return sqlite3_bind_text(st, idx, json_string_value(it->v), -1, SQLITE_TRANSIENT) ==
               SQLITE_OK;
    }
    char msg[300];
    if (pylon_schema_bind_value(st, idx, it->f, it->v, msg, sizeof msg) != 0)
        return pylon_store_fail(err, 400, "INVALID_QUERY", "%s", msg);
    return true;
}

/* ---- filters (backend.md §3.3) ----------------------------------------------------------- */

/* $search: every whitespace-separated term must occur, as a substring (case-insensitive for
 * ASCII, LIKE's rule), in one of the entity's string or richtext fields; % _ and \ in a term
 * are literal. Like the original's FTS5 MATCH, "red car" finds rows with both words anywhere;
 * unlike it there is no index to keep up on every write and no ranking (rows come in id or
 * $order order). An empty search selects everything. */
static bool compile_search(const pylon_entity *e, const char *text, sqlbuf *sql, binds *b,
                           pylon_store_error *err)
{
    bool any = false;
    for (size_t i = 0; i < e->nfields && !any; i++)
        any = e->fields[i].type == PYLON_FIELD_STRING || e->fields[i].type == PYLON_FIELD_RICHTEXT;
    if (!any)
        return pylon_store_fail(err, 400, "INVALID_QUERY",
                                "$search needs a string or richtext field in %s", e->name);
    for (const char *t = text;;) {
        while (*t && isspace((unsigned char)*t))
            t++;
        if (!*t) return true;
        size_t n = 0;
        while (t[n] && !isspace((unsigned char)t[n]))
            n++;
        sb_cat(sql, " AND (0");
        for (size_t i = 0; i < e->nfields; i++) {
            const pylon_field *f = &e->fields[i];
            if (f->type != PYLON_FIELD_STRING && f->type != PYLON_FIELD_RICHTEXT) continue;
            char *pat = malloc(2 * n + 3), *w = pat;
            if (!pat) return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
            *w++ = '%';
            for (size_t k = 0; k < n; k++) {
                if (t[k] == '%' || t[k] == '_' || t[k] == '\\') *w++ = '\\';
                *w++ = t[k];
            }
            *w++ = '%';
            *w = '\0';
            if (!binds_add(b, NULL, f, pat)) {
                free(pat);
                return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
            }
            sb_cat(sql, " OR ");
            sb_ident(sql, f->name);
            sb_cat(sql, " LIKE ? ESCAPE '\\'");
        }
        sb_cat(sql, ")");
        t += n;
    }
}

static bool column_of(const pylon_entity *e, const char *key, const pylon_field **f,
                      pylon_store_error *err)
{
    if (strcmp(key, "id") == 0) {
        *f = NULL;
        return true;
    }
    *f = pylon_entity_field(e, key);
    if (*f) return true;
    char buf[400];
    return pylon_store_fail(err, 400, "INVALID_COLUMN", "%s",
                            pylon_entity_unknown_column(e, key, buf, sizeof buf));
}

static bool compile_condition(const pylon_entity *e, const char *key, const json_t *v, sqlbuf *sql,
                              binds *b, pylon_store_error *err)
{
    const pylon_field *f;
    if (!column_of(e, key, &f, err)) return false;
    if (!json_is_object(v)) {
        sb_cat(sql, " AND ");
        sb_ident(sql, key);
        if (json_is_null(v)) {
            sb_cat(sql, " IS NULL");
            return true;
        }
        sb_cat(sql, " = ?");
        return binds_add(b, v, f, NULL) ||
               pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
    }
    const char *op;
    json_t *arg;
    json_object_foreach((json_t *)v, op, arg)
    {
        static const struct {
            const char *op, *sql;
        } cmp[] = {{"$gt", " > ?"}, {"$gte", " >= ?"}, {"$lt", " < ?"}, {"$lte", " <= ?"}};
        const char *frag = NULL;
        for (size_t i = 0; i < 4; i++)
            if (strcmp(op, cmp[i].op) == 0) frag = cmp[i].sql;
        sb_cat(sql, " AND ");
        sb_ident(sql, key);
        if (frag) {
            sb_cat(sql, frag);
            if (!binds_add(b, arg, f, NULL)) goto oom;
        } else if (strcmp(op, "$not") == 0) {
            if (json_is_null(arg)) {
                sb_cat(sql, " IS NOT NULL");
            } else {
                sb_cat(sql, " IS NOT ?");
                if (!binds_add(b, arg, f, NULL)) goto oom;
            }
        } else if (strcmp(op, "$like") == 0) {
            if (!json_is_string(arg))
                return pylon_store_fail(err, 400, "INVALID_QUERY", "$like on \"%s\" needs a string",
                                        key);
            size_t n = json_string_length(arg);
            char *pat = malloc(n + 3);
            if (!pat) goto oom;
            pat[0] = '%';
            memcpy(pat + 1, json_string_value(arg), n);
            pat[n + 1] = '%';
            pat[n + 2] = '\0';
            sb_cat(sql, " LIKE ?");
            if (!binds_add(b, arg, f, pat)) {
                free(pat);
                goto oom;
            }
        } else if (strcmp(op, "$in") == 0) {
            if (!json_is_array(arg))
                return pylon_store_fail(err, 400, "INVALID_QUERY", "$in on \"%s\" needs an array",
                                        key);
            if (json_array_size(arg) == 0) {
                sb_cat(sql, " IS NOT NULL AND 0"); /* matches nothing */
                continue;
            }
            sb_cat(sql, " IN (");
            for (size_t i = 0; i < json_array_size(arg); i++) {
                sb_cat(sql, i ? ", ?" : "?");
                if (!binds_add(b, json_array_get(arg, i), f, NULL)) goto oom;
            }
            sb_cat(sql, ")");
        } else {
            return pylon_store_fail(err, 400, "INVALID_QUERY",
                                    "Unknown filter operator \"%s\" on \"%s\": use $gt, $gte, "
                                    "$lt, $lte, $not, $in or $like",
                                    op, key);
        }
    }
    return true;
oom:
    return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
}

/* SELECT * FROM "E" WHERE 1 [conditions] ORDER BY ... LIMIT ? OFFSET ? */
static bool compile_query(const pylon_entity *e, const pylon_store_query *q, sqlbuf *sql, binds *b,
                          json_t **limit_v, json_t **offset_v, pylon_store_error *err)
{
    sb_cat(sql, "SELECT * FROM ");
    sb_ident(sql, e->name);
    sb_cat(sql, " WHERE 1");
    const json_t *order = NULL;
    int64_t limit = q->limit, offset = q->offset;
    if (q->filter) {
        if (!json_is_object(q->filter))
            return pylon_store_fail(err, 400, "INVALID_QUERY", "The filter must be a JSON object");
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)q->filter, key, v)
        {
            if (key[0] != '$') {
                if (!compile_condition(e, key, v, sql, b, err)) return false;
            } else if (strcmp(key, "$order") == 0) {
                if (!json_is_object(v))
                    return pylon_store_fail(err, 400, "INVALID_QUERY",
                                            "$order must be an object such as {\"createdAt\": "
                                            "\"desc\"}");
                order = v;
            } else if (strcmp(key, "$limit") == 0 || strcmp(key, "$offset") == 0) {
                if (!json_is_integer(v) || json_integer_value(v) < 0)
                    return pylon_store_fail(err, 400, "INVALID_QUERY",
                                            "%s must be a non-negative integer", key);
                if (key[1] == 'l') {
                    if (limit < 0 || json_integer_value(v) < limit) limit = json_integer_value(v);
                } else {
                    offset = json_integer_value(v);
                }
            } else if (strcmp(key, "$search") == 0) {
                if (!json_is_string(v))
                    return pylon_store_fail(err, 400, "INVALID_QUERY", "$search must be a string");
                if (!compile_search(e, json_string_value(v), sql, b, err)) return false;
            } else {
                return pylon_store_fail(err, 400, "INVALID_QUERY",
                                        "Unknown filter key \"%s\": use $order, $limit, $offset "
                                        "or $search",
                                        key);
            }
        }
    }
    if (q->after) {
        sb_cat(sql, " AND \"id\" > ?");
        char *after = strdup(q->after);
        if (!after || !binds_add(b, NULL, NULL, after)) {
            free(after);
            return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        }
    }
    sb_cat(sql, " ORDER BY ");
    if (order && json_object_size(order) > 0) {
        const char *key;
        json_t *dir;
        bool first = true;
        json_object_foreach((json_t *)order, key, dir)
        {
            const pylon_field *f;
            if (!column_of(e, key, &f, err)) return false;
            const char *d = json_is_string(dir) ? json_string_value(dir) : "";
            bool desc = strcasecmp(d, "desc") == 0;
            if (!desc && strcasecmp(d, "asc") != 0)
                return pylon_store_fail(err, 400, "INVALID_QUERY",
                                        "$order.%s must be \"asc\" or \"desc\"", key);
            if (!first) sb_cat(sql, ", ");
            sb_ident(sql, key);
            sb_cat(sql, desc ? " DESC" : " ASC");
            first = false;
        }
        sb_cat(sql, ", \"id\" ASC");
    } else {
        sb_cat(sql, "\"id\" ASC");
    }
    sb_cat(sql, " LIMIT ? OFFSET ?");
    *limit_v = json_integer(limit < 0 ? -1 : limit);
    *offset_v = json_integer(offset < 0 ? 0 : offset);
    if (!binds_add(b, *limit_v, NULL, NULL) || !binds_add(b, *offset_v, NULL, NULL))
        return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
    return !sql->oom || pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
}

/* LIMIT/OFFSET are integers: bind them directly (bind_one's id rule wants strings). */
static bool bind_query(sqlite3_stmt *st, const binds *b, pylon_store_error *err)
{
    for (size_t i = 0; i < b->n; i++) {
        const bind_item *it = &b->items[i];
        int idx = (int)i + 1;
        if (i + 2 >= b->n) {
            sqlite3_bind_int64(st, idx, json_integer_value(it->v));
        } else if (!bind_one(st, idx, it, err)) {
            return false;
        }
    }
    return true;
}

void pylon_store_sqlite_global_init(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static _Atomic int64_t mmap_bytes;

void pylon_store_sqlite_set_mmap(int64_t bytes)
{
    atomic_store(&mmap_bytes, bytes > 0 ? bytes : 0);
}

/* ---- the backend ------------------------------------------------------------------------- */

static void sq_close(pylon_store_conn *c)
{
    if (!c) return;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        if (c->cache[i].st) sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    for (size_t i = 0; c->per_entity && i < c->m->nentities; i++) {
        sqlite3_finalize(c->per_entity[i].by_id);
        pylon_schema_row_plan_free(c->per_entity[i].by_id_plan);
        for (size_t j = 0; j < INSERT_SHAPES; j++)
            sqlite3_finalize(c->per_entity[i].insert[j]);
    }
    free(c->per_entity);
    sqlite3_finalize(c->log_change);
    sqlite3_close(c->db);
    free(c);
}

static bool exec(pylon_store_conn *c, const char *sql, pylon_store_error *err)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) == SQLITE_OK) return true;
    pylon_store_fail(err, 500, "QUERY_FAILED", "%s: %s", sql, msg ? msg : "?");
    sqlite3_free(msg);
    return false;
}

/* What applying the manifest changed, one log line each (also in _pylon_schema_history), and
 * what it left alone on purpose (a removed field's column stays, ...) as warnings. */
static void log_schema_changes(const char *summary)
{
    for (const char *line = summary; line && *line;) {
        const char *end = strchr(line, '\n');
        int len = (int)(end ? end - line : (ptrdiff_t)strlen(line));
        if (len > 0) {
            if (strncmp(line, "warning: ", 9) == 0)
                pylon_log_warn("db", "schema: %.*s", len - 9, line + 9);
            else
                pylon_log_info("db", "schema: %.*s", len, line);
        }
        line = end ? end + 1 : line + len;
    }
}

static pylon_store_conn *sq_open(const char *target, bool writer, const pylon_manifest *m,
                                 pylon_store_error *err)
{
    pylon_store_conn *c = calloc(1, sizeof *c);
    if (!c) {
        pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        return NULL;
    }
    c->writer = writer;
    c->m = m;
    int flags = (writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY) |
                SQLITE_OPEN_NOMUTEX;
    /* ":memory:" would give every connection its own empty database: share one instead. */
    bool memory = strcmp(target, ":memory:") == 0;
    c->memory = memory;
    if (memory) {
        target = "file:pylon-memory?mode=memory&cache=shared";
        flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX;
    }
    if (sqlite3_open_v2(target, &c->db, flags, NULL) != SQLITE_OK) {
        pylon_store_fail(err, 500, "SCHEMA_INIT_FAILED", "cannot open %s: %s", target,
                         c->db ? sqlite3_errmsg(c->db) : "out of memory");
        sq_close(c);
        return NULL;
    }
    sqlite3_busy_timeout(c->db, 5000);
    /* WAL with synchronous=NORMAL: a commit survives a crash of the process (kill -9); the
     * writer owns checkpoints (automatic every 1000 pages) and the journal is kept small. */
    const char *pragmas = writer ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                   "PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536;"
                                   "PRAGMA temp_store=MEMORY; PRAGMA wal_autocheckpoint=1000;"
                                   "PRAGMA journal_size_limit=67108864;"
                                 : "PRAGMA query_only=ON; PRAGMA cache_size=-16384;"
                                   "PRAGMA temp_store=MEMORY;";
    if (!exec(c, pragmas, err)) {
        sq_close(c);
        return NULL;
    }
    int64_t map = atomic_load(&mmap_bytes);
    if (map > 0 && !memory) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA mmap_size=%lld;", (long long)map);
        if (!exec(c, sql, err)) {
            sq_close(c);
            return NULL;
        }
    }
    /* Shared-cache readers would otherwise fail with SQLITE_LOCKED while the writer writes. */
    if (memory && !writer && !exec(c, "PRAGMA read_uncommitted=ON;", err)) {
        sq_close(c);
        return NULL;
    }
    if (writer) {
        char msg[512];
        char *summary = NULL;
        if (pylon_schema_apply(c->db, m, "serve", &summary, msg, sizeof msg) != 0) {
            pylon_store_fail(err, 500, "SCHEMA_INIT_FAILED", "%s", msg);
            free(summary);
            sq_close(c);
            return NULL;
        }
        log_schema_changes(summary);
        free(summary);
        /* The sync layer's bookkeeping: the seq floor a test reset leaves, and the per-row
         * index the compaction walks. */
        if (!exec(c,
                  "CREATE TABLE IF NOT EXISTS _pylon_meta (key TEXT PRIMARY KEY, value INTEGER);"
                  "CREATE INDEX IF NOT EXISTS _pylon_changes_row ON _pylon_changes (entity, "
                  "row_id, seq);"
                  "CREATE INDEX IF NOT EXISTS _pylon_op_ids_seq ON _pylon_op_ids (seq);"
                  "CREATE TABLE IF NOT EXISTS _pylon_shards (id TEXT PRIMARY KEY, kind TEXT NOT "
                  "NULL, config TEXT NOT NULL, options TEXT NOT NULL, tick INTEGER NOT NULL, "
                  "state BLOB NOT NULL, saved_at INTEGER NOT NULL);",
                  err)) {
            sq_close(c);
            return NULL;
        }
    }
    return c;
}

/* Savepoints run once per operation inside a group commit: cached statements, not
 * sqlite3_exec (which would parse the SQL every time). */
static bool run_cached(pylon_store_conn *c, const char *sql, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(c, sql, err);
    if (!st) return false;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || step_error(c, rc, "QUERY_FAILED", err);
}

static bool sq_begin(pylon_store_conn *c, pylon_store_error *err)
{
    c->seq_at_begin = c->seq;
    return run_cached(c, "BEGIN IMMEDIATE", err);
}

static bool sq_commit(pylon_store_conn *c, pylon_store_error *err)
{
    if (run_cached(c, "COMMIT", err)) return true;
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    c->seq = c->seq_at_begin;
    return false;
}

static void sq_rollback(pylon_store_conn *c)
{
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    c->seq = c->seq_at_begin;
}

/* A reader's snapshot held across several requests: only with WAL (the shared-cache memory
 * database would hold table locks against the writer instead). */
static bool sq_read_begin(pylon_store_conn *c)
{
    return !c->memory && !c->writer && run_cached(c, "BEGIN", NULL);
}

static void sq_read_end(pylon_store_conn *c)
{
    /* SQLite may have ended it already (some errors roll back); COMMIT of a read changes
     * nothing, and it cannot fail while every cached statement is reset, as they are here. */
    if (!sqlite3_get_autocommit(c->db)) run_cached(c, "COMMIT", NULL);
}

static bool sq_savepoint(pylon_store_conn *c, pylon_store_error *err)
{
    c->seq_at_savepoint = c->seq;
    return run_cached(c, "SAVEPOINT op", err);
}

static void sq_savepoint_release(pylon_store_conn *c)
{
    run_cached(c, "RELEASE op", NULL);
}

static void sq_savepoint_rollback(pylon_store_conn *c)
{
    run_cached(c, "ROLLBACK TO op", NULL);
    run_cached(c, "RELEASE op", NULL);
    c->seq = c->seq_at_savepoint;
}

/* The kept statements of `e`, or NULL for an entity from another manifest copy (its
 * statements go through the SQL-keyed cache) or without memory for the table. */
static entity_stmts *stmts_of(pylon_store_conn *c, const pylon_entity *e)
{
    uintptr_t at = (uintptr_t)e, first = c->m ? (uintptr_t)c->m->entities : 0;
    size_t k = (at - first) / sizeof *e;
    if (!c->m || at < first || k >= c->m->nentities || &c->m->entities[k] != e) return NULL;
    if (!c->per_entity && !(c->per_entity = calloc(c->m->nentities, sizeof *c->per_entity)))
        return NULL;
    return &c->per_entity[k];
}

/* `sql` prepared and kept in *slot when a slot is given, else through the SQL-keyed cache. */
static sqlite3_stmt *prepare_kept(pylon_store_conn *c, const char *sql, sqlite3_stmt **slot,
                                  pylon_store_error *err)
{
    if (!slot) return prepare(c, sql, err);
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) != SQLITE_OK) {
        pylon_store_fail(err, 500, "QUERY_FAILED", "%s", sqlite3_errmsg(c->db));
        sqlite3_finalize(*slot);
        *slot = NULL;
    }
    return *slot;
}

/* Steps `SELECT * … WHERE id = ?` once: SQLITE_ROW leaves the row on *st (reset it after),
 * 0 when the statement could not be prepared (*err set). */
static int step_by_id(pylon_store_conn *c, const pylon_entity *e, const char *id, sqlite3_stmt **st,
                      pylon_store_error *err)
{
    entity_stmts *es = stmts_of(c, e);
    if (es && es->by_id) {
        sqlite3_reset(es->by_id);
        *st = es->by_id;
    } else {
        char *sql = sqlite3_mprintf("SELECT * FROM \"%w\" WHERE \"id\" = ?", e->name);
        if (!sql) {
            pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
            return 0;
        }
        *st = prepare_kept(c, sql, es ? &es->by_id : NULL, err);
        sqlite3_free(sql);
        if (!*st) return 0;
    }
    sqlite3_bind_text(*st, 1, id, -1, SQLITE_TRANSIENT);
    return sqlite3_step(*st);
}

static bool sq_get(pylon_store_conn *c, const pylon_entity *e, const char *id, json_t **row,
                   pylon_store_error *err)
{
    sqlite3_stmt *st;
    int rc = step_by_id(c, e, id, &st, err);
    *row = NULL;
    if (!rc) return false;
    if (rc == SQLITE_ROW) {
        *row = pylon_schema_row_to_json(e, st);
        rc = *row ? SQLITE_DONE : SQLITE_NOMEM;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE || step_error(c, rc, "QUERY_FAILED", err);
}

static bool sq_get_text(pylon_store_conn *c, const pylon_entity *e, const char *id, char **text,
                        size_t *len, pylon_store_error *err)
{
    sqlite3_stmt *st;
    int rc = step_by_id(c, e, id, &st, err);
    *text = NULL;
    if (!rc) return false;
    if (rc == SQLITE_ROW) {
        entity_stmts *es = stmts_of(c, e);
        if (es && es->by_id == st) { /* the kept statement: its plan is kept too */
            if (es->by_id_plan && !pylon_schema_row_plan_fits(es->by_id_plan, st)) {
                pylon_schema_row_plan_free(es->by_id_plan);
                es->by_id_plan = NULL;
            }
            if (!es->by_id_plan) es->by_id_plan = pylon_schema_row_plan(e, st);
            *text =
                es->by_id_plan ? pylon_schema_row_to_text_planned(es->by_id_plan, st, len) : NULL;
        } else {
            *text = pylon_schema_row_to_text(e, st, len);
        }
        if (!*text) { /* a row only the tree path writes exactly (or no memory) */
            json_t *row = pylon_schema_row_to_json(e, st);
            *text = row ? json_dumps(row, JSON_COMPACT) : NULL;
            json_decref(row);
            if (*text) *len = strlen(*text);
        }
        rc = *text ? SQLITE_DONE : SQLITE_NOMEM;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE || step_error(c, rc, "QUERY_FAILED", err);
}

static bool sq_find(pylon_store_conn *c, const pylon_entity *e, const pylon_store_query *q,
                    json_t **rows, pylon_store_error *err)
{
    sqlbuf sql = {0};
    binds b = {0};
    json_t *limit_v = NULL, *offset_v = NULL;
    bool ok = compile_query(e, q, &sql, &b, &limit_v, &offset_v, err);
    sqlite3_stmt *st = ok ? prepare(c, sql.p, err) : NULL;
    ok = st && bind_query(st, &b, err);
    json_t *out = ok ? json_array() : NULL;
    int rc = SQLITE_DONE;
    while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *r = pylon_schema_row_to_json(e, st);
        if (!r || json_array_append_new(out, r) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    if (st) sqlite3_reset(st);
    if (ok && rc != SQLITE_DONE) ok = step_error(c, rc, "QUERY_FAILED", err);
    free(sql.p);
    binds_free(&b);
    json_decref(limit_v);
    json_decref(offset_v);
    if (!ok) {
        json_decref(out);
        return false;
    }
    *rows = out;
    return true;
}

/* ---- aggregate (backend.md §3.5) ----------------------------------------------------------- */

static bool numeric(const pylon_field *f)
{
    return f && (f->type == PYLON_FIELD_INT || f->type == PYLON_FIELD_FLOAT);
}

/* Appends "FN(col) AS "alias"" for each field of spec[key]; numeric-only functions refuse
 * text columns. */
static bool agg_list(const pylon_entity *e, const json_t *spec, const char *key, const char *fn,
                     const char *prefix, bool need_number, sqlbuf *sql, bool *first,
                     pylon_store_error *err)
{
    json_t *list = json_object_get(spec, key);
    if (!list) return true;
    if (!json_is_array(list))
        return pylon_store_fail(err, 400, "INVALID_QUERY", "\"%s\" must be an array of field names",
                                key);
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        const char *name = json_string_value(v);
        const pylon_field *f;
        if (!name)
            return pylon_store_fail(err, 400, "INVALID_QUERY", "\"%s\" holds field names", key);
        if (!column_of(e, name, &f, err)) return false;
        if (need_number && !numeric(f))
            return pylon_store_fail(err, 400, "INVALID_QUERY",
                                    "%s needs a number field; \"%s\" is %s", key, name,
                                    f ? f->type_text : "the id");
        sb_cat(sql, *first ? "" : ", ");
        sb_cat(sql, fn);
        sb_cat(sql, "(");
        if (strcmp(key, "countDistinct") == 0) sb_cat(sql, "DISTINCT ");
        sb_ident(sql, name);
        sb_cat(sql, ") AS \"");
        sb_cat(sql, prefix);
        sb_cat(sql, name);
        sb_cat(sql, "\"");
        *first = false;
    }
    return true;
}

static bool sq_aggregate(pylon_store_conn *c, const pylon_entity *e, const json_t *spec,
                         json_t **rows, pylon_store_error *err)
{
    if (!json_is_object(spec))
        return pylon_store_fail(err, 400, "INVALID_QUERY", "The body must be a JSON object");
    static const char *const keys[] = {"count", "sum",           "avg",    "min",
                                       "max",   "countDistinct", "groupBy"};
    bool any = false;
    for (size_t i = 0; i < 7; i++)
        any = any || json_object_get(spec, keys[i]);
    if (!any)
        return pylon_store_fail(err, 400, "INVALID_QUERY",
                                "Ask for at least one of count, sum, avg, min, max, countDistinct "
                                "or groupBy");
    sqlbuf sql = {0}, group = {0};
    binds b = {0};
    bool first = true, ok = true;
    sb_cat(&sql, "SELECT ");
    /* Group columns first, so rows read naturally. */
    json_t *gb = json_object_get(spec, "groupBy");
    if (gb && !json_is_array(gb)) {
        ok = pylon_store_fail(err, 400, "INVALID_QUERY", "groupBy must be an array");
        goto out;
    }
    size_t i;
    json_t *g;
    json_array_foreach(gb, i, g)
    {
        const char *name = json_is_string(g) ? json_string_value(g)
                                             : json_string_value(json_object_get(g, "field"));
        const char *bucket = json_string_value(json_object_get(g, "bucket"));
        const pylon_field *f;
        if (!name) {
            ok = pylon_store_fail(err, 400, "INVALID_QUERY",
                                  "groupBy entries are field names or {\"field\",\"bucket\"}");
            goto out;
        }
        if (!(ok = column_of(e, name, &f, err))) goto out;
        char expr[200];
        if (json_is_object(g)) {
            static const char *const names[] = {"hour", "day", "week", "month", "year"};
            static const char *const fmts[] = {"%Y-%m-%d %H:00:00", "%Y-%m-%d", "%Y-W%W", "%Y-%m",
                                               "%Y"};
            int k = -1;
            for (int j = 0; bucket && j < 5; j++)
                if (strcmp(bucket, names[j]) == 0) k = j;
            if (k < 0) {
                ok = pylon_store_fail(err, 400, "INVALID_QUERY",
                                      "groupBy bucket must be hour, day, week, month or year");
                goto out;
            }
            snprintf(expr, sizeof expr, "strftime('%s', \"%s\") AS \"%s_%s\"", fmts[k], name, name,
                     names[k]);
            sb_cat(&group, group.len ? ", " : "");
            char ref[120];
            snprintf(ref, sizeof ref, "\"%s_%s\"", name, names[k]);
            sb_cat(&group, ref);
        } else {
            snprintf(expr, sizeof expr, "\"%s\"", name);
            sb_cat(&group, group.len ? ", " : "");
            sb_cat(&group, expr);
        }
        sb_cat(&sql, first ? "" : ", ");
        sb_cat(&sql, expr);
        first = false;
    }
    json_t *count = json_object_get(spec, "count");
    if (count) {
        const char *cf = json_string_value(count);
        if (!cf) {
            ok = pylon_store_fail(err, 400, "INVALID_QUERY", "count is \"*\" or a field name");
            goto out;
        }
        sb_cat(&sql, first ? "" : ", ");
        first = false;
        if (strcmp(cf, "*") == 0) {
            sb_cat(&sql, "COUNT(*) AS \"count\"");
        } else {
            const pylon_field *f;
            if (!(ok = column_of(e, cf, &f, err))) goto out;
            sb_cat(&sql, "COUNT(");
            sb_ident(&sql, cf);
            sb_cat(&sql, ") AS \"count_");
            sb_cat(&sql, cf);
            sb_cat(&sql, "\"");
        }
    }
    if (!(ok = agg_list(e, spec, "sum", "SUM", "sum_", true, &sql, &first, err)) ||
        !(ok = agg_list(e, spec, "avg", "AVG", "avg_", true, &sql, &first, err)) ||
        !(ok = agg_list(e, spec, "min", "MIN", "min_", false, &sql, &first, err)) ||
        !(ok = agg_list(e, spec, "max", "MAX", "max_", false, &sql, &first, err)) ||
        !(ok = agg_list(e, spec, "countDistinct", "COUNT", "count_distinct_", false, &sql, &first,
                        err)))
        goto out;
    sb_cat(&sql, " FROM ");
    sb_ident(&sql, e->name);
    sb_cat(&sql, " WHERE 1");
    json_t *where = json_object_get(spec, "where");
    if (where) {
        if (!json_is_object(where)) {
            ok = pylon_store_fail(err, 400, "INVALID_QUERY", "where must be an object");
            goto out;
        }
        const char *key;
        json_t *v;
        json_object_foreach(where, key,
                            v) if (!(ok = compile_condition(e, key, v, &sql, &b, err))) goto out;
    }
    if (group.len) {
        sb_cat(&sql, " GROUP BY ");
        sb_cat(&sql, group.p);
        sb_cat(&sql, " ORDER BY ");
        sb_cat(&sql, group.p);
    }
    if (sql.oom || group.oom) {
        ok = pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        goto out;
    }
    sqlite3_stmt *st = prepare(c, sql.p, err);
    if (!(ok = st != NULL)) goto out;
    for (size_t k = 0; ok && k < b.n; k++)
        ok = bind_one(st, (int)k + 1, &b.items[k], err);
    json_t *out = json_array();
    int rc = SQLITE_DONE;
    while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int col = 0; col < sqlite3_column_count(st); col++) {
            json_t *v;
            const pylon_field *f = pylon_entity_field(e, sqlite3_column_name(st, col));
            switch (sqlite3_column_type(st, col)) {
            case SQLITE_INTEGER: /* a grouped bool column stays a boolean (DECISIONS §2) */
                v = f && f->type == PYLON_FIELD_BOOL ? json_boolean(sqlite3_column_int64(st, col))
                                                     : json_integer(sqlite3_column_int64(st, col));
                break;
            case SQLITE_FLOAT:
                v = json_real(sqlite3_column_double(st, col));
                break;
            case SQLITE_NULL:
                v = json_null();
                break;
            default:
                v = json_string((const char *)sqlite3_column_text(st, col));
            }
            json_object_set_new(row, sqlite3_column_name(st, col), v ? v : json_null());
        }
        json_array_append_new(out, row);
    }
    sqlite3_reset(st);
    if (ok && rc != SQLITE_DONE) ok = step_error(c, rc, "QUERY_FAILED", err);
    if (ok)
        *rows = out;
    else
        json_decref(out);
out:
    free(sql.p);
    free(group.p);
    binds_free(&b);
    return ok;
}

static bool sq_count(pylon_store_conn *c, const pylon_entity *e, int64_t *n, pylon_store_error *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM \"%s\"", e->name);
    sqlite3_stmt *st = prepare(c, sql, err);
    if (!st) return false;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *n = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || step_error(c, rc, "QUERY_FAILED", err);
}

/* Checks every key of `data` is a column and collects (field, value) pairs in order. */
static bool collect_columns(const pylon_entity *e, const json_t *data, const pylon_field **fields,
                            const json_t **values, size_t *n, pylon_store_error *err)
{
    if (!json_is_object(data))
        return pylon_store_fail(err, 400, "INVALID_DATA", "The body must be a JSON object");
    *n = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)data, key, v)
    {
        if (strcmp(key, "id") == 0) continue; /* the id is decided by the caller */
        const pylon_field *f = pylon_entity_field(e, key);
        if (!f) {
            char buf[400];
            return pylon_store_fail(err, 400, "INVALID_COLUMN", "%s",
                                    pylon_entity_unknown_column(e, key, buf, sizeof buf));
        }
        fields[*n] = f;
        values[*n] = v;
        (*n)++;
    }
    return true;
}

/* The INSERT of `e` for the given fields (in manifest order), reset. `shape` (the fields as
 * bits, NULL when the entity has too many fields for one) finds it among the kept ones. */
static sqlite3_stmt *insert_stmt(pylon_store_conn *c, const pylon_entity *e, const uint64_t *shape,
                                 const pylon_field **fields, size_t n, pylon_store_error *err)
{
    entity_stmts *es = shape ? stmts_of(c, e) : NULL;
    sqlite3_stmt **slot = NULL;
    for (size_t j = 0; es && j < INSERT_SHAPES && !slot; j++) {
        if (es->insert[j] && es->insert_fields[j] == *shape) {
            sqlite3_reset(es->insert[j]);
            return es->insert[j];
        }
        if (!es->insert[j]) slot = &es->insert[j];
    }
    sqlbuf sql = {0};
    sb_cat(&sql, "INSERT INTO ");
    sb_ident(&sql, e->name);
    sb_cat(&sql, " (\"id\"");
    for (size_t i = 0; i < n; i++) {
        sb_cat(&sql, ", ");
        sb_ident(&sql, fields[i]->name);
    }
    sb_cat(&sql, ") VALUES (?");
    for (size_t i = 0; i < n; i++)
        sb_cat(&sql, ", ?");
    sb_cat(&sql, ")");
    if (sql.oom) {
        pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
        return NULL;
    }
    sqlite3_stmt *st = prepare_kept(c, sql.p, slot, err);
    free(sql.p);
    if (st && slot) es->insert_fields[slot - es->insert] = *shape;
    return st;
}

static bool sq_insert(pylon_store_conn *c, const pylon_entity *e, const char *id,
                      const json_t *data, char **row_text, size_t *row_len, pylon_store_error *err)
{
    const pylon_field *fields[e->nfields + 1];
    const json_t *values[e->nfields + 1];
    size_t n;
    if (!collect_columns(e, data, fields, values, &n, err)) return false;
    /* Required fields first, so the answer names the field (not SQLite's constraint text). */
    for (size_t i = 0; i < e->nfields; i++) {
        const pylon_field *f = &e->fields[i];
        if (f->optional) continue;
        const json_t *v = json_object_get(data, f->name);
        if (!v || json_is_null(v))
            return pylon_store_fail(err, 400, "MISSING_FIELD",
                                    "Missing required field \"%s\" (%s) for %s", f->name,
                                    f->type_text, e->name);
    }
    /* Columns in the manifest's order whatever the body's order, so each set of given fields
     * has one statement. */
    const json_t *by_field[e->nfields + 1];
    memset(by_field, 0, sizeof by_field);
    for (size_t i = 0; i < n; i++)
        by_field[fields[i] - e->fields] = values[i];
    uint64_t shape = 0;
    n = 0;
    for (size_t k = 0; k < e->nfields; k++) {
        if (!by_field[k]) continue;
        fields[n] = &e->fields[k];
        values[n++] = by_field[k];
        if (k < 64) shape |= UINT64_C(1) << k;
    }
    sqlite3_stmt *st = insert_stmt(c, e, e->nfields <= 64 ? &shape : NULL, fields, n, err);
    if (!st) return false;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    for (size_t i = 0; i < n; i++) {
        char msg[300];
        if (pylon_schema_bind_value(st, (int)i + 2, fields[i], values[i], msg, sizeof msg) != 0) {
            sqlite3_reset(st);
            return pylon_store_fail(err, 400, "INVALID_DATA", "%s", msg);
        }
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return step_error(c, rc, "INSERT_FAILED", err);
    /* The stored row, written from what was bound rather than read back. */
    *row_text = pylon_schema_insert_text(e, id, data, row_len);
    return *row_text || pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
}

static bool sq_update(pylon_store_conn *c, const pylon_entity *e, const char *id,
                      const json_t *patch, json_t **row, pylon_store_error *err)
{
    const pylon_field *fields[e->nfields + 1];
    const json_t *values[e->nfields + 1];
    size_t n;
    *row = NULL;
    if (!collect_columns(e, patch, fields, values, &n, err)) return false;
    if (n == 0)
        return pylon_store_fail(err, 400, "INVALID_DATA",
                                "Nothing to update: the body names no field of %s", e->name);
    sqlbuf sql = {0};
    sb_cat(&sql, "UPDATE ");
    sb_ident(&sql, e->name);
    sb_cat(&sql, " SET ");
    for (size_t i = 0; i < n; i++) {
        if (i) sb_cat(&sql, ", ");
        sb_ident(&sql, fields[i]->name);
        sb_cat(&sql, " = ?");
    }
    sb_cat(&sql, " WHERE \"id\" = ?");
    if (sql.oom) return pylon_store_fail(err, 503, "OVERLOADED", "out of memory");
    sqlite3_stmt *st = prepare(c, sql.p, err);
    free(sql.p);
    if (!st) return false;
    for (size_t i = 0; i < n; i++) {
        char msg[300];
        if (!fields[i]->optional && json_is_null(values[i])) {
            sqlite3_reset(st);
            return pylon_store_fail(err, 400, "INVALID_DATA",
                                    "Field \"%s\" is required and cannot be set to null",
                                    fields[i]->name);
        }
        if (pylon_schema_bind_value(st, (int)i + 1, fields[i], values[i], msg, sizeof msg) != 0) {
            sqlite3_reset(st);
            return pylon_store_fail(err, 400, "INVALID_DATA", "%s", msg);
        }
    }
    sqlite3_bind_text(st, (int)n + 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return step_error(c, rc, "UPDATE_FAILED", err);
    if (sqlite3_changes(c->db) == 0) return true; /* no such row: *row stays NULL */
    return sq_get(c, e, id, row, err);
}

static bool sq_remove(pylon_store_conn *c, const pylon_entity *e, const char *id, bool *found,
                      pylon_store_error *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "DELETE FROM \"%s\" WHERE \"id\" = ?", e->name);
    sqlite3_stmt *st = prepare(c, sql, err);
    if (!st) return false;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return step_error(c, rc, "DELETE_FAILED", err);
    *found = sqlite3_changes(c->db) > 0;
    return true;
}

static bool sq_log_change(pylon_store_conn *c, pylon_change *ch, pylon_store_error *err)
{
    sqlite3_stmt *st = c->log_change;
    if (!st &&
        !(st = prepare_kept(
              c,
              "INSERT INTO _pylon_changes (entity, row_id, kind, fields, data, ts, op_id, seq) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              &c->log_change, err)))
        return false;
    char *fields = ch->fields ? json_dumps(ch->fields, JSON_COMPACT) : NULL;
    char *data = ch->data ? json_dumps(ch->data, JSON_COMPACT) : NULL;
    sqlite3_bind_text(st, 1, ch->entity, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ch->row_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pylon_change_kind_name(ch->kind), -1, SQLITE_STATIC);
    if (fields) sqlite3_bind_text(st, 4, fields, -1, free);
    if (data)
        sqlite3_bind_text(st, 5, data, -1, free);
    else if (ch->data_text) /* already text: bound without a copy */
        sqlite3_bind_text(st, 5, ch->data_text, (int)ch->data_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, ch->ts_ms);
    if (ch->op_id) sqlite3_bind_text(st, 7, ch->op_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, c->seq + 1);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return step_error(c, rc, "INSERT_FAILED", err);
    ch->seq = ++c->seq;
    if (ch->op_id) {
        st = prepare(c, "INSERT OR IGNORE INTO _pylon_op_ids (op_id, seq, ts) VALUES (?, ?, ?)",
                     err);
        if (!st) return false;
        sqlite3_bind_text(st, 1, ch->op_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, ch->seq);
        sqlite3_bind_int64(st, 3, ch->ts_ms);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_DONE) return step_error(c, rc, "INSERT_FAILED", err);
    }
    return true;
}

static bool sq_op_seen(pylon_store_conn *c, const char *op_id, bool *seen, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(c, "SELECT 1 FROM _pylon_op_ids WHERE op_id = ?", err);
    if (!st) return false;
    sqlite3_bind_text(st, 1, op_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    *seen = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE || step_error(c, rc, "QUERY_FAILED", err);
}

/* Retention compacts rather than forgets: up to `upto`, only the latest event of each row up to
 * `upto` stays, an update becoming an insert that carries the full row; a delete stays as the
 * row's tombstone. So nothing a client could need is lost: a pull from 0 rebuilds every live
 * row, and a pull from any older cursor, even one inside the compacted range, gets every row
 * changed since as a full insert and every row deleted since as a delete. That is what lets a
 * fresh client page through the compacted range (its cursors lie inside it), and why an old
 * cursor never needs a 410. Only events up to `upto` supersede older ones: an event after it
 * may be a partial update, which cannot stand in for the full row it would replace.
 *
 * Incremental: a pass that committed earlier compacted everything up to `done_upto`. What is
 * left is the events newly inside the range (done_upto, upto], and the older survivors that
 * one of those supersedes (found through the (entity, row_id, seq) index). The work is the
 * events since the last pass, not the whole log: a full pass over every live row each time
 * cost inserts a quarter of their throughput once 100 000 events were retained. done_upto = 0
 * makes it a full pass. The cost of keeping tombstones: one event per deleted row. */
static bool sq_trim_changes(pylon_store_conn *c, int64_t done_upto, int64_t upto,
                            pylon_store_error *err)
{
    static const char *const sql[] = {
        /* ?1 done_upto, ?2 upto */
        "DELETE FROM _pylon_changes WHERE seq > ?1 AND seq <= ?2 AND EXISTS (SELECT 1 FROM "
        "_pylon_changes n WHERE n.entity = _pylon_changes.entity AND n.row_id = "
        "_pylon_changes.row_id AND n.seq > _pylon_changes.seq AND n.seq <= ?2)",
        "DELETE FROM _pylon_changes WHERE seq IN (SELECT o.seq FROM _pylon_changes n JOIN "
        "_pylon_changes o ON o.entity = n.entity AND o.row_id = n.row_id AND o.seq < n.seq "
        "WHERE n.seq > ?1 AND n.seq <= ?2 AND o.seq <= ?1)",
        "UPDATE _pylon_changes SET kind = 'insert', fields = NULL WHERE seq > ?1 AND seq <= ?2 "
        "AND kind = 'update'",
        "DELETE FROM _pylon_op_ids WHERE seq <= ?2"};
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
        sqlite3_stmt *st = prepare(c, sql[i], err);
        if (!st) return false;
        sqlite3_bind_int64(st, 1, done_upto);
        sqlite3_bind_int64(st, 2, upto);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return step_error(c, rc, "DELETE_FAILED", err);
    }
    return true;
}

static bool sq_changes_since(pylon_store_conn *c, int64_t since, int64_t limit, json_t **rows,
                             pylon_store_error *err)
{
    int rc;
    sqlite3_stmt *st =
        prepare(c,
                "SELECT seq, entity, row_id, kind, fields, data, ts FROM _pylon_changes "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                err);
    if (!st) return false;
    sqlite3_bind_int64(st, 1, since);
    sqlite3_bind_int64(st, 2, limit);
    json_t *out = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *fields = (const char *)sqlite3_column_text(st, 4);
        const char *data = (const char *)sqlite3_column_text(st, 5);
        json_t *row = json_pack("{s:I,s:s,s:s,s:s,s:o,s:o,s:I}", "seq",
                                (json_int_t)sqlite3_column_int64(st, 0), "entity",
                                (const char *)sqlite3_column_text(st, 1), "row_id",
                                (const char *)sqlite3_column_text(st, 2), "kind",
                                (const char *)sqlite3_column_text(st, 3), "fields",
                                fields ? json_loads(fields, 0, NULL) : json_null(), "data",
                                data ? json_loads(data, 0, NULL) : json_null(), "ts",
                                (json_int_t)sqlite3_column_int64(st, 6));
        if (!row || json_array_append_new(out, row) != 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        json_decref(out);
        return step_error(c, rc, "QUERY_FAILED", err);
    }
    *rows = out;
    return true;
}

/* The highest seq ever handed out, even after retention trims and test resets: the largest of
 * the remaining rows, the floor a reset left in _pylon_meta, and sqlite_sequence (databases
 * created before the writer numbered changes itself used AUTOINCREMENT). */
static bool sq_head_seq(pylon_store_conn *c, int64_t *seq, pylon_store_error *err)
{
    static const char *const sql[] = {
        "SELECT max(seq) FROM _pylon_changes",
        "SELECT value FROM _pylon_meta WHERE key = 'seq_floor'",
        "SELECT seq FROM sqlite_sequence WHERE name = '_pylon_changes'"};
    bool has_sequence = sqlite3_table_column_metadata(c->db, NULL, "sqlite_sequence", "seq", NULL,
                                                      NULL, NULL, NULL, NULL) == SQLITE_OK;
    *seq = 0;
    for (int i = 0; i < (has_sequence ? 3 : 2); i++) {
        sqlite3_stmt *st = prepare(c, sql[i], err);
        if (!st) return false;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_int64(st, 0) > *seq)
            *seq = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) return step_error(c, rc, "QUERY_FAILED", err);
    }
    if (c->writer) c->seq = c->seq_at_begin = c->seq_at_savepoint = *seq;
    return true;
}

static bool sq_reset(pylon_store_conn *c, pylon_store_error *err)
{
    for (size_t i = 0; i < c->m->nentities; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "DELETE FROM \"%s\"", c->m->entities[i].name);
        if (!exec(c, sql, err)) return false;
    }
    /* Seqs keep rising across a reset, so a client's old cursor is never reused. */
    sqlite3_stmt *st =
        prepare(c, "INSERT OR REPLACE INTO _pylon_meta (key, value) VALUES ('seq_floor', ?1)", err);
    if (!st) return false;
    sqlite3_bind_int64(st, 1, c->seq);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return step_error(c, rc, "DELETE_FAILED", err);
    return exec(c, "DELETE FROM _pylon_changes; DELETE FROM _pylon_op_ids;", err);
}

static bool sq_ping(pylon_store_conn *c, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(c, "SELECT 1", err);
    if (!st) return false;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || step_error(c, rc, "QUERY_FAILED", err);
}

static bool sq_shard_put(pylon_store_conn *c, const pylon_shard_row *row, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(c,
                               "INSERT OR REPLACE INTO _pylon_shards (id, kind, config, options, "
                               "tick, state, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               err);
    if (!st) return false;
    sqlite3_bind_text(st, 1, row->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, row->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, row->config ? row->config : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, row->options ? row->options : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)row->tick);
    sqlite3_bind_blob64(st, 6, row->len ? row->state : "", row->len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, row->saved_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || step_error(c, rc, "INSERT_FAILED", err);
}

static bool sq_shard_drop(pylon_store_conn *c, const char *id, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(c, "DELETE FROM _pylon_shards WHERE id = ?", err);
    if (!st) return false;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || step_error(c, rc, "DELETE_FAILED", err);
}

static bool sq_shard_rows(pylon_store_conn *c, void (*each)(void *ctx, const pylon_shard_row *row),
                          void *ctx, pylon_store_error *err)
{
    sqlite3_stmt *st = prepare(
        c, "SELECT id, kind, config, options, tick, state, saved_at FROM _pylon_shards ORDER BY id",
        err);
    if (!st) return false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        pylon_shard_row row = {.id = (const char *)sqlite3_column_text(st, 0),
                               .kind = (const char *)sqlite3_column_text(st, 1),
                               .config = (const char *)sqlite3_column_text(st, 2),
                               .options = (const char *)sqlite3_column_text(st, 3),
                               .tick = (uint64_t)sqlite3_column_int64(st, 4),
                               .state = sqlite3_column_blob(st, 5),
                               .len = (size_t)sqlite3_column_bytes(st, 5),
                               .saved_ms = sqlite3_column_int64(st, 6)};
        if (!row.id || !row.kind) continue; /* NOT NULL columns: only a damaged file */
        each(ctx, &row);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE || step_error(c, rc, "QUERY_FAILED", err);
}

/* Idle: PASSIVE. Once the WAL is wholly copied, every new read transaction takes read-mark 0
 * and ignores the WAL (no WAL-index lookup per page read) until the next write starts it over
 * from its beginning. */
static void sq_checkpoint(pylon_store_conn *c, bool idle)
{
    sqlite3_wal_checkpoint_v2(
        c->db, NULL, idle ? SQLITE_CHECKPOINT_PASSIVE : SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
}

const pylon_store_backend pylon_store_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .savepoint_release = sq_savepoint_release,
    .savepoint_rollback = sq_savepoint_rollback,
    .read_begin = sq_read_begin,
    .read_end = sq_read_end,
    .get = sq_get,
    .get_text = sq_get_text,
    .find = sq_find,
    .count = sq_count,
    .aggregate = sq_aggregate,
    .insert = sq_insert,
    .update = sq_update,
    .remove = sq_remove,
    .log_change = sq_log_change,
    .op_seen = sq_op_seen,
    .trim_changes = sq_trim_changes,
    .changes_since = sq_changes_since,
    .head_seq = sq_head_seq,
    .reset = sq_reset,
    .shard_put = sq_shard_put,
    .shard_drop = sq_shard_drop,
    .shard_rows = sq_shard_rows,
    .ping = sq_ping,
    .checkpoint = sq_checkpoint,
};
