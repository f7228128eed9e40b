/* test_schema.c — schema application on real SQLite files, and the row <-> JSON mapping. */
#include "actors/manifest.h"
#include "actors/schema.h"
#include "support.h"

#include <math.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fixtures ------------------------------------------------------------------------------- */

static char db_path[64];
static sqlite3 *db;

static void open_db(void)
{
    strcpy(db_path, "/tmp/pylon_schema_XXXXXX");
    int fd = mkstemp(db_path);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
}

static void close_db(void)
{
    cr_assert_eq(sqlite3_close(db), SQLITE_OK, "a statement was left open");
    db = NULL;
    char p[80];
    unlink(db_path);
    snprintf(p, sizeof p, "%s-wal", db_path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", db_path);
    unlink(p);
}

TestSuite(schema, .init = open_db, .fini = close_db);

static void exec(const char *sql)
{
    char *e = NULL;
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, &e), SQLITE_OK, "%s: %s", sql, e);
}

/* First column of the first row as an integer. */
static long long scalar(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* First column of the first row as a malloc'd string. */
static char *text(const char *sql)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
    char *v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static bool object_exists(const char *type, const char *name)
{
    char *sql =
        sqlite3_mprintf("SELECT count(*) FROM sqlite_schema WHERE type=%Q AND name=%Q", type, name);
    long long n = scalar(sql);
    sqlite3_free(sql);
    return n == 1;
}

static pylon_manifest *manifest(const char *sq)
{
    char *j = strdup(sq);
    for (char *p = j; *p; p++)
        if (*p == '\'') *p = '"';
    pylon_manifest_errors *e = NULL;
    pylon_manifest *m = pylon_manifest_parse(j, strlen(j), &e);
    cr_assert_not_null(m, "%s", pylon_manifest_errors_text(e));
    free(j);
    return m;
}

static pylon_manifest *example(const char *rel)
{
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/test_schema.c");
    char path[512];
    snprintf(path, sizeof path, "%.*s%s", (int)(cut ? cut - f : 0), f, rel);
    pylon_manifest_errors *e = NULL;
    pylon_manifest *m = pylon_manifest_load_file(path, &e);
    cr_assert_not_null(m, "%s: %s", path, pylon_manifest_errors_text(e));
    return m;
}

/* Applies and returns the summary (caller frees). */
static char *apply_ok(const pylon_manifest *m)
{
    char err[512], *summary = NULL;
    int rc = pylon_schema_apply(db, m, "dev", &summary, err, sizeof err);
    cr_assert_eq(rc, 0, "apply failed: %s", err);
    cr_assert_not_null(summary);
    return summary;
}

#define F(n, t, opt, uniq) "{'name':'" n "','type':'" t "','optional':" opt ",'unique':" uniq "}"
#define HEAD               "{'manifest_version':1,'name':'t','version':'2.0.0','entities':["

/* ---- application ---------------------------------------------------------------------------- */

Test(schema, empty_db_gets_tables_indexes_and_internal_tables)
{
    pylon_manifest *m = example("examples/manifests/todo.json");
    char *s = apply_ok(m);
    cr_assert_str_eq(s, "create table \"User\" (6 columns)\n"
                        "create index \"User_by_email\" on \"User\" (email) unique\n"
                        "create table \"Todo\" (9 columns)\n"
                        "create index \"Todo_by_user\" on \"Todo\" (userId)\n"
                        "create index \"Todo_by_user_done\" on \"Todo\" (userId,done)");
    free(s);

    cr_assert(object_exists("table", "User"));
    cr_assert(object_exists("table", "Todo"));
    cr_assert(object_exists("index", "User_by_email"));
    cr_assert(object_exists("index", "Todo_by_user"));
    cr_assert(object_exists("index", "Todo_by_user_done"));
    cr_assert(object_exists("table", "_pylon_schema_history"));
    cr_assert(object_exists("table", "_pylon_changes"));
    /* The writer numbers changes itself and dedups through _pylon_op_ids: a new database has
     * neither AUTOINCREMENT's sqlite_sequence nor an op_id index on the change log (both cost
     * a b-tree write per change). */
    cr_assert(!object_exists("index", "_pylon_changes_op_id"));
    cr_assert(!object_exists("table", "sqlite_sequence"));
    cr_assert(object_exists("table", "_pylon_op_ids"));
    cr_assert_eq(scalar("SELECT \"unique\" FROM pragma_index_list('User') WHERE "
                        "name='User_by_email'"),
                 1);

    /* column types and constraints (spec §1.3) */
    char *t =
        text("SELECT group_concat(name || ':' || type || ':' || \"notnull\" || ':' || pk, ' ') "
             "FROM pragma_table_info('Todo')");
    cr_assert_str_eq(t, "id:TEXT:1:1 userId:TEXT:1:0 title:TEXT:1:0 notes:TEXT:0:0 "
                        "done:INTEGER:1:0 priority:INTEGER:0:0 dueAt:TEXT:0:0 "
                        "completedAt:TEXT:0:0 createdAt:TEXT:1:0");
    free(t);

    /* one history row describing the five operations */
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1);
    cr_assert_eq(scalar("SELECT operation_count FROM _pylon_schema_history"), 5);
    cr_assert_eq(scalar("SELECT manifest_version FROM _pylon_schema_history"), 1);
    char *v = text("SELECT app_version || '|' || baseline FROM _pylon_schema_history");
    cr_assert_str_eq(v, "0.1.0|dev");
    free(v);
    char *id = text("SELECT id FROM _pylon_schema_history");
    char *at = text("SELECT applied_at FROM _pylon_schema_history");
    regex_t re;
    cr_assert_eq(regcomp(&re, "^[0-9]{10,}\\.[0-9]{9}$", REG_EXTENDED), 0);
    cr_assert_eq(regexec(&re, id, 0, NULL, 0), 0, "id %s", id);
    regfree(&re);
    cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$",
                         REG_EXTENDED),
                 0);
    cr_assert_eq(regexec(&re, at, 0, NULL, 0), 0, "applied_at %s", at);
    regfree(&re);
    free(id);
    free(at);
    char *plan = text("SELECT plan_json FROM _pylon_schema_history");
    json_t *pj = json_loads(plan, 0, NULL);
    free(plan);
    cr_assert(json_is_array(pj));
    cr_assert_eq(json_array_size(pj), 5);
    json_t *op0 = json_array_get(pj, 0);
    cr_assert_str_eq(json_string_value(json_object_get(op0, "op")), "create table");
    cr_assert_str_eq(json_string_value(json_object_get(op0, "table")), "User");
    cr_assert(strncmp(json_string_value(json_object_get(op0, "sql")),
                      "CREATE TABLE IF NOT EXISTS \"User\" (\"id\" TEXT PRIMARY KEY NOT NULL, "
                      "\"email\" TEXT NOT NULL,",
                      80) == 0,
              "%s", json_string_value(json_object_get(op0, "sql")));
    json_decref(pj);

    /* the change-log table takes what the sync layer writes, and checks the kind */
    exec("INSERT INTO _pylon_changes (entity, row_id, kind, fields, data, ts, op_id) "
         "VALUES ('Todo', 'r1', 'update', '[\"done\"]', '{}', 1700000000000, 'op1')");
    cr_assert_neq(sqlite3_exec(db,
                               "INSERT INTO _pylon_changes (entity, row_id, kind, ts) VALUES "
                               "('Todo', 'r1', 'upsert', 1)",
                               NULL, NULL, NULL),
                  SQLITE_OK);
    exec("INSERT INTO _pylon_op_ids (op_id, seq, ts) VALUES ('op1', 1, 1700000000000)");
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, applying_twice_changes_nothing)
{
    pylon_manifest *m = example("examples/manifests/store.json");
    free(apply_ok(m));
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1);
    /* search-sortable fields get their sort indexes */
    cr_assert(object_exists("index", "Product_sort_price"));
    cr_assert(object_exists("index", "Product_sort_createdAt"));
    /* a unique field in CREATE TABLE is a UNIQUE column */
    cr_assert_eq(scalar("SELECT count(*) FROM pragma_index_list('User') WHERE \"unique\"=1 AND "
                        "origin='u'"),
                 1);
    char *s = apply_ok(m);
    cr_assert_str_eq(s, "");
    free(s);
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1);
    /* a NULL summary pointer is fine */
    char err[256];
    cr_assert_eq(pylon_schema_apply(db, m, "serve", NULL, err, sizeof err), 0, "%s", err);
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, empty_manifest_creates_internal_tables_only)
{
    pylon_manifest *m = pylon_manifest_new_empty();
    char *s = apply_ok(m);
    cr_assert_str_eq(s, "");
    free(s);
    cr_assert(object_exists("table", "_pylon_changes"));
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 0);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, added_field_and_index_are_applied_and_rows_kept)
{
    pylon_manifest *m1 = manifest(
        HEAD "{'name':'Todo','fields':[" F("title", "string", "false", "false") "],"
                                                                                "'indexes':[]}]}");
    free(apply_ok(m1));
    exec("INSERT INTO Todo (id, title) VALUES ('a', 'first'), ('b', 'second')");

    pylon_manifest *m2 =
        manifest(HEAD "{'name':'Todo','fields':[" F("title", "string", "false", "false") "," F(
            "done", "bool", "false",
            "false") "," F("note", "string", "true",
                           "false") "],"
                                    "'indexes':[{'name':'by_done','fields':['done','title'],'"
                                    "unique':false}]}]}");
    char *s = apply_ok(m2);
    cr_assert_str_eq(s, "add column \"Todo\".\"done\" INTEGER\n"
                        "add column \"Todo\".\"note\" TEXT\n"
                        "create index \"Todo_by_done\" on \"Todo\" (done,title)\n"
                        "warning: column \"Todo\".\"done\" added without NOT NULL (SQLite cannot "
                        "add a NOT NULL column to existing rows without a default); existing rows "
                        "hold NULL");
    free(s);
    cr_assert_eq(scalar("SELECT count(*) FROM Todo"), 2);
    cr_assert_eq(scalar("SELECT count(*) FROM Todo WHERE done IS NULL"), 2);
    cr_assert(object_exists("index", "Todo_by_done"));
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 2);
    cr_assert_eq(scalar("SELECT operation_count FROM _pylon_schema_history ORDER BY id DESC"), 3);
    char *base = text("SELECT app_version FROM _pylon_schema_history ORDER BY id DESC");
    cr_assert_str_eq(base, "2.0.0");
    free(base);
    /* once applied, a second run is quiet again (the nullable column is not a warning) */
    s = apply_ok(m2);
    cr_assert_str_eq(s, "");
    free(s);
    pylon_manifest_free(m1);
    pylon_manifest_free(m2);
    assert_no_leaks();
}

