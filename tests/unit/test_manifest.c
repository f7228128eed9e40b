/* test_manifest.c — the manifest loader: every validation rule with its exact message, the
 * example manifests, file handling and the lookup helpers. */
#include "actors/manifest.h"
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Manifests are written with ' for " to keep them readable; none of them needs a quote. */
static char *dq(const char *s)
{
    char *d = strdup(s);
    cr_assert_not_null(d);
    for (char *p = d; *p; p++)
        if (*p == '\'') *p = '"';
    return d;
}

static pylon_manifest *parse_ok(const char *sq)
{
    char *j = dq(sq);
    pylon_manifest_errors *errs = NULL;
    pylon_manifest *m = pylon_manifest_parse(j, strlen(j), &errs);
    cr_assert_not_null(m, "expected a valid manifest, got:\n%s", pylon_manifest_errors_text(errs));
    cr_assert_null(errs);
    free(j);
    return m;
}

static pylon_manifest_errors *parse_bad(const char *sq)
{
    char *j = dq(sq);
    pylon_manifest_errors *errs = NULL;
    pylon_manifest *m = pylon_manifest_parse(j, strlen(j), &errs);
    free(j);
    cr_assert_null(m, "expected the manifest to be refused");
    cr_assert_not_null(errs);
    cr_assert_gt(errs->count, 0);
    return errs;
}

static bool has_error(const pylon_manifest_errors *e, const char *code, const char *message)
{
    for (size_t i = 0; i < e->count; i++)
        if (strcmp(e->items[i].code, code) == 0 && strcmp(e->items[i].message, message) == 0)
            return true;
    return false;
}

/* The manifest must fail with (at least) this exact error. */
static void expect_error(const char *sq, const char *code, const char *message)
{
    pylon_manifest_errors *e = parse_bad(sq);
    cr_assert(has_error(e, code, message), "expected %s \"%s\"; got:\n%s", code, message,
              pylon_manifest_errors_text(e));
    pylon_manifest_errors_free(e);
}

/* Exactly one error, this one. */
static void expect_only(const char *sq, const char *code, const char *message)
{
    pylon_manifest_errors *e = parse_bad(sq);
    cr_assert_eq(e->total, 1, "expected only %s; got:\n%s", code, pylon_manifest_errors_text(e));
    cr_assert_str_eq(e->items[0].code, code);
    cr_assert_str_eq(e->items[0].message, message);
    pylon_manifest_errors_free(e);
}

#define HEAD           "{'manifest_version':1,'name':'t','version':'1','routes':[],"
#define F(n, t)        "{'name':'" n "','type':'" t "','optional':false,'unique':false}"
#define ENT(n, fields) "{'name':'" n "','fields':[" fields "],'indexes':[]}"
/* A manifest with these entities (and nothing else). */
#define WITH(ents) HEAD "'entities':[" ents "]}"

static char *source_path(const char *rel)
{
    /* __FILE__ is .../tests/unit/test_manifest.c: the repository root is three levels up. */
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/test_manifest.c");
    size_t n = cut ? (size_t)(cut - f) : 0;
    char *p = malloc(n + strlen(rel) + 1);
    cr_assert_not_null(p);
    memcpy(p, f, n);
    strcpy(p + n, rel);
    return p;
}

static pylon_manifest *load_example(const char *rel)
{
    char *p = source_path(rel);
    pylon_manifest_errors *errs = NULL;
    pylon_manifest *m = pylon_manifest_load_file(p, &errs);
    cr_assert_not_null(m, "%s: %s", p, pylon_manifest_errors_text(errs));
    free(p);
    return m;
}

/* ---- examples ------------------------------------------------------------------------------- */

