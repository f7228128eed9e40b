/*
 * manifest.h — the app manifest (PYLON_MANIFEST, spec/backend.md §1): load, validate, look up.
 *
 * Owns: the parsed manifest. A pylon_manifest owns every string and array reachable from it
 * (one arena, freed by pylon_manifest_free) and the jansson document it was read from. It is
 * immutable once loaded, so any thread may read it without a lock. It never touches SQLite:
 * schema.h turns it into tables.
 *
 * Validation returns every error found (up to PYLON_MANIFEST_MAX_ERRORS), each with the JSON
 * path of the offending value, the original's diagnostic code and a cause, e.g.
 *   entities[2].fields[1].type: unknown type "strng" (expected string, int, float, bool,
 *   datetime, richtext or id(Entity))
 * Rules decided here, beyond §1 (the original accepted these and failed later, in SQL):
 *  - entity, field and index names are SQL-safe identifiers, [A-Za-z_][A-Za-z0-9_]*: they become
 *    table, column and index names and appear in URLs;
 *  - a field may not be called "id" (any case): every table has the system column id;
 *  - names that differ only in case clash (SQLite table/column names ignore case); generated
 *    index names (<Entity>_<index>, <Entity>_sort_<field>) may not clash with each other or
 *    with a table;
 *  - entity names starting with _pylon, sqlite_ or _fts_, and _facet_bitmap, are reserved for
 *    internal tables;
 *  - entity fields need all four keys name/type/optional/unique (what the SDK writes, and a
 *    misspelt "optinal" is then caught); query/action input fields need name and type only;
 *  - `routes` may be absent (the backend never serves routes), as may queries/actions/policies;
 *  - an empty entity list is valid (the original refused it; `pylon dev` on a new project
 *    starts with none);
 *  - a key repeated inside one JSON object is an error; unknown keys are ignored, so a newer
 *    SDK's additions do not stop the server;
 *  - relation.field names a field of this entity when many is false (it holds the target's
 *    id) and a field of the target entity when many is true (the target rows point back).
 */
#ifndef PYLON_ACTORS_MANIFEST_H
#define PYLON_ACTORS_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PYLON_MANIFEST_VERSION 1
/* Default session lifetime (auth.session.expires_in): 30 days. */
#define PYLON_MANIFEST_SESSION_EXPIRES_IN 2592000
/* More errors than this are summarised in one last line: a broken generator can produce
 * thousands, and nobody reads past the first screen. */
#define PYLON_MANIFEST_MAX_ERRORS 100
/* A manifest file larger than this is refused before parsing. */
#define PYLON_MANIFEST_MAX_BYTES (16u << 20)

typedef enum pylon_field_type {
    PYLON_FIELD_STRING,
    PYLON_FIELD_INT,
    PYLON_FIELD_FLOAT,
    PYLON_FIELD_BOOL,
    PYLON_FIELD_DATETIME,
    PYLON_FIELD_RICHTEXT,
    PYLON_FIELD_ID, /* id(Target): TEXT holding another entity's id; no FK constraint */
} pylon_field_type;

/* Field "crdt" key; only meaningful for CRDT entities, which are out of scope (DECISIONS §3),
 * but parsed so a manifest that uses it still loads. */
typedef enum pylon_crdt_kind {
    PYLON_CRDT_UNSET, /* key absent: last-writer-wins */
    PYLON_CRDT_LWW,
    PYLON_CRDT_TEXT,
    PYLON_CRDT_COUNTER,
    PYLON_CRDT_LIST,
    PYLON_CRDT_MOVABLE_LIST,
    PYLON_CRDT_TREE,
} pylon_crdt_kind;

typedef struct pylon_field {
    const char *name;
    pylon_field_type type;
    const char *type_text; /* as written: "string", "id(User)" (for hints) */
    const char *target;    /* PYLON_FIELD_ID: the target entity; NULL otherwise */
    bool optional, unique;
    pylon_crdt_kind crdt;
} pylon_field;

typedef struct pylon_index {
    const char *name; /* manifest name; the SQL index is "<Entity>_<name>" */
    const char *const *fields;
    size_t nfields;
    bool unique;
} pylon_index;

typedef struct pylon_relation {
    const char *name, *target, *field;
    bool many;
} pylon_relation;

typedef struct pylon_search {
    const char *const *text;
    size_t ntext;
    const char *const *facets;
    size_t nfacets;
    const char *const *sortable;
    size_t nsortable;
    const char *language; /* NULL when absent */
} pylon_search;

typedef struct pylon_entity {
    const char *name;
    const pylon_field *fields;
    size_t nfields;
    const pylon_index *indexes;
    size_t nindexes;
    const pylon_relation *relations;
    size_t nrelations;
    const pylon_search *search; /* NULL: no faceted search */
    bool crdt;                  /* default true */
    const char *columns;        /* "id, a, b": every valid column, for error messages */
} pylon_entity;

/* Queries and actions share one shape: a name and input fields. */
typedef struct pylon_manifest_callable {
    const char *name;
    const pylon_field *input;
    size_t ninput;
} pylon_manifest_callable;