Test(schema, unique_field_added_later_gets_a_unique_index)
{
    pylon_manifest *m1 = manifest(
        HEAD "{'name':'U','fields':[" F("a", "string", "true", "false") "],'indexes':[]}]}");
    free(apply_ok(m1));
    exec("INSERT INTO U (id, a) VALUES ('1', 'x'), ('2', 'y')");
    pylon_manifest *m2 =
        manifest(HEAD "{'name':'U','fields':[" F("a", "string", "true", "true") "," F(
            "email", "string", "true", "true") "],'indexes':[]}]}");
    char *s = apply_ok(m2);
    cr_assert_str_eq(s, "create index \"_pylon_unique_U_a\" on \"U\" (a) unique\n"
                        "add column \"U\".\"email\" TEXT\n"
                        "create index \"_pylon_unique_U_email\" on \"U\" (email) unique");
    free(s);
    cr_assert_neq(sqlite3_exec(db, "INSERT INTO U (id, a) VALUES ('3', 'x')", NULL, NULL, NULL),
                  SQLITE_OK, "a is unique now");
    s = apply_ok(m2);
    cr_assert_str_eq(s, "");
    free(s);
    pylon_manifest_free(m1);
    pylon_manifest_free(m2);
    assert_no_leaks();
}

Test(schema, failure_rolls_back_everything)
{
    pylon_manifest *m1 = manifest(
        HEAD "{'name':'U','fields':[" F("a", "string", "true", "false") "],'indexes':[]}]}");
    free(apply_ok(m1));
    exec("INSERT INTO U (id, a) VALUES ('1', 'same'), ('2', 'same')");

    /* New table A first, then a new column on U, then U.a becomes unique: fails on the data. */
    pylon_manifest *m2 = manifest(HEAD "{'name':'A','fields':[" F(
        "x", "int", "false", "false") "],'indexes':[]},"
                                      "{'name':'U','fields':[" F("b", "int", "true", "false") "," F(
                                          "a", "string", "true", "true") "],"
                                                                         "'indexes':[]}]}");
    char err[512], *summary = (char *)1;
    cr_assert_eq(pylon_schema_apply(db, m2, "dev", &summary, err, sizeof err), -1);
    cr_assert_null(summary);
    cr_assert(strstr(err, "create index failed: UNIQUE constraint failed: U.a; cannot make U.a "
                          "unique: existing rows hold duplicate values"),
              "%s", err);
    cr_assert(!object_exists("table", "A"), "table A rolled back");
    cr_assert_eq(scalar("SELECT count(*) FROM pragma_table_info('U') WHERE name='b'"), 0,
                 "column b rolled back");
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1);
    cr_assert(sqlite3_get_autocommit(db), "no transaction left open");

    /* an object of the entity's name that is not a table */
    exec("CREATE VIEW B AS SELECT 1 AS id");
    pylon_manifest *m3 = manifest(
        HEAD "{'name':'A','fields':[],'indexes':[]},{'name':'B','fields':[],'indexes':[]}]}");
    cr_assert_eq(pylon_schema_apply(db, m3, "dev", NULL, err, sizeof err), -1);
    cr_assert_str_eq(err, "cannot create table \"B\": a view of that name exists");
    cr_assert(!object_exists("table", "A"), "table A rolled back");
    pylon_manifest_free(m1);
    pylon_manifest_free(m2);
    pylon_manifest_free(m3);
    assert_no_leaks();
}

