/*
 * schema.c — additive schema application and the row <-> JSON mapping (see schema.h).
 *
 * The plan is computed and applied in the same transaction: each entity's table is introspected
 * (PRAGMA table_info / index_list / index_info), every missing piece is executed at once and
 * recorded as an operation; the operation list becomes the history row's plan_json. SQL text is
 * built with SQLite's own printf, whose %w escapes identifiers (names are validated by the
 * manifest loader too: this is the second lock on the door).
 */
#include "actors/schema.h"

#include "engine/fmt.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The internal tables. _pylon_changes.fields is a JSON array of changed field names (NULL for
 * insert/delete), data the JSON row after the change (NULL for delete), ts unix milliseconds. */
static const char INTERNAL_DDL[] =
    "CREATE TABLE IF NOT EXISTS _pylon_schema_history ("
    "id TEXT PRIMARY KEY NOT NULL, manifest_version INTEGER NOT NULL, app_version TEXT NOT NULL, "
    "applied_at TEXT NOT NULL, operation_count INTEGER NOT NULL, baseline TEXT NOT NULL, "
    "plan_json TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS _pylon_changes ("
    "seq INTEGER PRIMARY KEY, entity TEXT NOT NULL, row_id TEXT NOT NULL, "
    "kind TEXT NOT NULL CHECK(kind = 'insert' OR kind = 'update' OR kind = 'delete'), fields TEXT, "
    "data TEXT, "
    "ts INTEGER NOT NULL, op_id TEXT);"
    "CREATE TABLE IF NOT EXISTS _pylon_op_ids ("
    "op_id TEXT PRIMARY KEY NOT NULL, seq INTEGER, ts INTEGER);";

const char *pylon_schema_sql_type(pylon_field_type t)
{
    switch (t) {
    case PYLON_FIELD_INT:
    case PYLON_FIELD_BOOL:
        return "INTEGER";
    case PYLON_FIELD_FLOAT:
        return "REAL";
    default:
        return "TEXT";
    }
}

size_t pylon_schema_quote_ident(char *out, size_t outlen, const char *name)
{
    size_t need = 2, o = 0;
    for (const char *p = name; *p; p++)
        need += *p == '"' ? 2 : 1;
    if (outlen == 0) return need;
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o + 1 < outlen) out[o++] = (ch);                                                       \
    } while (0)
    PUT('"');
    for (const char *p = name; *p; p++) {
        PUT(*p);
        if (*p == '"') PUT('"');
    }
    PUT('"');
#undef PUT
    out[o] = '\0';
    return need;
}

/* ---- apply state ---------------------------------------------------------------------------- */

typedef struct apply {
    sqlite3 *db;
    const pylon_manifest *m;
    json_t *plan;   /* operations done, in order */
    FILE *lines;    /* summary: one line per operation */
    FILE *warnings; /* summary: one line per warning */
    char *lines_buf, *warnings_buf;
    size_t lines_len, warnings_len;
    char *err;
    size_t errlen;
} apply;

static int fail(apply *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(apply *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (a->errlen) vsnprintf(a->err, a->errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static void warn(apply *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(apply *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("warning: ", a->warnings);
    vfprintf(a->warnings, fmt, ap);
    fputc('\n', a->warnings);
    va_end(ap);
}

static int run_op_inner(apply *a, const char *op, const char *table, const char *line,
                        const char *sql, const char *hint)
{
    if (!sql || !line) return fail(a, "out of memory");
    char *emsg = NULL;
    int rc = sqlite3_exec(a->db, sql, NULL, NULL, &emsg);
    if (rc != SQLITE_OK) {
        fail(a, "%s failed: %s%s%s [%s]", op, emsg ? emsg : sqlite3_errstr(rc), hint ? "; " : "",
             hint ? hint : "", sql);
        sqlite3_free(emsg);
        return -1;
    }
    json_t *o = json_pack("{s:s, s:s, s:s}", "op", op, "table", table, "sql", sql);
    if (!o || json_array_append_new(a->plan, o) != 0) return fail(a, "out of memory");
    fprintf(a->lines, "%s\n", line);
    return 0;
}

/* Runs one planned statement and records it: {op, table, sql} in the plan, `line` in the
 * summary. `sql` and `line` are sqlite3_malloc'd and freed here; `hint` is added to the error. */
static int run_op(apply *a, const char *op, const char *table, char *line, char *sql,
                  const char *hint)
{
    int rc = run_op_inner(a, op, table, line, sql, hint);
    sqlite3_free(line);
    sqlite3_free(sql);
    return rc;
}

/* ---- introspection -------------------------------------------------------------------------- */

typedef struct column {
    char *name, *type;
    bool notnull, pk;
} column;

typedef struct columns {
    column *v;
    size_t n;
} columns;

static void columns_free(columns *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].name);
        free(c->v[i].type);
    }
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

/* PRAGMA table_info: no rows when the table does not exist. */
static int table_columns(apply *a, const char *table, columns *out)
{
    memset(out, 0, sizeof *out);
    char *sql = sqlite3_mprintf("PRAGMA table_info(\"%w\")", table);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return fail(a, "introspecting \"%s\": %s", table, sqlite3_errstr(rc));
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            column *nv = realloc(out->v, cap * sizeof *nv);
            if (!nv) {
                rc = SQLITE_NOMEM;
                break;
            }
            out->v = nv;
        }
        const char *n = (const char *)sqlite3_column_text(st, 1);
        const char *t = (const char *)sqlite3_column_text(st, 2);
        column *c = &out->v[out->n];
        c->name = strdup(n ? n : "");
        c->type = strdup(t ? t : "");
        c->notnull = sqlite3_column_int(st, 3) != 0;
        c->pk = sqlite3_column_int(st, 5) != 0;
        if (!c->name || !c->type) {
            free(c->name);
            free(c->type);
            rc = SQLITE_NOMEM;
            break;
        }
        out->n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        columns_free(out);
        return fail(a, "introspecting \"%s\": %s", table, sqlite3_errstr(rc));
    }
    return 0;
}

