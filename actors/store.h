/*
 * store.h — the storage interface every data handler goes through.
 *
 * Owns: the contract between the data API and a database engine. Handlers never see SQLite:
 * they call a pylon_store_backend through a connection, so a Postgres backend can be added
 * without touching them. Connections are single-threaded: the persistence actor owns the one
 * writer, each read-pool actor owns one reader.
 *
 * Rows travel as JSON objects (jansson) shaped by the manifest: every column by name, booleans
 * as true/false, the system column "id" first.
 */
#ifndef PYLON_ACTORS_STORE_H
#define PYLON_ACTORS_STORE_H

#include "actors/manifest.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct pylon_store_conn pylon_store_conn;

/* Why an operation failed, as the HTTP answer will say it. */
typedef struct pylon_store_error {
    int status;       /* 400, 404, 409, 500, 503 */
    const char *code; /* INVALID_COLUMN, MISSING_FIELD, UNIQUE_VIOLATION, NOT_FOUND, ... */
    char message[400];
} pylon_store_error;

/* What a list or query asks for. */
typedef struct pylon_store_query {
    const json_t *filter; /* backend.md §3.3 object, or NULL: field equality and operators,
                             $order, $limit, $offset, $search */
    const char *after;    /* cursor: only ids greater than this; NULL for none */
    int64_t limit;        /* -1: none (a filter's $limit applies) */
    int64_t offset;
} pylon_store_query;

typedef enum { PYLON_CHANGE_INSERT, PYLON_CHANGE_UPDATE, PYLON_CHANGE_DELETE } pylon_change_kind;
#define PYLON_CHANGE_KINDS 3

/* "insert", "update" or "delete": the kind's name in change events, the change log and the
 * admin batch operations. */
static inline const char *pylon_change_kind_name(pylon_change_kind k)
{
    static const char *const names[PYLON_CHANGE_KINDS] = {"insert", "update", "delete"};
    return names[k];
}

/* One change-log entry, written in the same transaction as the row change. */
typedef struct pylon_change {
    int64_t seq;
    const char *entity;
    const char *row_id;
    pylon_change_kind kind;
    json_t *fields;        /* update: array of changed field names; else NULL */
    json_t *data;          /* the row after the change (delete: the row deleted); or NULL and: */
    const char *data_text; /* the same row as compact JSON text (inserts) */
    size_t data_len;
    int64_t ts_ms;
    const char *op_id; /* sync push op id, or NULL */
} pylon_change;

/* One shard checkpoint (shards/shard.h): the row of _pylon_shards. */
typedef struct pylon_shard_row {
    const char *id, *kind;
    const char *config;  /* the simulation's config (JSON object) */
    const char *options; /* the shard's own settings (tick_rate_hz, …) as JSON */
    uint64_t tick;
    const void *state; /* the simulation's save() bytes */
    size_t len;
    int64_t saved_ms; /* wall clock */
} pylon_shard_row;