Test(schema, refuses_to_run_inside_a_transaction)
{
    pylon_manifest *m = pylon_manifest_new_empty();
    exec("BEGIN");
    char err[256];
    cr_assert_eq(pylon_schema_apply(db, m, "dev", NULL, err, sizeof err), -1);
    cr_assert_str_eq(err, "schema: the connection is already inside a transaction");
    exec("ROLLBACK");
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, removed_fields_and_entities_are_kept_with_warnings)
{
    pylon_manifest *m1 =
        manifest(HEAD "{'name':'Keep','fields':[" F("a", "string", "false", "false") "," F(
            "gone", "int", "true",
            "false") "],'indexes':[{'name':'by_gone','fields':['gone'],"
                     "'unique':false}]},"
                     "{'name':'Old','fields':[" F("x", "string", "true",
                                                  "false") "],'indexes':[]}]}");
    free(apply_ok(m1));
    exec("INSERT INTO Keep (id, a, gone) VALUES ('k', 'v', 7)");
    exec("INSERT INTO Old (id, x) VALUES ('o', 'v')");
    /* tables that are not entity-shaped are never reported */
    exec("CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT)");

    pylon_manifest *m2 = manifest(
        HEAD "{'name':'Keep','fields':[" F("a", "string", "false", "false") "],'indexes':[]}]}");
    char *s = apply_ok(m2);
    cr_assert_str_eq(s, "warning: column \"Keep\".\"gone\" is not in the manifest; left in place "
                        "(columns are never dropped automatically)\n"
                        "warning: index \"Keep_by_gone\" on \"Keep\" is not in the manifest; left "
                        "in place\n"
                        "warning: table \"Old\" is not in the manifest; left in place with its "
                        "rows (entities are never dropped automatically)");
    free(s);
    cr_assert_eq(scalar("SELECT gone FROM Keep WHERE id='k'"), 7);
    cr_assert_eq(scalar("SELECT count(*) FROM Old"), 1);
    cr_assert_eq(scalar("SELECT count(*) FROM _pylon_schema_history"), 1, "warnings only");
    pylon_manifest_free(m1);
    pylon_manifest_free(m2);
    assert_no_leaks();
}