static const column *find_column(const columns *cols, const char *name)
{
    for (size_t i = 0; i < cols->n; i++)
        if (strcasecmp(cols->v[i].name, name) == 0) return &cols->v[i];
    return NULL;
}

/* Type and tbl_name of a schema object by name (SQLite names ignore case). 0 found, 1 absent. */
static int schema_object(apply *a, const char *name, char *type, size_t typelen, char *tbl,
                         size_t tbllen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->db,
                                "SELECT type, tbl_name FROM sqlite_schema WHERE name = ?1 "
                                "COLLATE NOCASE",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    int found = 1;
    if (rc == SQLITE_ROW) {
        snprintf(type, typelen, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(tbl, tbllen, "%s", (const char *)sqlite3_column_text(st, 1));
        found = 0;
    } else if (rc != SQLITE_DONE) {
        found = fail(a, "looking up \"%s\": %s", name, sqlite3_errmsg(a->db));
    }
    sqlite3_finalize(st);
    return found;
}

/* The columns of an index, comma-joined, into buf; and whether it is unique. -1 on error. */
static int index_shape(apply *a, const char *table, const char *index, char *buf, size_t len,
                       bool *unique)
{
    *unique = false;
    buf[0] = '\0';
    char *sql = sqlite3_mprintf("PRAGMA index_list(\"%w\")", table);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *n = (const char *)sqlite3_column_text(st, 1);
            if (n && strcasecmp(n, index) == 0) *unique = sqlite3_column_int(st, 2) != 0;
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(a, "introspecting index \"%s\": %s", index, sqlite3_errstr(rc));
    sql = sqlite3_mprintf("PRAGMA index_info(\"%w\")", index);
    rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    size_t o = 0;
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *c = (const char *)sqlite3_column_text(st, 2);
            int n = snprintf(buf + o, len - o, "%s%s", o ? "," : "", c ? c : "<expr>");
            if (n > 0 && (size_t)n < len - o) o += (size_t)n;
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(a, "introspecting index \"%s\": %s", index, sqlite3_errstr(rc));
    return 0;
}

/* Whether some unique index of `table` covers exactly column `col`. -1 on error. */
static int has_unique_on(apply *a, const char *table, const char *col)
{
    char *sql = sqlite3_mprintf("PRAGMA index_list(\"%w\")", table);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    int found = 0;
    if (rc == SQLITE_OK)
        while (!found && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 1);
            if (!name || sqlite3_column_int(st, 2) == 0) continue;
            char cols[256];
            bool u;
            if (index_shape(a, table, name, cols, sizeof cols, &u) != 0) {
                sqlite3_finalize(st);
                return -1;
            }
            found = strcasecmp(cols, col) == 0;
        }
    sqlite3_finalize(st);
    if (!found && rc != SQLITE_DONE)
        return fail(a, "introspecting \"%s\": %s", table, sqlite3_errstr(rc));
    return found;
}

/* ---- per entity ----------------------------------------------------------------------------- */

/* "CREATE TABLE IF NOT EXISTS" with every field (spec §1.6). sqlite3_malloc'd. */
static char *create_table_sql(const pylon_entity *e)
{
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE TABLE IF NOT EXISTS \"%w\" (\"id\" TEXT PRIMARY KEY NOT NULL",
                        e->name);
    for (size_t i = 0; i < e->nfields; i++) {
        const pylon_field *f = &e->fields[i];
        sqlite3_str_appendf(s, ", \"%w\" %s%s%s", f->name, pylon_schema_sql_type(f->type),
                            f->optional ? "" : " NOT NULL", f->unique ? " UNIQUE" : "");
    }
    sqlite3_str_appendall(s, ")");
    return sqlite3_str_finish(s);
}

