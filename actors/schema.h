/*
 * schema.h — the manifest applied to SQLite, and the row <-> JSON mapping that follows from
 * field types (spec/backend.md §1.3, §1.4, §1.6).
 *
 * Owns: the DDL of the entity tables and of the internal tables kept in the data database —
 * _pylon_schema_history (one row per applied change set), _pylon_changes (the durable change
 * log the sync layer reads, DECISIONS §2) and _pylon_op_ids (push dedup). It works on the
 * connection it is given (the writer, at startup), opens none and keeps no state. Writing rows
 * and change-log entries belongs to the persistence actor, not here.
 *
 * Application is additive and runs in one transaction: missing tables, columns and indexes are
 * created; nothing is ever dropped or rewritten. What cannot be applied in place is reported as
 * a warning line instead:
 *  - a removed entity or field: the table/column stays (data is never dropped automatically);
 *  - a column added to an existing table never gets NOT NULL: SQLite cannot add a NOT NULL
 *    column to existing rows without a default. The data API enforces required fields;
 *  - a column that is NOT NULL while the manifest now says optional, or whose SQL type differs:
 *    SQLite cannot alter a column in place;
 *  - an index whose definition differs from the manifest's, or an index the manifest no longer
 *    declares: left as it is.
 * A unique field added to an existing table gets a unique index "_pylon_unique_<E>_<f>"
 * (ALTER TABLE ADD COLUMN cannot carry UNIQUE); when existing rows hold duplicates the whole
 * application fails and rolls back, naming the field.
 * Indexes are named "<Entity>_<index>"; search-sortable fields get "<Entity>_sort_<field>".
 * The faceted-search shadow tables (FTS5, facet bitmaps) belong to the search module.
 */
#ifndef PYLON_ACTORS_SCHEMA_H
#define PYLON_ACTORS_SCHEMA_H

#include "actors/manifest.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stddef.h>

/* Applies `m` to `db` in one BEGIN IMMEDIATE … COMMIT (the connection must not be inside a
 * transaction). `baseline` ("dev", "serve", …) is recorded in the history row, which is written
 * only when something changed. On success returns 0 and, when plan_summary is not NULL, sets it
 * to a malloc'd text (caller frees): one line per operation ("create table \"Todo\"", …) then
 * one per warning ("warning: …"); "" when there was nothing to do. On failure returns -1,
 * rolls everything back, writes the reason to `err` and leaves *plan_summary NULL. */
int pylon_schema_apply(sqlite3 *db, const pylon_manifest *m, const char *baseline,
                       char **plan_summary, char *err, size_t errlen);

/* The current row of `st` (any SELECT over the entity's table) as a new JSON object (NULL when
 * out of memory). Columns by name; bool fields as true/false (DECISIONS §2), int fields as
 * integers, float fields as reals, text as strings (invalid UTF-8 replaced by U+FFFD), SQL NULL
 * as null. Columns the manifest no longer declares come out by their SQLite storage class.
 * A column matching a field only by case is named as the manifest spells it. */
json_t *pylon_schema_row_to_json(const pylon_entity *e, sqlite3_stmt *st);

/* The same row as compact JSON text, byte for byte what json_dumps(pylon_schema_row_to_json(),
 * JSON_COMPACT) gives, written straight from the columns: no tree of jansson values to build and
 * free (a get by id is answered about a tenth cheaper). Returns a malloc'd string (*len = its
 * length), or NULL when out of memory or when the row holds something only the tree path
 * handles exactly (a non-finite real, a column name that is not UTF-8): then use that path. */
char *pylon_schema_row_to_text(const pylon_entity *e, sqlite3_stmt *st, size_t *len);

/* The column-dependent half of pylon_schema_row_to_text (which field each column is, its key
 * escaped), worked out once for a prepared statement that is stepped again and again (the get
 * by id). NULL when out of memory or a column name is not UTF-8 (use the tree path). Valid
 * while pylon_schema_row_plan_fits(); the text is byte for byte pylon_schema_row_to_text's. */
typedef struct pylon_row_plan pylon_row_plan;
pylon_row_plan *pylon_schema_row_plan(const pylon_entity *e, sqlite3_stmt *st);
bool pylon_schema_row_plan_fits(const pylon_row_plan *p, sqlite3_stmt *st);
char *pylon_schema_row_to_text_planned(const pylon_row_plan *p, sqlite3_stmt *st, size_t *len);
void pylon_schema_row_plan_free(pylon_row_plan *p);

/* The row an insert of `data` (already bound without error by pylon_schema_bind_value) stores,
 * as compact JSON text: "id", then every field of the manifest in its order (null when
 * absent), typed as a read returns them (int fields as integers, float fields as reals). For a
 * table whose columns are the manifest's fields in that order, the bytes
 * pylon_schema_row_to_text gives for the row read back. NULL when out of memory or a value is
 * an object or array. */
char *pylon_schema_insert_text(const pylon_entity *e, const char *id, const json_t *data,
                               size_t *len);

/* Checks that JSON value `v` fits field `f`:
 *   string, richtext, datetime, id(X) → a JSON string (datetime is stored as given);
 *   int   → an integer; a number with a fraction (1.5) is refused, 2.0 is taken as 2;
 *   float → any number;
 *   bool  → true or false only: 0/1 are refused, so a client bug cannot store 7 as a boolean;
 *   null  → only when the field is optional; objects and arrays are always refused.
 * Returns 0, or -1 with a message naming the field and the expected type in `err`, e.g.
 * `field "done" expects true or false, got 1`. */
int pylon_schema_check_value(const pylon_field *f, const json_t *v, char *err, size_t errlen);

/* pylon_schema_check_value, then binds `v` to parameter `idx` (bool as 0/1). -1 with `err` on a
 * type mismatch or a bind failure. Text is copied (SQLITE_TRANSIENT): `v` may go away. */
int pylon_schema_bind_value(sqlite3_stmt *st, int idx, const pylon_field *f, const json_t *v,
                            char *err, size_t errlen);

/* "TEXT", "INTEGER" or "REAL" (spec §1.3). */
const char *pylon_schema_sql_type(pylon_field_type t);

/* Writes `name` as a double-quoted SQL identifier (inner quotes doubled), NUL-terminated and
 * truncated to fit like snprintf; returns the length the full result needs. */
size_t pylon_schema_quote_ident(char *out, size_t outlen, const char *name);

#endif