Test(schema, drift_that_sqlite_cannot_alter_is_a_warning)
{
    exec("CREATE TABLE T (id TEXT PRIMARY KEY NOT NULL, n TEXT, req TEXT NOT NULL)");
    exec("CREATE INDEX T_by_n ON T (req)");
    pylon_manifest *m = manifest(HEAD "{'name':'T','fields':[" F("n", "int", "true", "false") "," F(
        "req", "string", "true",
        "false") "],"
                 "'indexes':[{'name':'by_n','fields':['n'],'unique':false}]}]}");
    char *s = apply_ok(m);
    cr_assert_str_eq(s, "warning: column \"T\".\"n\" is TEXT but the manifest type int maps to "
                        "INTEGER; SQLite cannot change a column's type in place\n"
                        "warning: column \"T\".\"req\" is NOT NULL but the field is now optional; "
                        "SQLite cannot drop NOT NULL in place, so rows without it are refused\n"
                        "warning: index \"T_by_n\" is (req) but the manifest declares (n); left as "
                        "it is (drop it to have it recreated)");
    free(s);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, existing_table_without_id_is_an_error)
{
    exec("CREATE TABLE T (name TEXT)");
    pylon_manifest *m = manifest(HEAD "{'name':'T','fields':[],'indexes':[]}]}");
    char err[256];
    cr_assert_eq(pylon_schema_apply(db, m, "dev", NULL, err, sizeof err), -1);
    cr_assert_str_eq(err, "table \"T\" exists but has no id primary key column: it was not "
                          "created by pylon; rename it or the entity");
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, field_case_change_is_the_same_column)
{
    pylon_manifest *m1 = manifest(
        HEAD "{'name':'T','fields':[" F("Title", "string", "true", "false") "],'indexes':[]}]}");
    free(apply_ok(m1));
    pylon_manifest *m2 = manifest(
        HEAD "{'name':'T','fields':[" F("title", "string", "true", "false") "],'indexes':[]}]}");
    char *s = apply_ok(m2);
    cr_assert_str_eq(s, "");
    free(s);
    exec("INSERT INTO T (id, Title) VALUES ('1', 'x')");
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT * FROM T", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    json_t *row = pylon_schema_row_to_json(&m2->entities[0], st);
    sqlite3_finalize(st);
    char *d = json_dumps(row, JSON_COMPACT | JSON_SORT_KEYS);
    cr_assert_str_eq(d, "{\"id\":\"1\",\"title\":\"x\"}", "named as the manifest spells it");
    free(d);
    json_decref(row);
    pylon_manifest_free(m1);
    pylon_manifest_free(m2);
    assert_no_leaks();
}