/* One declared index (`sqlname` on `cols`): created when absent, compared when present. */
static int ensure_index(apply *a, const pylon_entity *e, const char *sqlname,
                        const char *const *cols, size_t ncols, bool unique)
{
    char type[32], tbl[256];
    int r = schema_object(a, sqlname, type, sizeof type, tbl, sizeof tbl);
    if (r < 0) return -1;
    char want[1024] = "";
    size_t o = 0;
    for (size_t i = 0; i < ncols; i++) {
        int n = snprintf(want + o, sizeof want - o, "%s%s", i ? "," : "", cols[i]);
        if (n > 0 && (size_t)n < sizeof want - o) o += (size_t)n;
    }
    if (r == 0) {
        if (strcmp(type, "index") != 0 || strcasecmp(tbl, e->name) != 0) {
            warn(a, "index \"%s\" not created: a %s of that name exists on \"%s\"", sqlname, type,
                 tbl);
            return 0;
        }
        char have[1024];
        bool have_unique;
        if (index_shape(a, e->name, sqlname, have, sizeof have, &have_unique) != 0) return -1;
        if (strcasecmp(have, want) != 0 || have_unique != unique)
            warn(a,
                 "index \"%s\" is %s(%s) but the manifest declares %s(%s); left as it is (drop it "
                 "to have it recreated)",
                 sqlname, have_unique ? "UNIQUE " : "", have, unique ? "UNIQUE " : "", want);
        return 0;
    }
    sqlite3_str *s = sqlite3_str_new(NULL);
    sqlite3_str_appendf(s, "CREATE %sINDEX IF NOT EXISTS \"%w\" ON \"%w\" (",
                        unique ? "UNIQUE " : "", sqlname, e->name);
    for (size_t i = 0; i < ncols; i++)
        sqlite3_str_appendf(s, "%s\"%w\"", i ? ", " : "", cols[i]);
    sqlite3_str_appendall(s, ")");
    return run_op(a, "create index", e->name,
                  sqlite3_mprintf("create index \"%s\" on \"%s\" (%s)%s", sqlname, e->name, want,
                                  unique ? " unique" : ""),
                  sqlite3_str_finish(s), unique ? "existing rows hold duplicate values" : NULL);
}

/* A unique field whose column has no unique index gets one (ALTER TABLE cannot add UNIQUE). */
static int ensure_unique(apply *a, const pylon_entity *e, const pylon_field *f)
{
    int has = has_unique_on(a, e->name, f->name);
    if (has < 0) return -1;
    if (has) return 0;
    char *name = sqlite3_mprintf("_pylon_unique_%s_%s", e->name, f->name);
    if (!name) return fail(a, "out of memory");
    char hint[512];
    snprintf(hint, sizeof hint,
             "cannot make %s.%s unique: existing rows hold duplicate values (remove them, or "
             "drop unique from the field)",
             e->name, f->name);
    int rc =
        run_op(a, "create index", e->name,
               sqlite3_mprintf("create index \"%s\" on \"%s\" (%s) unique", name, e->name, f->name),
               sqlite3_mprintf("CREATE UNIQUE INDEX IF NOT EXISTS \"%w\" ON \"%w\" (\"%w\")", name,
                               e->name, f->name),
               hint);
    sqlite3_free(name);
    return rc;
}

static bool same_type(const char *have, const char *want)
{
    return strcasecmp(have, want) == 0;
}

/* Index names the manifest expects on this entity (everything else is reported as extra). */
static bool expected_index(const pylon_entity *e, const char *name)
{
    size_t el = strlen(e->name);
    if (strncasecmp(name, "sqlite_autoindex_", 17) == 0) return true;
    if (strncasecmp(name, "_pylon_unique_", 14) == 0) return true;
    if (strncasecmp(name, e->name, el) != 0 || name[el] != '_') return false;
    const char *rest = name + el + 1;
    for (size_t i = 0; i < e->nindexes; i++)
        if (strcasecmp(rest, e->indexes[i].name) == 0) return true;
    if (e->search && strncasecmp(rest, "sort_", 5) == 0)
        for (size_t i = 0; i < e->search->nsortable; i++)
            if (strcasecmp(rest + 5, e->search->sortable[i]) == 0) return true;
    return false;
}

static int extra_indexes(apply *a, const pylon_entity *e)
{
    char *sql = sqlite3_mprintf("PRAGMA index_list(\"%w\")", e->name);
    sqlite3_stmt *st = NULL;
    int rc = sql ? sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) : SQLITE_NOMEM;
    sqlite3_free(sql);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 1);
            const char *origin = (const char *)sqlite3_column_text(st, 3);
            if (name && origin && strcmp(origin, "c") == 0 && !expected_index(e, name))
                warn(a, "index \"%s\" on \"%s\" is not in the manifest; left in place", name,
                     e->name);
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(a, "introspecting \"%s\": %s", e->name, sqlite3_errstr(rc));
    return 0;
}