typedef struct pylon_store_backend {
    const char *name;
    /* `writer` connections apply the schema and may write; readers are read-only. The target
     * ":memory:" is one in-memory database shared by every connection of the process. */
    pylon_store_conn *(*open)(const char *target, bool writer, const pylon_manifest *m,
                              pylon_store_error *err);
    void (*close)(pylon_store_conn *c);

    /* Transactions (writer). `immediate` takes the write lock at once (group commit). */
    bool (*begin)(pylon_store_conn *c, pylon_store_error *err);
    bool (*commit)(pylon_store_conn *c, pylon_store_error *err);
    void (*rollback)(pylon_store_conn *c);
    bool (*savepoint)(pylon_store_conn *c, pylon_store_error *err);
    void (*savepoint_release)(pylon_store_conn *c);
    void (*savepoint_rollback)(pylon_store_conn *c);

    /* Readers: one snapshot for several reads (read_begin true: reads see the database as of
     * the first of them until read_end). Optional; false when the connection cannot. */
    bool (*read_begin)(pylon_store_conn *c);
    void (*read_end)(pylon_store_conn *c);

    /* Reads. *row / *rows are new references on success. A missing row is not an error:
     * *row is NULL. */
    bool (*get)(pylon_store_conn *c, const pylon_entity *e, const char *id, json_t **row,
                pylon_store_error *err);
    /* get, with the row as compact JSON text (what json_dumps makes of get's row): *text is
     * malloc'd, NULL when the row is missing. Optional (NULL: callers use get). */
    bool (*get_text)(pylon_store_conn *c, const pylon_entity *e, const char *id, char **text,
                     size_t *len, pylon_store_error *err);
    bool (*find)(pylon_store_conn *c, const pylon_entity *e, const pylon_store_query *q,
                 json_t **rows, pylon_store_error *err);
    bool (*count)(pylon_store_conn *c, const pylon_entity *e, int64_t *n, pylon_store_error *err);
    /* backend.md §3.5: {"count","sum","avg","min","max","countDistinct","groupBy","where"};
     * *rows = array of result rows. */
    bool (*aggregate)(pylon_store_conn *c, const pylon_entity *e, const json_t *spec, json_t **rows,
                      pylon_store_error *err);

    /* Writes (writer). insert: `id` already decided by the caller; *row_text = the stored row
     * as compact JSON text (malloc'd; pylon_schema_insert_text).
     * update: *row = the row after the change, NULL (no error) when the id does not exist.
     * remove: *found says whether a row was deleted. */
    bool (*insert)(pylon_store_conn *c, const pylon_entity *e, const char *id, const json_t *data,
                   char **row_text, size_t *row_len, pylon_store_error *err);
    bool (*update)(pylon_store_conn *c, const pylon_entity *e, const char *id, const json_t *patch,
                   json_t **row, pylon_store_error *err);
    bool (*remove)(pylon_store_conn *c, const pylon_entity *e, const char *id, bool *found,
                   pylon_store_error *err);

    /* The change log (writer): appends and sets ch->seq; a change with an op_id also records
     * the op id (sync push dedup), in the same transaction. */
    bool (*log_change)(pylon_store_conn *c, pylon_change *ch, pylon_store_error *err);
    /* Whether a sync push op id was already applied. */
    bool (*op_seen)(pylon_store_conn *c, const char *op_id, bool *seen, pylon_store_error *err);
    /* Retention: compacts the change log up to `upto` (each row's latest event up to there
     * stays, as a full insert or a delete: every cursor can still be continued) and drops op
     * ids with seq <= upto. done_upto: the `upto` of the last pass that committed (0: none
     * known; a full pass). */
    bool (*trim_changes)(pylon_store_conn *c, int64_t done_upto, int64_t upto,
                         pylon_store_error *err);
    /* Change-log rows with seq > since, ascending, at most `limit`. Each row: {seq, entity,
     * row_id, kind, fields, data, ts}. */
    bool (*changes_since)(pylon_store_conn *c, int64_t since, int64_t limit, json_t **rows,
                          pylon_store_error *err);
    /* Highest seq written so far (0 when none). */
    bool (*head_seq)(pylon_store_conn *c, int64_t *seq, pylon_store_error *err);

    /* Empties every entity table and the change log (the dev-only test reset). */
    bool (*reset)(pylon_store_conn *c, pylon_store_error *err);

    /* Shard checkpoints, one row per shard id (writer: put replaces, drop deletes). shard_rows
     * calls `each` for every stored row, in id order; the row is valid during the call. */
    bool (*shard_put)(pylon_store_conn *c, const pylon_shard_row *row, pylon_store_error *err);
    bool (*shard_drop)(pylon_store_conn *c, const char *id, pylon_store_error *err);
    bool (*shard_rows)(pylon_store_conn *c, void (*each)(void *ctx, const pylon_shard_row *row),
                       void *ctx, pylon_store_error *err);

    /* Liveness (SELECT 1). Checkpoint (writer): `idle` is the writer's pause after writes
     * (copy what no reader needs, never wait); otherwise the shutdown flush (copy everything
     * and empty the log). */
    bool (*ping)(pylon_store_conn *c, pylon_store_error *err);
    void (*checkpoint)(pylon_store_conn *c, bool idle);
} pylon_store_backend;

extern const pylon_store_backend pylon_store_sqlite;

/* Process-wide SQLite settings; call once before any connection opens (later it does
 * nothing). Turns off SQLite's allocation statistics, whose global mutex every sqlite3_malloc
 * took: the writer and the readers contended on it for nothing (pylon never reads them). */
void pylon_store_sqlite_global_init(void);

/* How much of each database file connections opened from now on read through mmap
 * (PRAGMA mmap_size; 0, the default here, reads with pread into SQLite's page cache).
 * With a database larger than a reader's page cache, mmap saves a system call and a copy
 * per page a get touches; pages count in the process's RSS while mapped, as file cache the
 * kernel can reclaim. */
void pylon_store_sqlite_set_mmap(int64_t bytes);

/* Sets *err and returns false. */
bool pylon_store_fail(pylon_store_error *err, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