/* ---- row <-> JSON --------------------------------------------------------------------------- */

#define ALL_TYPES                                                                                  \
    HEAD "{'name':'A','fields':[" F("s", "string", "false", "false") "," F(                        \
        "i", "int", "true",                                                                        \
        "false") "," F("f", "float", "true",                                                       \
                       "false") "," F("b", "bool", "true",                                         \
                                      "false") "," F("d", "datetime", "true",                      \
                                                     "false") "," F("r", "richtext", "true",       \
                                                                    "false") "," F("ref", "id(A)", \
                                                                                   "true",         \
                                                                                   "false") "],"   \
                                                                                            "'ind" \
                                                                                            "exes" \
                                                                                            "':[]" \
                                                                                            "}]}"

/* Binds each key of `obj` to its field, inserts the row with id `id`. */
static void insert_json_id(const pylon_entity *e, const char *id, const char *json)
{
    json_t *obj = json_loads(json, 0, NULL);
    cr_assert_not_null(obj, "%s", json);
    sqlite3_str *sql = sqlite3_str_new(db);
    sqlite3_str_appendall(sql, "INSERT INTO A (id");
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) sqlite3_str_appendf(sql, ", \"%w\"", k);
    sqlite3_str_appendf(sql, ") VALUES (%Q", id);
    for (size_t i = 0; i < json_object_size(obj); i++)
        sqlite3_str_appendall(sql, ", ?");
    sqlite3_str_appendall(sql, ")");
    char *s = sqlite3_str_finish(sql);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, s, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_free(s);
    int idx = 1;
    json_object_foreach(obj, k, v)
    {
        char err[256];
        cr_assert_eq(
            pylon_schema_bind_value(st, idx++, pylon_entity_field(e, k), v, err, sizeof err), 0,
            "%s", err);
    }
    cr_assert_eq(sqlite3_step(st), SQLITE_DONE, "%s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    json_decref(obj);
}

static void insert_json(const pylon_entity *e, const char *json)
{
    insert_json_id(e, "x", json);
}

/* The row with id `id` through the tree path, checked against the text path: both must write
 * the same bytes (the text path answers gets, the tree path everything else). */
static char *row_json_of(const pylon_entity *e, const char *id)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT * FROM A WHERE id=?", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    json_t *row = pylon_schema_row_to_json(e, st);
    cr_assert_not_null(row);
    size_t len = 0;
    char *text = pylon_schema_row_to_text(e, st, &len);
    sqlite3_finalize(st);
    char *d = json_dumps(row, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(row);
    cr_assert_not_null(text, "text path refused %s", d);
    cr_assert_str_eq(text, d, "text path differs from jansson");
    cr_assert_eq(len, strlen(d));
    free(text);
    return d;
}

static char *row_json(const pylon_entity *e)
{
    return row_json_of(e, "x");
}