static int apply_entity(apply *a, const pylon_entity *e)
{
    char type[32], tbl[256];
    int r = schema_object(a, e->name, type, sizeof type, tbl, sizeof tbl);
    if (r < 0) return -1;
    if (r == 0 && strcmp(type, "table") != 0)
        return fail(a, "cannot create table \"%s\": a %s of that name exists", e->name, type);
    columns cols;
    if (table_columns(a, e->name, &cols) != 0) return -1;
    int rc = 0;
    if (cols.n == 0) {
        rc = run_op(
            a, "create table", e->name,
            sqlite3_mprintf("create table \"%s\" (%d columns)", e->name, (int)e->nfields + 1),
            create_table_sql(e), NULL);
    } else {
        const column *id = find_column(&cols, "id");
        if (!id || !id->pk)
            rc = fail(a,
                      "table \"%s\" exists but has no id primary key column: it was not created "
                      "by pylon; rename it or the entity",
                      e->name);
        for (size_t i = 0; rc == 0 && i < e->nfields; i++) {
            const pylon_field *f = &e->fields[i];
            const column *c = find_column(&cols, f->name);
            const char *want = pylon_schema_sql_type(f->type);
            if (!c) {
                rc = run_op(a, "add column", e->name,
                            sqlite3_mprintf("add column \"%s\".\"%s\" %s", e->name, f->name, want),
                            sqlite3_mprintf("ALTER TABLE \"%w\" ADD COLUMN \"%w\" %s", e->name,
                                            f->name, want),
                            NULL);
                if (rc == 0 && !f->optional)
                    warn(a,
                         "column \"%s\".\"%s\" added without NOT NULL (SQLite cannot add a NOT "
                         "NULL column to existing rows without a default); existing rows hold "
                         "NULL",
                         e->name, f->name);
                if (rc == 0 && f->unique) rc = ensure_unique(a, e, f);
                continue;
            }
            if (!same_type(c->type, want))
                warn(a,
                     "column \"%s\".\"%s\" is %s but the manifest type %s maps to %s; SQLite "
                     "cannot change a column's type in place",
                     e->name, c->name, *c->type ? c->type : "untyped", f->type_text, want);
            if (c->notnull && f->optional)
                warn(a,
                     "column \"%s\".\"%s\" is NOT NULL but the field is now optional; SQLite "
                     "cannot drop NOT NULL in place, so rows without it are refused",
                     e->name, c->name);
            if (f->unique) rc = ensure_unique(a, e, f);
        }
        for (size_t i = 0; rc == 0 && i < cols.n; i++)
            if (strcasecmp(cols.v[i].name, "id") != 0) {
                bool declared = false;
                for (size_t k = 0; k < e->nfields; k++)
                    declared |= strcasecmp(cols.v[i].name, e->fields[k].name) == 0;
                if (!declared)
                    warn(a,
                         "column \"%s\".\"%s\" is not in the manifest; left in place (columns are "
                         "never dropped automatically)",
                         e->name, cols.v[i].name);
            }
    }
    columns_free(&cols);
    if (rc != 0) return -1;

    for (size_t i = 0; i < e->nindexes; i++) {
        const pylon_index *ix = &e->indexes[i];
        char *name = sqlite3_mprintf("%s_%s", e->name, ix->name);
        if (!name) return fail(a, "out of memory");
        rc = ensure_index(a, e, name, ix->fields, ix->nfields, ix->unique);
        sqlite3_free(name);
        if (rc != 0) return -1;
    }
    for (size_t i = 0; e->search && i < e->search->nsortable; i++) {
        char *name = sqlite3_mprintf("%s_sort_%s", e->name, e->search->sortable[i]);
        if (!name) return fail(a, "out of memory");
        rc = ensure_index(a, e, name, &e->search->sortable[i], 1, false);
        sqlite3_free(name);
        if (rc != 0) return -1;
    }
    return extra_indexes(a, e);
}

/* Tables that look like entity tables (an "id TEXT" primary key, not internal) but that the
 * manifest no longer declares. FTS5 shadow tables have integer ids, so they never match. */
static int removed_entities(apply *a)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->db,
                                "SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                                "sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name",
                                -1, &st, NULL);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *name = (const char *)sqlite3_column_text(st, 0);
            if (!name || strncasecmp(name, "_pylon", 6) == 0 ||
                strncasecmp(name, "sqlite_", 7) == 0 || strncasecmp(name, "_fts_", 5) == 0 ||
                strcasecmp(name, "_facet_bitmap") == 0)
                continue;
            bool declared = false;
            for (size_t i = 0; i < a->m->nentities; i++)
                declared |= strcasecmp(name, a->m->entities[i].name) == 0;
            if (declared) continue;
            columns cols;
            if (table_columns(a, name, &cols) != 0) {
                sqlite3_finalize(st);
                return -1;
            }
            const column *id = find_column(&cols, "id");
            if (id && id->pk && strcasecmp(id->type, "TEXT") == 0)
                warn(a,
                     "table \"%s\" is not in the manifest; left in place with its rows (entities "
                     "are "
                     "never dropped automatically)",
                     name);
            columns_free(&cols);
        }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return fail(a, "listing tables: %s", sqlite3_errmsg(a->db));
    return 0;
}