typedef struct pylon_manifest_policy {
    const char *name;
    const char *entity, *action; /* NULL when absent */
    /* NULL when absent; may be "" (treated as absent by the evaluator, spec §4.2) */
    const char *allow, *allow_read, *allow_insert, *allow_update, *allow_delete, *allow_write;
} pylon_manifest_policy;

typedef struct pylon_manifest_route {
    const char *path, *mode;
    const char *query, *auth; /* NULL when absent */
} pylon_manifest_route;

typedef struct pylon_manifest_auth {
    const char *user_entity; /* default "User" (may not exist when auth is not configured) */
    const char *const *expose;
    size_t nexpose;
    const char *const *hide;
    size_t nhide;
    int64_t session_expires_in; /* seconds, default PYLON_MANIFEST_SESSION_EXPIRES_IN */
    bool cookie_cache_enabled;  /* parsed, unused (spec §1.5) */
    int64_t cookie_cache_max_age;
    const char *const *trusted_origins;
    size_t ntrusted_origins;
} pylon_manifest_auth;

typedef struct pylon_manifest {
    int manifest_version;
    const char *name, *version;
    const pylon_entity *entities;
    size_t nentities;
    const pylon_manifest_callable *queries;
    size_t nqueries;
    const pylon_manifest_callable *actions;
    size_t nactions;
    const pylon_manifest_policy *policies;
    size_t npolicies;
    const pylon_manifest_route *routes;
    size_t nroutes;
    pylon_manifest_auth auth;
    /* The document as loaded, with absent queries/actions/policies/routes filled in as [].
     * Read-only: deep-copy before changing it (GET /api/manifest blanks policy rules on a copy).
     * `policies_json` is its "policies" array, for the policy module. Both live as long as the
     * manifest. */
    json_t *json;
    json_t *policies_json;
    struct pylon_manifest_arena *arena; /* private */
} pylon_manifest;

/* One validation error: `code` is the original's diagnostic code (MANIFEST_PARSE_ERROR,
 * FIELD_TYPE_UNKNOWN, ...; plus MANIFEST_NOT_FOUND, MANIFEST_READ_FAILED, MANIFEST_TOO_LARGE and
 * OUT_OF_MEMORY for the file), `path` the JSON path and `message` "<path>: <cause>". Errors about
 * the whole document have path "" and a message that carries its own context:
 * "line 3, column 15: invalid JSON: ...", "<file>: no such file ...". */
typedef struct pylon_manifest_error {
    const char *code;
    char *path;
    char *message;
} pylon_manifest_error;

typedef struct pylon_manifest_errors {
    pylon_manifest_error *items;
    size_t count;   /* stored items (at most PYLON_MANIFEST_MAX_ERRORS) */
    size_t total;   /* errors found, including those not stored */
    bool not_found; /* the file does not exist (see pylon_manifest_load_file) */
    char *text;     /* every message, one per line, for logs; NULL only when out of memory */
} pylon_manifest_errors;

/* Parses and validates `len` bytes of JSON. Returns the manifest, or NULL with `*errs` set
 * (free with pylon_manifest_errors_free; `*errs` itself is NULL only when out of memory).
 * `errs` may be NULL when the caller does not want the details. */
pylon_manifest *pylon_manifest_parse(const char *json, size_t len, pylon_manifest_errors **errs);

/* Reads `path` and parses it as above. A missing file fails with code MANIFEST_NOT_FOUND and
 * errs->not_found set: `pylon dev` then carries on with pylon_manifest_new_empty() (and says
 * so), `pylon serve` stops. */
pylon_manifest *pylon_manifest_load_file(const char *path, pylon_manifest_errors **errs);

/* A valid manifest with no entities (app name "pylon-app", version "0.0.0"). NULL: no memory. */
pylon_manifest *pylon_manifest_new_empty(void);

void pylon_manifest_free(pylon_manifest *m);
void pylon_manifest_errors_free(pylon_manifest_errors *errs);
/* All messages, one per line; "out of memory" when errs is NULL. */
const char *pylon_manifest_errors_text(const pylon_manifest_errors *errs);

/* ---- lookups (linear scans: manifests are small and these run per request) --------------- */

/* Exact, case-sensitive name match (URLs carry manifest names). NULL when absent. */
const pylon_entity *pylon_manifest_entity(const pylon_manifest *m, const char *name);
const pylon_manifest_callable *pylon_manifest_action(const pylon_manifest *m, const char *name);
const pylon_manifest_callable *pylon_manifest_query(const pylon_manifest *m, const char *name);
const pylon_field *pylon_entity_field(const pylon_entity *e, const char *name);
const pylon_relation *pylon_entity_relation(const pylon_entity *e, const char *name);
/* True for "id" and every field name. */
bool pylon_entity_has_column(const pylon_entity *e, const char *name);
/* Writes `Unknown column "x" -- valid columns: id, a, b` (the INVALID_COLUMN message), truncated
 * to fit; returns `buf`. */
const char *pylon_entity_unknown_column(const pylon_entity *e, const char *name, char *buf,
                                        size_t len);

/* "string", "int", "float", "bool", "datetime", "richtext", "id". */
const char *pylon_field_type_name(pylon_field_type t);
/* [A-Za-z_][A-Za-z0-9_]* and non-empty. */
bool pylon_manifest_is_identifier(const char *s);

#endif