Test(schema, row_round_trip_by_field_type)
{
    pylon_manifest *m = manifest(ALL_TYPES);
    free(apply_ok(m));
    const pylon_entity *e = &m->entities[0];
    insert_json(e, "{\"s\":\"hé\",\"i\":42,\"f\":3,\"b\":true,\"d\":\"2024-05-01T10:00:00Z\","
                   "\"r\":\"<p>x</p>\",\"ref\":\"x\"}");
    char *d = row_json(e);
    cr_assert_str_eq(d, "{\"id\":\"x\",\"s\":\"hé\",\"i\":42,\"f\":3.0,\"b\":true,"
                        "\"d\":\"2024-05-01T10:00:00Z\",\"r\":\"<p>x</p>\",\"ref\":\"x\"}");
    free(d);
    exec("DELETE FROM A");
    insert_json(e, "{\"s\":\"\",\"i\":2.0,\"f\":1.5,\"b\":false,\"d\":null}");
    d = row_json(e);
    cr_assert_str_eq(d, "{\"id\":\"x\",\"s\":\"\",\"i\":2,\"f\":1.5,\"b\":false,\"d\":null,"
                        "\"r\":null,\"ref\":null}");
    free(d);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* The get by id keeps one plan per kept statement: it writes what row_to_text writes for every
 * row stepped, and stops fitting once SQLite prepared the statement again (here after a
 * column was added), when a new plan includes the new column. */
Test(schema, row_plan_is_kept_while_the_statement_keeps_its_columns)
{
    pylon_manifest *m = manifest(ALL_TYPES);
    free(apply_ok(m));
    const pylon_entity *e = &m->entities[0];
    insert_json_id(e, "r1", "{\"s\":\"one \\\"q\\\"\",\"i\":1,\"b\":true}");
    insert_json_id(e, "r2", "{\"s\":\"two\",\"f\":2.5,\"b\":false,\"r\":\"<p>\"}");
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT * FROM A WHERE id=?", -1, &st, NULL), SQLITE_OK);
    pylon_row_plan *plan = pylon_schema_row_plan(e, st);
    cr_assert_not_null(plan);
    for (int round = 0; round < 3; round++)
        for (int k = 1; k <= 2; k++) {
            char id[4];
            snprintf(id, sizeof id, "r%d", k);
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
            cr_assert(pylon_schema_row_plan_fits(plan, st));
            size_t a = 0, b = 0;
            char *planned = pylon_schema_row_to_text_planned(plan, st, &a);
            char *fresh = pylon_schema_row_to_text(e, st, &b);
            cr_assert_not_null(planned);
            cr_assert_str_eq(planned, fresh);
            cr_assert_eq(a, b);
            free(planned);
            free(fresh);
            sqlite3_reset(st);
        }
    exec("ALTER TABLE A ADD COLUMN extra TEXT");
    sqlite3_bind_text(st, 1, "r1", -1, SQLITE_TRANSIENT);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW); /* prepared again: one more column */
    cr_assert_not(pylon_schema_row_plan_fits(plan, st));
    pylon_schema_row_plan_free(plan);
    plan = pylon_schema_row_plan(e, st);
    size_t len = 0;
    char *text = pylon_schema_row_to_text_planned(plan, st, &len);
    cr_assert_not_null(strstr(text, ",\"extra\":null}"), "%s", text);
    free(text);
    sqlite3_finalize(st);
    pylon_schema_row_plan_free(plan);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(schema, row_columns_outside_the_manifest_and_odd_storage)
{
    pylon_manifest *m = manifest(ALL_TYPES);
    free(apply_ok(m));
    const pylon_entity *e = &m->entities[0];
    exec("ALTER TABLE A ADD COLUMN legacy_i INTEGER");
    exec("ALTER TABLE A ADD COLUMN legacy_f REAL");
    exec("ALTER TABLE A ADD COLUMN legacy_t TEXT");
    /* invalid UTF-8 written by another tool, a bool column holding text, a blob */
    exec("INSERT INTO A (id, s, b, r, legacy_i, legacy_f, legacy_t) VALUES "
         "('x', CAST(X'61FF62' AS TEXT), 'yes', X'6869', 5, 0.5, 't')");
    char *d = row_json(e);
    cr_assert_str_eq(d, "{\"id\":\"x\",\"s\":\"a\xef\xbf\xbd"
                        "b\",\"i\":null,\"f\":null,"
                        "\"b\":\"yes\",\"d\":null,\"r\":\"hi\",\"ref\":null,\"legacy_i\":5,"
                        "\"legacy_f\":0.5,\"legacy_t\":\"t\"}");
    free(d);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* The text path against jansson on values chosen to hit every branch of its string and real
 * formatting: random bytes (control characters, quotes, invalid UTF-8), random doubles over
 * the whole finite range, integers at the int64 edges. */
Test(schema, row_text_matches_jansson_on_random_values)
{
    pylon_manifest *m = manifest(ALL_TYPES);
    free(apply_ok(m));
    const pylon_entity *e = &m->entities[0];
    exec("ALTER TABLE A ADD COLUMN legacy_f REAL");
    sqlite3_stmt *ins;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "INSERT INTO A (id, s, i, f, b, r, legacy_f) "
                                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                                    -1, &ins, NULL),
                 SQLITE_OK);
    static const long long edges[] = {0, -1, 1, 9223372036854775807LL,
                                      (-9223372036854775807LL - 1)};
    static const char alphabet[] = "aZ\"\\/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98"
                                   "\x80\xff\xc0\xed\xa0\x80\xf4\x90";
    unsigned seed = 12345;
    for (int n = 0; n < 600; n++) {
        char id[16];
        snprintf(id, sizeof id, "r%d", n);
        unsigned char str[40];
        size_t sl = (seed = seed * 1103515245u + 12345u) % sizeof str;
        for (size_t k = 0; k < sl; k++) {
            seed = seed * 1103515245u + 12345u;
            str[k] = (n % 3 == 0) ? (unsigned char)(seed >> 16)
                                  : (unsigned char)alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        uint64_t bits = 0;
        for (int k = 0; k < 4; k++)
            bits = (bits << 16) ^ ((seed = seed * 1103515245u + 12345u) >> 16);
        double d;
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d)) d = (double)n / 7.0;
        if (n % 5 == 1) d = (double)(n * 1000) * 1e15; /* integral values, large exponents */
        if (n % 5 == 2) d = 1.0 / (double)(n + 1) * 1e-7;
        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, (const char *)str, (int)sl, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, edges[n % 5] ^ (long long)(n / 5));
        if (n % 2)
            sqlite3_bind_double(ins, 4, d);
        else
            sqlite3_bind_int64(ins, 4,
                               (long long)(n - 300) * 1000003); /* float field, int stored */
        sqlite3_bind_int64(ins, 5, n % 3);                      /* bool field: 0, 1, 2 */
        if (n % 4 == 0)
            sqlite3_bind_blob(ins, 6, str, (int)sl, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(ins, 6);
        sqlite3_bind_double(ins, 7, -d);
        cr_assert_eq(sqlite3_step(ins), SQLITE_DONE, "%s", sqlite3_errmsg(db));
        free(row_json_of(e, id)); /* asserts text == jansson */
    }
    sqlite3_finalize(ins);

    /* jansson refuses non-finite reals: the text path hands those rows to the tree path */
    exec("INSERT INTO A (id, s, legacy_f) VALUES ('inf', 'x', 1e999)");
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT * FROM A WHERE id='inf'", -1, &st, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    size_t len;
    cr_assert_null(pylon_schema_row_to_text(e, st, &len));
    sqlite3_finalize(st);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* What an insert answers and logs (written from the bound JSON) is what a get reads back. */