static int record_history(apply *a, const char *baseline)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char id[48], at[40];
    snprintf(id, sizeof id, "%lld.%09ld", (long long)ts.tv_sec, ts.tv_nsec);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(at + n, sizeof at - n, ".%03ldZ", ts.tv_nsec / 1000000);
    char *plan = json_dumps(a->plan, JSON_COMPACT);
    if (!plan) return fail(a, "out of memory");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->db,
                                "INSERT INTO _pylon_schema_history (id, manifest_version, "
                                "app_version, applied_at, operation_count, baseline, plan_json) "
                                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, a->m->manifest_version);
        sqlite3_bind_text(st, 3, a->m->version, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, at, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)json_array_size(a->plan));
        sqlite3_bind_text(st, 6, baseline ? baseline : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, plan, -1, SQLITE_STATIC);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    free(plan);
    if (rc != SQLITE_DONE) return fail(a, "recording schema history: %s", sqlite3_errmsg(a->db));
    return 0;
}

int pylon_schema_apply(sqlite3 *db, const pylon_manifest *m, const char *baseline,
                       char **plan_summary, char *err, size_t errlen)
{
    if (plan_summary) *plan_summary = NULL;
    if (errlen) err[0] = '\0';
    apply a = {.db = db, .m = m, .err = err, .errlen = errlen};
    if (!sqlite3_get_autocommit(db))
        return fail(&a, "schema: the connection is already inside a transaction");
    a.plan = json_array();
    a.lines = open_memstream(&a.lines_buf, &a.lines_len);
    a.warnings = open_memstream(&a.warnings_buf, &a.warnings_len);
    int rc = -1;
    if (!a.plan || !a.lines || !a.warnings) {
        fail(&a, "out of memory");
        goto out;
    }
    /* IMMEDIATE: take the write lock before introspecting, so no one changes the schema
     * between what we read and what we write. */
    char *emsg = NULL;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &emsg) != SQLITE_OK) {
        fail(&a, "schema: cannot begin: %s", emsg ? emsg : sqlite3_errmsg(db));
        sqlite3_free(emsg);
        goto out;
    }
    if (sqlite3_exec(db, INTERNAL_DDL, NULL, NULL, &emsg) != SQLITE_OK) {
        fail(&a, "schema: creating internal tables: %s", emsg ? emsg : sqlite3_errmsg(db));
        sqlite3_free(emsg);
        goto rollback;
    }
    for (size_t i = 0; i < m->nentities; i++)
        if (apply_entity(&a, &m->entities[i]) != 0) goto rollback;
    if (removed_entities(&a) != 0) goto rollback;
    if (json_array_size(a.plan) > 0 && record_history(&a, baseline) != 0) goto rollback;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, &emsg) != SQLITE_OK) {
        fail(&a, "schema: commit failed: %s", emsg ? emsg : sqlite3_errmsg(db));
        sqlite3_free(emsg);
        goto rollback;
    }
    rc = 0;
    goto out;

rollback:
    /* A failed COMMIT may have ended the transaction already; ROLLBACK then fails harmlessly. */
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
out:
    if (a.lines) fclose(a.lines);
    if (a.warnings) fclose(a.warnings);
    if (rc == 0 && plan_summary) {
        size_t n1 = a.lines_buf ? a.lines_len : 0, n2 = a.warnings_buf ? a.warnings_len : 0;
        char *s = malloc(n1 + n2 + 1);
        if (s) {
            if (n1) memcpy(s, a.lines_buf, n1);
            if (n2) memcpy(s + n1, a.warnings_buf, n2);
            size_t n = n1 + n2;
            if (n > 0 && s[n - 1] == '\n') n--;
            s[n] = '\0';
        }
        *plan_summary = s; /* NULL only when out of memory: the schema is applied anyway */
    }
    free(a.lines_buf);
    free(a.warnings_buf);
    json_decref(a.plan);
    return rc;
}

/* ---- row → JSON ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* A JSON string from stored bytes. Rows written through the API are valid UTF-8; anything else
 * (another writer, a BLOB) is repaired with U+FFFD rather than dropped. */
static json_t *text_json(const unsigned char *s, size_t n)
{
    json_t *j = json_stringn((const char *)s, n);
    if (j || !s) return j ? j : json_string("");
    if (n > (SIZE_MAX - 1) / 3) return NULL;
    char *fixed = malloc(n * 3 + 1);
    if (!fixed) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(s + i, n - i);
        if (l == 0) {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(fixed + o, s + i, l);
            o += l;
            i += l;
        }
    }
    j = json_stringn(fixed, o);
    free(fixed);
    return j;
}

static json_t *storage_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_NULL:
        return json_null();
    case SQLITE_BLOB: {
        const void *b = sqlite3_column_blob(st, i);
        return text_json(b, (size_t)sqlite3_column_bytes(st, i));
    }
    default: {
        const unsigned char *t = sqlite3_column_text(st, i);
        return text_json(t, (size_t)sqlite3_column_bytes(st, i));
    }
    }
}