Test(manifest, todo_example_loads)
{
    pylon_manifest *m = load_example("examples/manifests/todo.json");
    cr_assert_eq(m->manifest_version, 1);
    cr_assert_str_eq(m->name, "todo-app");
    cr_assert_str_eq(m->version, "0.1.0");
    cr_assert_eq(m->nentities, 2);
    const pylon_entity *todo = pylon_manifest_entity(m, "Todo");
    cr_assert_not_null(todo);
    cr_assert(todo->crdt, "crdt defaults to true");
    cr_assert_null(todo->search);
    const pylon_field *done = pylon_entity_field(todo, "done");
    cr_assert_not_null(done);
    cr_assert_eq(done->type, PYLON_FIELD_BOOL);
    cr_assert(!done->optional && !done->unique);
    cr_assert_eq(pylon_entity_field(todo, "dueAt")->type, PYLON_FIELD_DATETIME);
    cr_assert(pylon_entity_field(todo, "dueAt")->optional);
    cr_assert_eq(todo->nindexes, 2);
    cr_assert_str_eq(todo->indexes[1].name, "by_user_done");
    cr_assert_eq(todo->indexes[1].nfields, 2);
    cr_assert_str_eq(todo->indexes[1].fields[1], "done");
    cr_assert_str_eq(todo->columns,
                     "id, userId, title, notes, done, priority, dueAt, completedAt, createdAt");
    cr_assert_eq(m->npolicies, 2);
    cr_assert_str_eq(m->policies[1].allow_insert, "auth.userId == data.userId");
    cr_assert_null(m->policies[1].allow);
    cr_assert(json_is_array(m->policies_json));
    cr_assert_eq(json_array_size(m->policies_json), 2);
    /* auth defaults */
    cr_assert_str_eq(m->auth.user_entity, "User");
    cr_assert_eq(m->auth.session_expires_in, 2592000);
    cr_assert_eq(m->auth.ntrusted_origins, 0);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(manifest, store_example_loads)
{
    pylon_manifest *m = load_example("examples/manifests/store.json");
    cr_assert_eq(m->nentities, 6);
    const pylon_entity *p = pylon_manifest_entity(m, "Product");
    cr_assert_not_null(p->search);
    cr_assert_eq(p->search->nfacets, 3);
    cr_assert_str_eq(p->search->sortable[2], "createdAt");
    cr_assert_null(p->search->language);
    const pylon_entity *ci = pylon_manifest_entity(m, "CartItem");
    const pylon_field *pid = pylon_entity_field(ci, "productId");
    cr_assert_eq(pid->type, PYLON_FIELD_ID);
    cr_assert_str_eq(pid->target, "Product");
    cr_assert_str_eq(pid->type_text, "id(Product)");
    const pylon_relation *r = pylon_entity_relation(pylon_manifest_entity(m, "Order"), "items");
    cr_assert_not_null(r);
    cr_assert(r->many);
    cr_assert_str_eq(r->target, "OrderItem");
    cr_assert_eq(pylon_manifest_entity(m, "User")->fields[0].unique, true);
    const pylon_manifest_callable *a = pylon_manifest_action(m, "placeOrder");
    cr_assert_not_null(a);
    cr_assert_eq(a->ninput, 2);
    cr_assert(a->input[1].optional);
    const pylon_manifest_callable *q = pylon_manifest_query(m, "productById");
    cr_assert_not_null(q);
    cr_assert(!q->input[0].optional, "input optional defaults to false");
    cr_assert_str_eq(m->policies[3].action, "placeOrder");
    cr_assert_eq(m->nroutes, 3);
    cr_assert_str_eq(m->routes[1].query, "productById");
    cr_assert_eq(m->auth.session_expires_in, 604800);
    cr_assert_eq(m->auth.nexpose, 2);
    cr_assert_str_eq(m->auth.hide[0], "passwordHash");
    cr_assert_str_eq(m->auth.trusted_origins[0], "https://store.example.com");
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- document level ------------------------------------------------------------------------- */

Test(manifest, malformed_json_reports_line_and_column)
{
    const char *j = "{\n  \"manifest_version\": 1,\n  \"name\": \"x\",,\n}";
    pylon_manifest_errors *e = NULL;
    cr_assert_null(pylon_manifest_parse(j, strlen(j), &e));
    cr_assert_eq(e->count, 1);
    cr_assert_str_eq(e->items[0].code, "MANIFEST_PARSE_ERROR");
    cr_assert_str_eq(e->items[0].path, "");
    cr_assert(strncmp(e->items[0].message, "line 3, column 15: invalid JSON: ", 33) == 0, "%s",
              e->items[0].message);
    pylon_manifest_errors_free(e);

    cr_assert_null(pylon_manifest_parse("", 0, &e));
    cr_assert(strstr(e->text, "invalid JSON"), "%s", e->text);
    pylon_manifest_errors_free(e);
    cr_assert_null(pylon_manifest_parse(NULL, 0, NULL), "NULL input and NULL errs are fine");
    assert_no_leaks();
}

Test(manifest, duplicate_json_keys_are_refused)
{
    pylon_manifest_errors *e = parse_bad(HEAD "'entities':[],'name':'u'}");
    cr_assert(strstr(e->items[0].message, "duplicate object key"), "%s", e->text);
    pylon_manifest_errors_free(e);
    assert_no_leaks();
}

Test(manifest, root_must_be_an_object)
{
    expect_only("[1]", "MANIFEST_PARSE_ERROR", "the manifest must be a JSON object, got an array");
    assert_no_leaks();
}

Test(manifest, version_must_be_1)
{
    expect_only("{'manifest_version':2,'name':'t','version':'1','entities':[],'routes':[]}",
                "MANIFEST_VERSION_UNSUPPORTED",
                "manifest_version: manifest version 2 is not supported (expected 1)");
    expect_only("{'manifest_version':'1','name':'t','version':'1','entities':[]}",
                "MANIFEST_PARSE_ERROR", "manifest_version: expected an integer, got a string");
    assert_no_leaks();
}

Test(manifest, required_top_level_keys)
{
    pylon_manifest_errors *e = parse_bad("{}");
    cr_assert_eq(e->total, 4, "%s", e->text);
    cr_assert_str_eq(e->items[0].message, "manifest_version: missing (required, an integer)");
    cr_assert_str_eq(e->items[1].message, "name: missing (required, a string)");
    cr_assert_str_eq(e->items[2].message, "version: missing (required, a string)");
    cr_assert_str_eq(e->items[3].message, "entities: missing (required, an array)");
    cr_assert_str_eq(e->items[3].path, "entities");
    cr_assert_str_eq(e->text, "manifest_version: missing (required, an integer)\n"
                              "name: missing (required, a string)\n"
                              "version: missing (required, a string)\n"
                              "entities: missing (required, an array)");
    pylon_manifest_errors_free(e);
    expect_only("{'manifest_version':1,'name':'','version':'1','entities':[]}",
                "MANIFEST_NAME_EMPTY", "name: app name must not be empty");
    expect_only("{'manifest_version':1,'name':'t','version':1,'entities':[]}",
                "MANIFEST_PARSE_ERROR", "version: expected a string, got an integer");
    expect_only("{'manifest_version':1,'name':null,'version':'1','entities':[]}",
                "MANIFEST_PARSE_ERROR", "name: expected a string, got null");
    assert_no_leaks();
}

Test(manifest, empty_manifest_is_valid_and_defaults_are_filled)
{
    pylon_manifest *m = parse_ok("{'manifest_version':1,'name':'t','version':'1','entities':[]}");
    cr_assert_eq(m->nentities, 0);
    cr_assert_eq(m->nroutes, 0);
    cr_assert(json_is_array(json_object_get(m->json, "queries")));
    cr_assert(json_is_array(json_object_get(m->json, "actions")));
    cr_assert(json_is_array(json_object_get(m->json, "routes")));
    cr_assert(json_is_array(m->policies_json));
    cr_assert_eq(json_array_size(m->policies_json), 0);
    pylon_manifest_free(m);

    m = pylon_manifest_new_empty();
    cr_assert_not_null(m);
    cr_assert_str_eq(m->name, "pylon-app");
    cr_assert_eq(m->nentities, 0);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* \u0000 would cut C strings short: jansson refuses it in the document. */
Test(manifest, nul_in_a_name_is_refused)
{
    const char j[] = "{\"manifest_version\":1,\"name\":\"a\\u0000b\",\"version\":\"1\","
                     "\"entities\":[]}";
    pylon_manifest_errors *e = NULL;
    cr_assert_null(pylon_manifest_parse(j, sizeof j - 1, &e));
    cr_assert(strstr(e->items[0].message, "is not allowed"), "%s", e->items[0].message);
    pylon_manifest_errors_free(e);
    assert_no_leaks();
}

/* ---- entities ------------------------------------------------------------------------------- */

Test(manifest, entity_names)
{
    expect_only(WITH(ENT("", F("a", "string"))), "ENTITY_NAME_EMPTY",
                "entities[0].name: entity name must not be empty");
    expect_only(WITH(ENT("Bad Name", F("a", "string"))), "ENTITY_NAME_INVALID",
                "entities[0].name: \"Bad Name\" is not a valid entity name (letters, digits and _, "
                "not starting with a digit)");
    expect_only(WITH(ENT("9Lives", F("a", "string"))), "ENTITY_NAME_INVALID",
                "entities[0].name: \"9Lives\" is not a valid entity name (letters, digits and _, "
                "not starting with a digit)");
    expect_only(WITH(ENT("_pylon_changes", F("a", "string"))), "ENTITY_NAME_RESERVED",
                "entities[0].name: \"_pylon_changes\" is reserved for internal tables (names "
                "starting with _pylon, sqlite_ or _fts_, and _facet_bitmap)");
    expect_only(WITH(ENT("SQLite_x", F("a", "string"))), "ENTITY_NAME_RESERVED",
                "entities[0].name: \"SQLite_x\" is reserved for internal tables (names starting "
                "with _pylon, sqlite_ or _fts_, and _facet_bitmap)");
    expect_only(WITH(ENT("Todo", F("a", "string")) "," ENT("User", F("a", "string")) "," ENT(
                    "Todo", F("b", "string"))),
                "ENTITY_DUPLICATE",
                "entities[2].name: duplicate entity name \"Todo\" (first declared at entities[0])");
    expect_only(WITH(ENT("Todo", F("a", "string")) "," ENT("todo", F("a", "string"))),
                "ENTITY_DUPLICATE",
                "entities[1].name: entity name \"todo\" clashes with \"Todo\" at entities[0] "
                "(SQLite table names ignore case)");
    expect_only(HEAD "'entities':[{'name':'A','fields':[]}]}", "MANIFEST_PARSE_ERROR",
                "entities[0].indexes: missing (required, an array)");
    expect_only(HEAD "'entities':['A']}", "MANIFEST_PARSE_ERROR",
                "entities[0]: expected an object, got a string");
    expect_only(HEAD "'entities':[{'name':'A','fields':[],'indexes':[],'crdt':'yes'}]}",
                "MANIFEST_PARSE_ERROR", "entities[0].crdt: expected a boolean, got a string");
    expect_error(HEAD "'entities':[{'name':'A','fields':{},'indexes':3}]}", "MANIFEST_PARSE_ERROR",
                 "entities[0].fields: expected an array, got an object");
    expect_error(HEAD "'entities':[{'name':'A','fields':{},'indexes':3}]}", "MANIFEST_PARSE_ERROR",
                 "entities[0].indexes: expected an array, got an integer");
    pylon_manifest *m =
        parse_ok(HEAD "'entities':[{'name':'A','fields':[],'indexes':[],'crdt':false}]}");
    cr_assert(!m->entities[0].crdt);
    pylon_manifest_free(m);
    assert_no_leaks();
}

Test(manifest, field_names)
{
    expect_only(WITH(ENT("A", F("", "string"))), "FIELD_NAME_EMPTY",
                "entities[0].fields[0].name: field name must not be empty");
    expect_only(WITH(ENT("A", F("x", "string") "," F("first name", "string"))),
                "FIELD_NAME_INVALID",
                "entities[0].fields[1].name: \"first name\" is not a valid field name (letters, "
                "digits and _, not starting with a digit)");
    expect_only(WITH(ENT("A", F("a\\\"b", "string"))), "FIELD_NAME_INVALID",
                "entities[0].fields[0].name: \"a\\\"b\" is not a valid field name (letters, "
                "digits and _, not starting with a digit)");
    expect_only(WITH(ENT("A", F("id", "string"))), "FIELD_NAME_RESERVED",
                "entities[0].fields[0].name: \"id\" is the system column (every entity has id "
                "TEXT PRIMARY KEY); remove this field");
    expect_only(WITH(ENT("A", F("ID", "string"))), "FIELD_NAME_RESERVED",
                "entities[0].fields[0].name: \"ID\" is the system column (every entity has id "
                "TEXT PRIMARY KEY); remove this field");
    expect_only(WITH(ENT("A", F("title", "string") "," F("x", "int") "," F("title", "string"))),
                "FIELD_DUPLICATE",
                "entities[0].fields[2].name: duplicate field name \"title\" (first declared at "
                "fields[0])");
    expect_only(WITH(ENT("A", F("title", "string") "," F("Title", "string"))), "FIELD_DUPLICATE",
                "entities[0].fields[1].name: field name \"Title\" clashes with \"title\" at "
                "fields[0] (SQLite column names ignore case)");
    assert_no_leaks();
}

Test(manifest, field_keys_are_required)
{
    expect_only(WITH("{'name':'A','indexes':[],'fields':[{'name':'a','type':'string','unique':"
                     "false}]}"),
                "MANIFEST_PARSE_ERROR",
                "entities[0].fields[0].optional: missing (required, a boolean)");
    expect_only(WITH("{'name':'A','indexes':[],'fields':[{'name':'a','type':'string','optional':"
                     "false,'unique':'no'}]}"),
                "MANIFEST_PARSE_ERROR",
                "entities[0].fields[0].unique: expected a boolean, got a string");
    expect_only(WITH("{'name':'A','indexes':[],'fields':[{'name':'a','optional':false,'unique':"
                     "false}]}"),
                "MANIFEST_PARSE_ERROR", "entities[0].fields[0].type: missing (required, a string)");
    assert_no_leaks();
}

Test(manifest, field_types)
{
    expect_only(WITH(ENT("A", F("a", "string")) "," ENT("B", F("x", "int") "," F("y", "strng"))),
                "FIELD_TYPE_UNKNOWN",
                "entities[1].fields[1].type: unknown type \"strng\" (expected string, int, float, "
                "bool, datetime, richtext or id(Entity))");
    expect_only(WITH(ENT("A", F("a", "id()"))), "FIELD_TYPE_UNKNOWN",
                "entities[0].fields[0].type: unknown type \"id()\" (expected string, int, float, "
                "bool, datetime, richtext or id(Entity))");
    expect_only(WITH(ENT("A", F("a", "Boolean"))), "FIELD_TYPE_UNKNOWN",
                "entities[0].fields[0].type: unknown type \"Boolean\" (expected string, int, "
                "float, bool, datetime, richtext or id(Entity))");
    expect_only(WITH(ENT("A", F("a", "id(Usr)")) "," ENT("User", F("e", "string"))),
                "FIELD_ID_TARGET_NOT_FOUND",
                "entities[0].fields[0].type: id(Usr) references unknown entity \"Usr\"");
    expect_only(WITH("{'name':'A','indexes':[],'fields':[{'name':'a','type':'string','optional':"
                     "false,'unique':false,'crdt':'blob'}]}"),
                "MANIFEST_PARSE_ERROR",
                "entities[0].fields[0].crdt: unknown crdt kind \"blob\" (expected lww, text, "
                "counter, list, movable-list or tree)");

    pylon_manifest *m = parse_ok(WITH(
        ENT("A", F("s", "string") "," F("i", "int") "," F("f", "float") "," F("b", "bool") "," F(
                     "d", "datetime") "," F("r", "richtext") "," F("me", "id(A)"))));
    const pylon_entity *e = &m->entities[0];
    pylon_field_type want[] = {PYLON_FIELD_STRING, PYLON_FIELD_INT,      PYLON_FIELD_FLOAT,
                               PYLON_FIELD_BOOL,   PYLON_FIELD_DATETIME, PYLON_FIELD_RICHTEXT,
                               PYLON_FIELD_ID};
    for (size_t i = 0; i < 7; i++)
        cr_assert_eq(e->fields[i].type, want[i], "field %zu", i);
    cr_assert_str_eq(e->fields[6].target, "A");
    cr_assert_null(e->fields[0].target);
    cr_assert_str_eq(pylon_field_type_name(PYLON_FIELD_RICHTEXT), "richtext");
    cr_assert_str_eq(pylon_field_type_name(PYLON_FIELD_ID), "id");
    pylon_manifest_free(m);

    m = parse_ok(WITH("{'name':'A','indexes':[],'fields':[{'name':'t','type':'string','optional':"
                      "false,'unique':false,'crdt':'movable-list'}]}"));
    cr_assert_eq(m->entities[0].fields[0].crdt, PYLON_CRDT_MOVABLE_LIST);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- indexes -------------------------------------------------------------------------------- */

#define IDX_ENT(idx)                                                                               \
    "{'name':'A','fields':[" F("a", "string") "," F("b", "int") "],'indexes':[" idx "]}"

Test(manifest, indexes)
{
    expect_only(WITH(IDX_ENT("{'name':'','fields':['a'],'unique':false}")), "INDEX_NAME_EMPTY",
                "entities[0].indexes[0].name: index name must not be empty");
    expect_only(WITH(IDX_ENT("{'name':'by-a','fields':['a'],'unique':false}")),
                "INDEX_NAME_INVALID",
                "entities[0].indexes[0].name: \"by-a\" is not a valid index name (letters, digits "
                "and _, not starting with a digit)");
    expect_only(WITH(IDX_ENT("{'name':'by_a','fields':['a'],'unique':false},"
                             "{'name':'by_a','fields':['b'],'unique':false}")),
                "INDEX_NAME_DUPLICATE",
                "entities[0].indexes[1].name: duplicate index name \"by_a\" (first declared at "
                "indexes[0])");
    expect_only(WITH(IDX_ENT("{'name':'by_a','fields':[],'unique':false}")), "INDEX_FIELDS_EMPTY",
                "entities[0].indexes[0].fields: an index needs at least one field");
    expect_only(WITH(IDX_ENT("{'name':'by_ab','fields':['a','c'],'unique':true}")),
                "INDEX_FIELD_NOT_FOUND",
                "entities[0].indexes[0].fields[1]: unknown field \"c\" in index \"by_ab\"");
    expect_only(WITH(IDX_ENT("{'name':'by_a','fields':['a'],'unique':'yes'}")),
                "MANIFEST_PARSE_ERROR",
                "entities[0].indexes[0].unique: expected a boolean, got a string");
    expect_only(WITH(IDX_ENT("{'name':'by_a','fields':['a', 3],'unique':false}")),
                "MANIFEST_PARSE_ERROR",
                "entities[0].indexes[0].fields[1]: expected a string, got an integer");
    /* the generated name A_x clashes with the table of entity A_x */
    expect_only(WITH(IDX_ENT("{'name':'x','fields':['a'],'unique':false}") "," ENT(
                    "A_x", F("a", "string"))),
                "INDEX_NAME_CONFLICT",
                "entities[0].indexes[0].name: index name \"A_x\" clashes with another table or "
                "index of that name (SQLite names ignore case)");
    /* id may be indexed (compound indexes with the primary key) */
    pylon_manifest *m =
        parse_ok(WITH(IDX_ENT("{'name':'a_id','fields':['a','id'],'unique':true}")));
    cr_assert(m->entities[0].indexes[0].unique);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- relations and search ------------------------------------------------------------------- */

#define REL_ENTS(rel)                                                                              \
    "{'name':'Post','fields':[" F("authorId", "id(User)") "],'indexes':[],'relations':[" rel       \
                                                          "]}," ENT("User", F("name", "string"))

Test(manifest, relations)
{
    pylon_manifest *m =
        parse_ok(WITH(REL_ENTS("{'name':'author','target':'User','field':'authorId'}")));
    cr_assert(!m->entities[0].relations[0].many);
    pylon_manifest_free(m);
    expect_only(WITH(REL_ENTS("{'name':'author','target':'Usr','field':'authorId'}")),
                "RELATION_TARGET_NOT_FOUND",
                "entities[0].relations[0].target: unknown entity \"Usr\"");
    expect_only(WITH(REL_ENTS("{'name':'author','target':'User','field':'writerId'}")),
                "RELATION_FIELD_NOT_FOUND",
                "entities[0].relations[0].field: unknown field \"writerId\" on entity \"Post\"");
    /* many: the field is on the target */
    expect_only(WITH(REL_ENTS("{'name':'fans','target':'User','field':'authorId','many':true}")),
                "RELATION_FIELD_NOT_FOUND",
                "entities[0].relations[0].field: unknown field \"authorId\" on entity \"User\"");
    expect_only(WITH(REL_ENTS("{'name':'','target':'User','field':'authorId'}")),
                "RELATION_NAME_EMPTY",
                "entities[0].relations[0].name: relation name must not be empty");
    expect_only(WITH(REL_ENTS("{'name':'a','target':'User','field':'authorId'},"
                              "{'name':'a','target':'User','field':'authorId'}")),
                "RELATION_DUPLICATE",
                "entities[0].relations[1].name: duplicate relation name \"a\" (first declared at "
                "relations[0])");
    expect_only(WITH(REL_ENTS("{'name':'a','target':'User'}")), "MANIFEST_PARSE_ERROR",
                "entities[0].relations[0].field: missing (required, a string)");
    assert_no_leaks();
}

Test(manifest, search)
{
    expect_only(WITH("{'name':'P','fields':[" F("name", "string") "],'indexes':[],'search':{'text':"
                                                                  "['name'],'facets':['brand']}}"),
                "SEARCH_FIELD_NOT_FOUND", "entities[0].search.facets[0]: unknown field \"brand\"");
    expect_only(WITH("{'name':'P','fields':[" F("name", "string") "],'indexes':[],'search':{'text':"
                                                                  "'name'}}"),
                "MANIFEST_PARSE_ERROR", "entities[0].search.text: expected an array, got a string");
    /* a user index named sort_name would clash with the generated P_sort_name */
    expect_only(
        WITH("{'name':'P','fields':[" F(
            "name", "string") "],'indexes':[{'name':'sort_name',"
                              "'fields':['name'],'unique':false}],'search':{'sortable':['name']}}"),
        "INDEX_NAME_CONFLICT",
        "entities[0].search.sortable[0]: sort index \"P_sort_name\" clashes with another "
        "table or index of that name (SQLite names ignore case)");
    pylon_manifest *m = parse_ok(WITH("{'name':'P','fields':[" F(
        "name", "string") "],'indexes':[],"
                          "'search':{'sortable':['name'],'language':'english'}}"));
    cr_assert_eq(m->entities[0].search->ntext, 0);
    cr_assert_str_eq(m->entities[0].search->language, "english");
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- queries and actions -------------------------------------------------------------------- */

#define WITH_X(key, list)                                                                          \
    HEAD "'entities':[" ENT("User", F("a", "string")) "],'" key "':[" list "]}"

Test(manifest, queries_and_actions)
{
    expect_only(WITH_X("queries", "{'name':''}"), "QUERY_NAME_EMPTY",
                "queries[0].name: query name must not be empty");
    expect_only(WITH_X("queries", "{'name':'q'},{'name':'q'}"), "QUERY_DUPLICATE",
                "queries[1].name: duplicate query name \"q\" (first declared at queries[0])");
    expect_only(WITH_X("actions", "{'name':''}"), "ACTION_NAME_EMPTY",
                "actions[0].name: action name must not be empty");
    expect_only(WITH_X("actions", "{'name':'go'},{'name':'go'}"), "ACTION_DUPLICATE",
                "actions[1].name: duplicate action name \"go\" (first declared at actions[0])");
    expect_only(WITH_X("actions", "{'name':'go','input':[{'name':'','type':'string'}]}"),
                "INPUT_FIELD_NAME_EMPTY",
                "actions[0].input[0].name: input field name must not be empty");
    expect_only(WITH_X("actions", "{'name':'go','input':[{'name':'x','type':'int'},{'name':'x',"
                                  "'type':'string'}]}"),
                "INPUT_FIELD_DUPLICATE",
                "actions[0].input[1].name: duplicate input field \"x\" in action \"go\" (same as "
                "input[0])");
    expect_only(WITH_X("actions", "{'name':'go','input':[{'name':'x','type':'number'}]}"),
                "INPUT_FIELD_TYPE_UNKNOWN",
                "actions[0].input[0].type: unknown type \"number\" (expected string, int, float, "
                "bool, datetime, richtext or id(Entity))");
    expect_only(WITH_X("queries", "{'name':'q','input':[{'name':'u','type':'id(Users)'}]}"),
                "FIELD_ID_TARGET_NOT_FOUND",
                "queries[0].input[0].type: id(Users) references unknown entity \"Users\"");
    expect_only(WITH_X("actions", "{'input':[]}"), "MANIFEST_PARSE_ERROR",
                "actions[0].name: missing (required, a string)");
    pylon_manifest *m = parse_ok(WITH_X(
        "actions", "{'name':'go','input':[{'name':'u','type':'id(User)','optional':true}]}"));
    cr_assert(m->actions[0].input[0].optional);
    cr_assert_null(pylon_manifest_action(m, "nope"));
    cr_assert_null(pylon_manifest_query(m, "go"));
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- policies ------------------------------------------------------------------------------- */

#define WITH_P(list)                                                                               \
    HEAD "'entities':[" ENT("Todo",                                                                \
                            F("a", "string")) "],'actions':[{'name':'go'}],'policies':[" list "]}"

Test(manifest, policies)
{
    expect_only(WITH_P("{'name':'p','allow':'true'}"), "POLICY_NO_TARGET",
                "policies[0]: policy \"p\" needs an entity or an action");
    expect_only(WITH_P("{'name':'p','entity':'Todo'}"), "POLICY_ALLOW_EMPTY",
                "policies[0]: policy \"p\" has no rule (set allow, allowRead, allowInsert, "
                "allowUpdate, allowDelete or allowWrite)");
    expect_only(WITH_P("{'name':'p','entity':'Todo','allow':'','allowRead':''}"),
                "POLICY_ALLOW_EMPTY",
                "policies[0]: policy \"p\" has no rule (set allow, allowRead, allowInsert, "
                "allowUpdate, allowDelete or allowWrite)");
    expect_only(WITH_P("{'name':'p','entity':'Todos','allowRead':'true'}"),
                "POLICY_ENTITY_NOT_FOUND", "policies[0].entity: unknown entity \"Todos\"");
    expect_only(WITH_P("{'name':'p','action':'run','allow':'true'}"), "POLICY_ACTION_NOT_FOUND",
                "policies[0].action: unknown action \"run\"");
    expect_only(WITH_P("{'name':'p','entity':'Todo','allow':'true'},{'name':'p','action':'go','"
                       "allow':'true'}"),
                "POLICY_DUPLICATE",
                "policies[1].name: duplicate policy name \"p\" (first declared at policies[0])");
    expect_only(WITH_P("{'name':'','entity':'Todo','allow':'true'}"), "POLICY_NAME_EMPTY",
                "policies[0].name: policy name must not be empty");
    /* a mistyped rule gets one error, not a second "has no rule" */
    expect_only(WITH_P("{'name':'p','entity':'Todo','allowRead':true}"), "MANIFEST_PARSE_ERROR",
                "policies[0].allowRead: expected a string, got a boolean");
    pylon_manifest *m = parse_ok(
        WITH_P("{'name':'p','entity':'Todo','action':'go','allowWrite':'true','allowRead':null}"));
    cr_assert_str_eq(m->policies[0].allow_write, "true");
    cr_assert_null(m->policies[0].allow_read);
    cr_assert_str_eq(m->policies[0].action, "go");
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- routes --------------------------------------------------------------------------------- */

#define WITH_R(list)                                                                               \
    "{'manifest_version':1,'name':'t','version':'1','entities':[],'queries':[{'name':'post',"      \
    "'input':[{'name':'id','type':'string'}]}],'routes':[" list "]}"

Test(manifest, routes)
{
    expect_only(WITH_R("{'path':'','mode':'ssr'}"), "ROUTE_PATH_EMPTY",
                "routes[0].path: route path must not be empty");
    expect_only(WITH_R("{'path':'posts','mode':'ssr'}"), "ROUTE_PATH_NO_SLASH",
                "routes[0].path: route path \"posts\" must start with /");
    expect_only(WITH_R("{'path':'/a','mode':'ssr'},{'path':'/a','mode':'static'}"),
                "ROUTE_PATH_DUPLICATE",
                "routes[1].path: duplicate route path \"/a\" (first declared at routes[0])");
    expect_only(WITH_R("{'path':'/p/:id','mode':'ssr','query':'posts'}"), "ROUTE_QUERY_NOT_FOUND",
                "routes[0].query: unknown query \"posts\"");
    expect_only(WITH_R("{'path':'/p/:id/c/:cid','mode':'ssr','query':'post'}"),
                "ROUTE_PARAM_NOT_IN_QUERY",
                "routes[0].path: path parameter \"cid\" is not an input of query \"post\"");
    expect_only(WITH_R("{'path':'/p','mode':'ssr','auth':'admin'}"), "ROUTE_AUTH_INVALID",
                "routes[0].auth: invalid auth mode \"admin\" (expected public or user)");
    expect_only(WITH_R("{'path':'/p'}"), "MANIFEST_PARSE_ERROR",
                "routes[0].mode: missing (required, a string)");
    pylon_manifest *m =
        parse_ok(WITH_R("{'path':'/p/:id','mode':'ssr','query':'post','auth':'user'}"));
    cr_assert_str_eq(m->routes[0].auth, "user");
    pylon_manifest_free(m);
    /* routes may be absent altogether */
    m = parse_ok("{'manifest_version':1,'name':'t','version':'1','entities':[]}");
    cr_assert_eq(m->nroutes, 0);
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- auth ----------------------------------------------------------------------------------- */

#define WITH_A(auth) HEAD "'entities':[" ENT("Member", F("email", "string")) "],'auth':" auth "}"

Test(manifest, auth)
{
    expect_only(WITH_A("{'user':{'entity':'User'}}"), "AUTH_USER_ENTITY_NOT_FOUND",
                "auth.user.entity: unknown entity \"User\"");
    expect_only(WITH_A("{'user':{'entity':'Member','expose':['email','name']}}"),
                "AUTH_FIELD_NOT_FOUND",
                "auth.user.expose[1]: unknown field \"name\" on entity \"Member\"");
    expect_only(WITH_A("{'session':{'expires_in':0}}"), "AUTH_SESSION_EXPIRES_INVALID",
                "auth.session.expires_in: session lifetime must be a positive number of seconds, "
                "got 0");
    expect_only(WITH_A("{'session':{'expires_in':'1d'}}"), "MANIFEST_PARSE_ERROR",
                "auth.session.expires_in: expected an integer, got a string");
    expect_only(WITH_A("{'trusted_origins':'https://a'}"), "MANIFEST_PARSE_ERROR",
                "auth.trusted_origins: expected an array, got a string");
    pylon_manifest *m =
        parse_ok(WITH_A("{'user':{'entity':'Member','hide':['email']},'session':{"
                        "'cookie_cache':{'enabled':true,'max_age':60,'claims':["
                        "'is_admin']}},'trusted_origins':['https://a','https://b']}"));
    cr_assert_str_eq(m->auth.user_entity, "Member");
    cr_assert_eq(m->auth.session_expires_in, 2592000);
    cr_assert(m->auth.cookie_cache_enabled);
    cr_assert_eq(m->auth.cookie_cache_max_age, 60);
    cr_assert_eq(m->auth.ntrusted_origins, 2);
    cr_assert_str_eq(m->auth.trusted_origins[1], "https://b");
    pylon_manifest_free(m);
    /* no auth block and no User entity: fine, the default name is only a default */
    m = parse_ok(WITH(ENT("Member", F("email", "string"))));
    cr_assert_str_eq(m->auth.user_entity, "User");
    pylon_manifest_free(m);
    assert_no_leaks();
}

/* ---- error collection ----------------------------------------------------------------------- */

Test(manifest, all_errors_are_reported_in_order)
{
    pylon_manifest_errors *e = parse_bad(
        WITH(ENT("A", F("a", "strng") "," F("id", "string")) "," ENT("A", F("b", "id(Nope)"))));
    cr_assert_eq(e->total, 4, "%s", e->text);
    cr_assert_eq(e->count, 4);
    cr_assert_str_eq(e->items[0].code, "FIELD_TYPE_UNKNOWN");
    cr_assert_str_eq(e->items[0].path, "entities[0].fields[0].type");
    cr_assert_str_eq(e->items[1].code, "ENTITY_DUPLICATE");
    cr_assert_str_eq(e->items[2].code, "FIELD_NAME_RESERVED");
    cr_assert_str_eq(e->items[3].code, "FIELD_ID_TARGET_NOT_FOUND");
    cr_assert_str_eq(e->items[3].path, "entities[1].fields[0].type");
    pylon_manifest_errors_free(e);
    assert_no_leaks();
}

Test(manifest, error_list_is_capped)
{
    /* 150 entities with an empty name each: 100 stored, one summary line for the rest */
    size_t n = 150;
    char *j = malloc(n * 64 + 256);
    size_t o = (size_t)sprintf(j, "{\"manifest_version\":1,\"name\":\"t\",\"version\":\"1\","
                                  "\"entities\":[");
    for (size_t i = 0; i < n; i++)
        o += (size_t)sprintf(j + o, "%s{\"name\":\"\",\"fields\":[],\"indexes\":[]}", i ? "," : "");
    strcpy(j + o, "]}");
    pylon_manifest_errors *e = NULL;
    cr_assert_null(pylon_manifest_parse(j, strlen(j), &e));
    free(j);
    cr_assert_eq(e->count, PYLON_MANIFEST_MAX_ERRORS);
    cr_assert_eq(e->total, 150);
    const char *last = strrchr(e->text, '\n');
    cr_assert_str_eq(last, "\n... and 50 more errors");
    pylon_manifest_errors_free(e);
    cr_assert_str_eq(pylon_manifest_errors_text(NULL), "out of memory");
    assert_no_leaks();
}

Test(manifest, long_values_are_cut_in_messages)
{
    char name[400];
    memset(name, 'x', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    name[0] = ' '; /* invalid identifier */
    char *j = NULL;
    cr_assert(asprintf(&j, WITH("{'name':'%s','fields':[],'indexes':[]}"), name) > 0);
    pylon_manifest_errors *e = parse_bad(j);
    free(j);
    cr_assert_lt(strlen(e->items[0].message), 200, "%s", e->items[0].message);
    cr_assert(strstr(e->items[0].message, "...\" is not a valid entity name"), "%s",
              e->items[0].message);
    pylon_manifest_errors_free(e);
    assert_no_leaks();
}

/* ---- files ---------------------------------------------------------------------------------- */

Test(manifest, missing_file)
{
    pylon_manifest_errors *e = NULL;
    cr_assert_null(pylon_manifest_load_file("/nonexistent/pylon.manifest.json", &e));
    cr_assert(e->not_found);
    cr_assert_str_eq(e->items[0].code, "MANIFEST_NOT_FOUND");
    cr_assert_str_eq(e->text, "/nonexistent/pylon.manifest.json: no such file (set "
                              "PYLON_MANIFEST to the manifest's path)");
    pylon_manifest_errors_free(e);
    cr_assert_null(pylon_manifest_load_file("/nonexistent/x.json", NULL));
    assert_no_leaks();
}

Test(manifest, unreadable_and_invalid_files)
{
    pylon_manifest_errors *e = NULL;
    cr_assert_null(pylon_manifest_load_file("/tmp", &e));
    cr_assert(!e->not_found);
    cr_assert_str_eq(e->items[0].code, "MANIFEST_READ_FAILED");
    cr_assert_str_eq(e->text, "/tmp: not a regular file");
    pylon_manifest_errors_free(e);

    char path[] = "/tmp/pylon_manifest_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"manifest_version\":1,\"name\":\"t\",\"version\":\"1\",\n\"entities\":[{]}", f);
    fclose(f);
    cr_assert_null(pylon_manifest_load_file(path, &e));
    cr_assert(strncmp(e->text, "line 2, column 14: invalid JSON:", 32) == 0, "%s", e->text);
    pylon_manifest_errors_free(e);

    f = fopen(path, "w");
    fputs("{\"manifest_version\":1,\"name\":\"t\",\"version\":\"1\",\"entities\":[]}", f);
    fclose(f);
    pylon_manifest *m = pylon_manifest_load_file(path, &e);
    cr_assert_not_null(m);
    cr_assert_null(e);
    pylon_manifest_free(m);
    unlink(path);
    assert_no_leaks();
}

/* ---- lookups -------------------------------------------------------------------------------- */

Test(manifest, lookups)
{
    pylon_manifest *m = parse_ok(WITH(ENT("Todo", F("title", "string") "," F("done", "bool"))));
    const pylon_entity *e = pylon_manifest_entity(m, "Todo");
    cr_assert_not_null(e);
    cr_assert_null(pylon_manifest_entity(m, "todo"), "entity names are case-sensitive in URLs");
    cr_assert_null(pylon_manifest_entity(m, NULL));
    cr_assert_not_null(pylon_entity_field(e, "done"));
    cr_assert_null(pylon_entity_field(e, "Done"));
    cr_assert_null(pylon_entity_field(e, "id"), "id is a column, not a field");
    cr_assert(pylon_entity_has_column(e, "id"));
    cr_assert(pylon_entity_has_column(e, "title"));
    cr_assert(!pylon_entity_has_column(e, "x"));
    cr_assert_null(pylon_entity_relation(e, "x"));
    char buf[128];
    cr_assert_str_eq(pylon_entity_unknown_column(e, "x", buf, sizeof buf),
                     "Unknown column \"x\" -- valid columns: id, title, done");
    cr_assert_str_eq(pylon_entity_unknown_column(e, "x", buf, 10), "Unknown c");
    pylon_manifest_free(m);

    cr_assert(pylon_manifest_is_identifier("_a1"));
    cr_assert(pylon_manifest_is_identifier("createdAt"));
    cr_assert(!pylon_manifest_is_identifier(""));
    cr_assert(!pylon_manifest_is_identifier("1a"));
    cr_assert(!pylon_manifest_is_identifier("a-b"));
    cr_assert(!pylon_manifest_is_identifier("é"));
    cr_assert(!pylon_manifest_is_identifier(NULL));
    assert_no_leaks();
}