Test(schema, insert_text_is_the_row_read_back)
{
    pylon_manifest *m = manifest(ALL_TYPES);
    free(apply_ok(m));
    const pylon_entity *e = &m->entities[0];
    static const char *const bodies[] = {
        "{\"s\":\"plain\"}",
        "{\"s\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f é € 😀\",\"r\":\"<p>\"}",
        "{\"s\":\"\",\"i\":42,\"f\":3,\"b\":true,\"d\":\"2024-05-01T10:00:00Z\",\"ref\":\"x\"}",
        "{\"s\":\"n\",\"i\":2.0,\"f\":1.5,\"b\":false,\"d\":null}",
        "{\"s\":\"n\",\"i\":-9223372036854775808,\"f\":-2.5}",
        "{\"s\":\"n\",\"i\":9223372036854775807,\"f\":1e300}",
        "{\"s\":\"n\",\"f\":1e-7,\"i\":-1}",
        "{\"s\":\"n\",\"f\":123456789012345678}",
        "{\"s\":\"n\",\"f\":0.1}",
        "{\"s\":\"n\",\"f\":2.5e-308}",
    };
    for (size_t k = 0; k < sizeof bodies / sizeof *bodies; k++) {
        char id[16];
        snprintf(id, sizeof id, "i\"%zu", k); /* an id that needs escaping */
        insert_json_id(e, id, bodies[k]);
        json_t *data = json_loads(bodies[k], 0, NULL);
        size_t len = 0;
        char *text = pylon_schema_insert_text(e, id, data, &len);
        char *read = row_json_of(e, id);
        cr_assert_not_null(text, "%s", bodies[k]);
        cr_assert_str_eq(text, read, "body %s", bodies[k]);
        cr_assert_eq(len, strlen(read));
        free(text);
        free(read);
        json_decref(data);
    }
    json_t *nested = json_pack("{s:{s:i}}", "s", "a", 1);
    size_t len;
    cr_assert_null(pylon_schema_insert_text(e, "y", nested, &len), "objects never bind");
    json_decref(nested);
    pylon_manifest_free(m);
    assert_no_leaks();
}

static void expect_bind_error(const pylon_field *f, const char *json, const char *message)
{
    json_t *v = json_loads(json, JSON_DECODE_ANY, NULL);
    cr_assert_not_null(v, "%s", json);
    char err[256] = "";
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT ?", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(pylon_schema_bind_value(st, 1, f, v, err, sizeof err), -1, "%s accepted", json);
    cr_assert_str_eq(err, message);
    cr_assert_eq(pylon_schema_check_value(f, v, err, sizeof err), -1);
    sqlite3_finalize(st);
    json_decref(v);
}