static const pylon_field *field_for_column(const pylon_entity *e, const char *col)
{
    const pylon_field *f = pylon_entity_field(e, col);
    if (f) return f;
    for (size_t i = 0; i < e->nfields; i++)
        if (strcasecmp(e->fields[i].name, col) == 0) return &e->fields[i];
    return NULL;
}

json_t *pylon_schema_row_to_json(const pylon_entity *e, sqlite3_stmt *st)
{
    json_t *row = json_object();
    if (!row) return NULL;
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; i++) {
        const char *col = sqlite3_column_name(st, i);
        if (!col) goto oom;
        const pylon_field *f = strcasecmp(col, "id") == 0 ? NULL : field_for_column(e, col);
        const char *key = f ? f->name : strcasecmp(col, "id") == 0 ? "id" : col;
        int t = sqlite3_column_type(st, i);
        json_t *v;
        if (f && f->type == PYLON_FIELD_BOOL && t == SQLITE_INTEGER)
            v = json_boolean(sqlite3_column_int64(st, i) != 0);
        else if (f && f->type == PYLON_FIELD_FLOAT && t == SQLITE_INTEGER)
            v = json_real((double)sqlite3_column_int64(st, i));
        else
            v = storage_json(st, i);
        if (!v) goto oom;
        /* A column name that is not UTF-8 (another writer's table) cannot be a JSON key: that
         * column is skipped (set_new frees v) rather than failing the whole row. */
        json_object_set_new(row, key, v);
    }
    return row;
oom:
    json_decref(row);
    return NULL;
}

/* ---- row → JSON text ---------------------------------------------------------------------- */

typedef struct textbuf {
    char *p;
    size_t len, cap;
    bool failed; /* out of memory, or a value the tree path must handle */
} textbuf;

static char *tb_reserve(textbuf *b, size_t n)
{
    if (b->failed) return NULL;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->failed = true;
                return NULL;
            }
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return NULL;
        }
        b->p = np;
        b->cap = cap;
    }
    return b->p + b->len;
}

static void tb_put(textbuf *b, const void *s, size_t n)
{
    char *at = tb_reserve(b, n);
    if (!at) return;
    memcpy(at, s, n);
    b->len += n;
}

/* A JSON string as jansson writes it: `"` and `\` escaped, control characters as \b \f \n \r \t
 * or \u00XX (upper-case hex), everything else (UTF-8 included) as is. Invalid UTF-8 becomes
 * U+FFFD, as text_json() repairs it. */
static void tb_string(textbuf *b, const unsigned char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t plain = 0; /* the common case, printable ASCII only: one copy between the quotes */
    while (plain < n && s[plain] >= 0x20 && s[plain] < 0x80 && s[plain] != '"' && s[plain] != '\\')
        plain++;
    if (plain == n) {
        char *at = n < SIZE_MAX - 2 ? tb_reserve(b, n + 2) : NULL;
        if (!at) {
            b->failed = true;
            return;
        }
        at[0] = '"';
        memcpy(at + 1, s, n);
        at[n + 1] = '"';
        b->len += n + 2;
        return;
    }
    tb_put(b, "\"", 1);
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = plain; i < n && !b->failed;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        size_t l = c < 0x80 ? 1 : utf8_seq(s + i, n - i);
        if (l > 1) { /* valid multi-byte sequence: copied with the run */
            i += l;
            continue;
        }
        tb_put(b, s + run, i - run);
        if (l == 0) {
            tb_put(b, "\xef\xbf\xbd", 3);
        } else {
            static const char named[] = "\"\\\b\f\n\r\t", letter[] = "\"\\bfnrt";
            const char *hit = c ? strchr(named, c) : NULL; /* NUL would match the terminator */
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            if (hit) esc[1] = letter[hit - named];
            size_t el = hit ? 2 : 6;
            tb_put(b, esc, el);
        }
        run = ++i;
    }
    tb_put(b, s + run, n - run);
    tb_put(b, "\"", 1);
}

/* An integer as jansson writes it (JSON_INTEGER_FORMAT, "%lld"). */
static void tb_int(textbuf *b, long long v)
{
    char num[PYLON_FMT_I64_MAX];
    tb_put(b, num, pylon_fmt_i64(num, v));
}

/* A real as jansson writes it: %.17g, ".0" added when that reads as an integer, the exponent
 * without '+' or leading zeros (1e+20 → 1e20, 1e-05 → 1e-5). jansson refuses non-finite reals,
 * so they go to the tree path. */
static void tb_real(textbuf *b, double d)
{
    if (!isfinite(d)) {
        b->failed = true;
        return;
    }
    char num[40];
    int n = snprintf(num, sizeof num, "%.17g", d);
    if (n <= 0 || (size_t)n >= sizeof num - 3) {
        b->failed = true;
        return;
    }
    char *e = strchr(num, 'e');
    if (!e && !strchr(num, '.')) {
        memcpy(num + n, ".0", 3);
        n += 2;
    }
    if (e) {
        char *digits = e + 1;
        if (*digits == '-') digits++;
        char *first = digits;
        if (*first == '+') first++;
        while (*first == '0' && first[1])
            first++;
        if (first != digits) {
            memmove(digits, first, strlen(first) + 1);
            n = (int)strlen(num);
        }
    }
    tb_put(b, num, (size_t)n);
}

static bool key_is_utf8(const char *k)
{
    size_t n = strlen(k);
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq((const unsigned char *)k + i, n - i);
        if (l == 0) return false;
        i += l;
    }
    return true;
}

/* Per column: its field (NULL for "id" and columns the manifest does not name) and its key as
 * written, with what precedes it: `{"id":` for the first column, `,"name":` after. Finding the
 * field and escaping the key was a third of writing a row (callgrind). */
struct pylon_row_plan {
    int ncols;
    const char *first_name; /* sqlite3_column_name(st, 0) when planned (see plan_fits) */
    const pylon_field **field;
    size_t *key_end; /* column i's key text is keys.p[key_end[i-1] .. key_end[i]) */
    textbuf keys;
};

void pylon_schema_row_plan_free(pylon_row_plan *p)
{
    if (!p) return;
    free(p->field);
    free(p->key_end);
    free(p->keys.p);
    free(p);
}

pylon_row_plan *pylon_schema_row_plan(const pylon_entity *e, sqlite3_stmt *st)
{
    pylon_row_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->ncols = sqlite3_column_count(st);
    p->first_name = p->ncols ? sqlite3_column_name(st, 0) : NULL;
    size_t n = p->ncols ? (size_t)p->ncols : 1;
    p->field = calloc(n, sizeof *p->field);
    p->key_end = calloc(n, sizeof *p->key_end);
    bool ok = p->field && p->key_end;
    for (int i = 0; ok && i < p->ncols; i++) {
        const char *col = sqlite3_column_name(st, i);
        if (!col) {
            ok = false;
            break;
        }
        bool is_id = strcasecmp(col, "id") == 0;
        const pylon_field *f = is_id ? NULL : field_for_column(e, col);
        const char *key = f ? f->name : is_id ? "id" : col;
        if (!f && !is_id && !key_is_utf8(key)) {
            ok = false; /* the tree path skips such a column */
            break;
        }
        tb_put(&p->keys, i ? "," : "{", 1);
        tb_string(&p->keys, (const unsigned char *)key, strlen(key));
        tb_put(&p->keys, ":", 1);
        p->field[i] = f;
        p->key_end[i] = p->keys.len;
        ok = !p->keys.failed;
    }
    if (!ok) {
        pylon_schema_row_plan_free(p);
        return NULL;
    }
    return p;
}

bool pylon_schema_row_plan_fits(const pylon_row_plan *p, sqlite3_stmt *st)
{
    /* A statement SQLite prepared again (after a schema change) has new column names. */
    int n = sqlite3_column_count(st);
    return n == p->ncols && (n == 0 || sqlite3_column_name(st, 0) == p->first_name);
}

char *pylon_schema_row_to_text_planned(const pylon_row_plan *p, sqlite3_stmt *st, size_t *len)
{
    textbuf b = {0};
    if (p->ncols == 0) tb_put(&b, "{", 1);
    for (int i = 0; i < p->ncols && !b.failed; i++) {
        size_t from = i ? p->key_end[i - 1] : 0;
        tb_put(&b, p->keys.p + from, p->key_end[i] - from);
        const pylon_field *f = p->field[i];
        int t = sqlite3_column_type(st, i);
        if (f && f->type == PYLON_FIELD_BOOL && t == SQLITE_INTEGER) {
            if (sqlite3_column_int64(st, i) != 0)
                tb_put(&b, "true", 4);
            else
                tb_put(&b, "false", 5);
        } else if (f && f->type == PYLON_FIELD_FLOAT && t == SQLITE_INTEGER) {
            tb_real(&b, (double)sqlite3_column_int64(st, i));
        } else if (t == SQLITE_INTEGER) {
            tb_int(&b, (long long)sqlite3_column_int64(st, i));
        } else if (t == SQLITE_FLOAT) {
            tb_real(&b, sqlite3_column_double(st, i));
        } else if (t == SQLITE_NULL) {
            tb_put(&b, "null", 4);
        } else {
            const unsigned char *v =
                t == SQLITE_BLOB ? sqlite3_column_blob(st, i) : sqlite3_column_text(st, i);
            tb_string(&b, v ? v : (const unsigned char *)"", (size_t)sqlite3_column_bytes(st, i));
        }
    }
    tb_put(&b, "}", 2); /* with the terminating NUL */
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len - 1;
    return b.p;
}

char *pylon_schema_row_to_text(const pylon_entity *e, sqlite3_stmt *st, size_t *len)
{
    pylon_row_plan *p = pylon_schema_row_plan(e, st);
    char *text = p ? pylon_schema_row_to_text_planned(p, st, len) : NULL;
    pylon_schema_row_plan_free(p);
    return text;
}