Test(schema, bind_value_type_rules)
{
    pylon_field s = {.name = "title", .type = PYLON_FIELD_STRING, .type_text = "string"};
    pylon_field i = {.name = "stock", .type = PYLON_FIELD_INT, .type_text = "int"};
    pylon_field f = {.name = "price", .type = PYLON_FIELD_FLOAT, .type_text = "float"};
    pylon_field b = {.name = "done", .type = PYLON_FIELD_BOOL, .type_text = "bool"};
    pylon_field d = {.name = "at", .type = PYLON_FIELD_DATETIME, .type_text = "datetime"};
    pylon_field r = {.name = "owner",
                     .type = PYLON_FIELD_ID,
                     .type_text = "id(User)",
                     .target = "User",
                     .optional = true};
    expect_bind_error(&s, "42", "field \"title\" expects a string, got 42");
    expect_bind_error(&s, "{\"a\":1}", "field \"title\" expects a string, got an object");
    expect_bind_error(&s, "[\"a\"]", "field \"title\" expects a string, got an array");
    expect_bind_error(&s, "null",
                      "field \"title\" is required: null is not allowed (expects a "
                      "string)");
    expect_bind_error(&i, "1.5", "field \"stock\" expects an integer, got 1.5");
    expect_bind_error(&i, "\"3\"", "field \"stock\" expects an integer, got a string");
    expect_bind_error(&i, "true", "field \"stock\" expects an integer, got true");
    expect_bind_error(&f, "\"1.5\"", "field \"price\" expects a number, got a string");
    expect_bind_error(&b, "1", "field \"done\" expects true or false, got 1");
    expect_bind_error(&b, "0", "field \"done\" expects true or false, got 0");
    expect_bind_error(&b, "\"true\"", "field \"done\" expects true or false, got a string");
    expect_bind_error(&d, "1714557600", "field \"at\" expects a string (datetime), got 1714557600");
    expect_bind_error(&r, "7", "field \"owner\" expects a string (id), got 7");

    char err[256];
    json_t *nul = json_null();
    cr_assert_eq(pylon_schema_check_value(&r, nul, err, sizeof err), 0, "optional takes null");
    cr_assert_eq(pylon_schema_check_value(&r, NULL, err, sizeof err), 0);
    json_t *big = json_real(1e300);
    cr_assert_eq(pylon_schema_check_value(&i, big, err, sizeof err), -1, "out of int64 range");
    cr_assert_eq(pylon_schema_check_value(&f, big, err, sizeof err), 0);
    json_decref(big);
    json_t *n = json_integer(7);
    cr_assert_eq(pylon_schema_check_value(&f, n, err, sizeof err), 0, "float takes integers");
    json_decref(n);

    /* what gets bound */
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, "SELECT typeof(?1), ?1", -1, &st, NULL), SQLITE_OK);
    struct {
        const pylon_field *f;
        const char *json, *type, *value;
    } cases[] = {{&b, "true", "integer", "1"}, {&b, "false", "integer", "0"},
                 {&i, "2.0", "integer", "2"},  {&i, "-9", "integer", "-9"},
                 {&f, "2", "real", "2.0"},     {&s, "\"a\"", "text", "a"},
                 {&r, "null", "null", NULL},   {&d, "\"whenever\"", "text", "whenever"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        json_t *v = json_loads(cases[k].json, JSON_DECODE_ANY, NULL);
        cr_assert_eq(pylon_schema_bind_value(st, 1, cases[k].f, v, err, sizeof err), 0, "%s", err);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), cases[k].type, "%s",
                         cases[k].json);
        const char *got = (const char *)sqlite3_column_text(st, 1);
        if (cases[k].value)
            cr_assert_str_eq(got, cases[k].value, "%s", cases[k].json);
        else
            cr_assert_null(got);
        sqlite3_reset(st);
        json_decref(v);
    }
    sqlite3_finalize(st);
    assert_no_leaks();
}

Test(schema, helpers)
{
    char buf[32];
    cr_assert_eq(pylon_schema_quote_ident(buf, sizeof buf, "Todo"), 6);
    cr_assert_str_eq(buf, "\"Todo\"");
    cr_assert_eq(pylon_schema_quote_ident(buf, sizeof buf, "a\"b"), 6);
    cr_assert_str_eq(buf, "\"a\"\"b\"");
    cr_assert_eq(pylon_schema_quote_ident(buf, 4, "abcdef"), 8);
    cr_assert_str_eq(buf, "\"ab");
    cr_assert_eq(pylon_schema_quote_ident(NULL, 0, "ab"), 4);
    cr_assert_str_eq(pylon_schema_sql_type(PYLON_FIELD_BOOL), "INTEGER");
    cr_assert_str_eq(pylon_schema_sql_type(PYLON_FIELD_FLOAT), "REAL");
    cr_assert_str_eq(pylon_schema_sql_type(PYLON_FIELD_ID), "TEXT");
    cr_assert_str_eq(pylon_schema_sql_type(PYLON_FIELD_DATETIME), "TEXT");
    assert_no_leaks();
}