char *pylon_schema_insert_text(const pylon_entity *e, const char *id, const json_t *data,
                               size_t *len)
{
    textbuf b = {0};
    tb_put(&b, "{\"id\":", 6);
    tb_string(&b, (const unsigned char *)id, strlen(id));
    for (size_t i = 0; i < e->nfields && !b.failed; i++) {
        const pylon_field *f = &e->fields[i];
        tb_put(&b, ",", 1);
        tb_string(&b, (const unsigned char *)f->name, strlen(f->name));
        tb_put(&b, ":", 1);
        const json_t *v = json_object_get(data, f->name);
        switch (v ? json_typeof(v) : JSON_NULL) {
        case JSON_NULL:
            tb_put(&b, "null", 4);
            break;
        case JSON_TRUE:
            tb_put(&b, "true", 4);
            break;
        case JSON_FALSE:
            tb_put(&b, "false", 5);
            break;
        case JSON_STRING:
            tb_string(&b, (const unsigned char *)json_string_value(v), json_string_length(v));
            break;
        case JSON_INTEGER:
            if (f->type == PYLON_FIELD_FLOAT) {
                tb_real(&b, (double)json_integer_value(v));
            } else {
                tb_int(&b, (long long)json_integer_value(v));
            }
            break;
        case JSON_REAL:
            if (f->type == PYLON_FIELD_INT) { /* bound as an integer (schema_bind_value) */
                tb_int(&b, (long long)json_real_value(v));
            } else {
                tb_real(&b, json_real_value(v));
            }
            break;
        default: /* objects and arrays never bind to a column */
            b.failed = true;
        }
    }
    tb_put(&b, "}", 2); /* with the terminating NUL */
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len - 1;
    return b.p;
}

/* ---- JSON → bind ---------------------------------------------------------------------------- */

/* How a value looks in an error message: numbers and booleans as written, the rest by kind. */
static const char *describe(const json_t *v, char *buf, size_t len)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_NULL:
        return "null";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_INTEGER:
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    case JSON_REAL:
        snprintf(buf, len, "%.17g", json_real_value(v));
        return buf;
    }
    return "a value";
}

static const char *expects(const pylon_field *f)
{
    switch (f->type) {
    case PYLON_FIELD_INT:
        return "an integer";
    case PYLON_FIELD_FLOAT:
        return "a number";
    case PYLON_FIELD_BOOL:
        return "true or false";
    case PYLON_FIELD_DATETIME:
        return "a string (datetime)";
    case PYLON_FIELD_ID:
        return "a string (id)";
    default:
        return "a string";
    }
}

/* An integral double that fits int64 (2.0 → 2); false for 1.5. */
static bool integral(double d, long long *out)
{
    /* Range first: converting an out-of-range double to long long is undefined. */
    if (!isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) return false;
    long long ll = (long long)d;
    if ((double)ll != d) return false;
    *out = ll;
    return true;
}

int pylon_schema_check_value(const pylon_field *f, const json_t *v, char *err, size_t errlen)
{
    char num[40];
    bool ok;
    if (!v || json_is_null(v)) {
        if (f->optional) return 0;
        snprintf(err, errlen, "field \"%s\" is required: null is not allowed (expects %s)", f->name,
                 expects(f));
        return -1;
    }
    switch (f->type) {
    case PYLON_FIELD_INT: {
        long long ll;
        ok = json_is_integer(v) || (json_is_real(v) && integral(json_real_value(v), &ll));
        break;
    }
    case PYLON_FIELD_FLOAT:
        ok = json_is_number(v);
        break;
    case PYLON_FIELD_BOOL:
        ok = json_is_boolean(v);
        break;
    default:
        ok = json_is_string(v);
        break;
    }
    if (ok) return 0;
    snprintf(err, errlen, "field \"%s\" expects %s, got %s", f->name, expects(f),
             describe(v, num, sizeof num));
    return -1;
}

int pylon_schema_bind_value(sqlite3_stmt *st, int idx, const pylon_field *f, const json_t *v,
                            char *err, size_t errlen)
{
    if (pylon_schema_check_value(f, v, err, errlen) != 0) return -1;
    int rc;
    if (!v || json_is_null(v)) {
        rc = sqlite3_bind_null(st, idx);
    } else {
        switch (f->type) {
        case PYLON_FIELD_INT: {
            long long ll = 0;
            if (json_is_integer(v))
                ll = json_integer_value(v);
            else
                integral(json_real_value(v), &ll);
            rc = sqlite3_bind_int64(st, idx, ll);
            break;
        }
        case PYLON_FIELD_FLOAT:
            rc = sqlite3_bind_double(st, idx, json_number_value(v));
            break;
        case PYLON_FIELD_BOOL:
            rc = sqlite3_bind_int(st, idx, json_is_true(v) ? 1 : 0);
            break;
        default:
            rc = sqlite3_bind_text64(st, idx, json_string_value(v), json_string_length(v),
                                     SQLITE_TRANSIENT, SQLITE_UTF8);
            break;
        }
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "field \"%s\": cannot bind value: %s", f->name, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}
