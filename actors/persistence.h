/*
 * persistence.h — the persistence actor: the only writer to the database.
 *
 * Owns: the writer connection and every write. Requests queue in its mailbox; each run of the
 * actor takes what is queued (up to its batch), executes it in one BEGIN IMMEDIATE … COMMIT
 * (group commit: one fsync-free WAL commit for many requests), and only after the commit calls
 * each request's `done`. Each row change writes its change-log row in the same transaction.
 * A request is either atomic (transact: all its operations or none) or not (each operation in
 * its own savepoint, so one failure does not undo the others).
 *
 * The queue is bounded by the callers: pylon_persistence_busy() says when it holds more than
 * the configured depth, and the data API answers 503 OVERLOADED instead of piling up.
 */
#ifndef PYLON_ACTORS_PERSISTENCE_H
#define PYLON_ACTORS_PERSISTENCE_H

#include "actors/store.h"
#include "engine/actor.h"
#include "engine/runtime.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct pylon_persistence pylon_persistence;
typedef struct pylon_write_req pylon_write_req;

typedef struct pylon_write_op {
    pylon_change_kind kind;
    const pylon_entity *entity;
    char *id;     /* owned; insert: decided by the caller (client id or a new one) */
    json_t *data; /* owned; insert: the row; update: the patch; delete: NULL */
    char *op_id;  /* owned; sync push op id (dedup), or NULL */
    /* results, filled by the writer */
    bool ok;
    json_t *row;    /* the row after the change (update) or deleted (delete); owned */
    char *row_text; /* insert: the stored row as compact JSON text; owned */
    size_t row_len;
    pylon_store_error err;
    int64_t seq;  /* change-log seq */
    bool deduped; /* its op_id was already applied: nothing done, counts as applied */
} pylon_write_op;

struct pylon_write_req {
    pylon_msg msg;
    pylon_write_op *ops; /* owned */
    size_t nops;
    bool atomic;
    bool stop_on_error; /* non-atomic: ops after the first failure are not run (sync push) */
    bool reset;         /* no ops: empty every entity table and the change log (dev test reset) */
    /* Called inside the transaction before an update or delete, with the stored row: the
     * policy check of the data API. NULL: allowed. False with *err set: the op fails. */
    bool (*authorize)(pylon_write_req *req, pylon_write_op *op, const json_t *existing,
                      pylon_store_error *err);
    /* Called once, after the commit (or the failure), in the writer's thread. It owns the
     * request from then on and frees it with pylon_write_req_free. */
    void (*done)(pylon_write_req *req);
    void *ctx;
    bool committed; /* the transaction holding this request committed */
};

/* Change listener (the sync layer): called after each commit with the changes it made. */
typedef void (*pylon_change_listener)(void *ctx, const pylon_change *changes, size_t n);

typedef struct pylon_persistence_options {
    const pylon_store_backend *backend;
    const char *target; /* SQLite path */
    const pylon_manifest *manifest;
    unsigned queue_max; /* pylon_persistence_busy() beyond this many queued requests */
    int64_t retain;     /* change-log events kept (PYLON_CHANGELOG_RETAIN); 0 = 100000 */
    pylon_change_listener on_changes;
    void *listener_ctx;
} pylon_persistence_options;

/* Opens the writer (applying the schema) and spawns the actor. NULL with err on failure. */
pylon_persistence *pylon_persistence_start(pylon_runtime *rt, const pylon_persistence_options *o,
                                           pylon_store_error *err);
/* Any thread: queues the request; its done() runs after the commit. */
void pylon_persistence_submit(pylon_persistence *p, pylon_write_req *req);
bool pylon_persistence_busy(const pylon_persistence *p);
unsigned pylon_persistence_queue_depth(const pylon_persistence *p);
/* The newest change-log events in memory (change_tail.h), or NULL; lives as long as `p`. */
struct pylon_change_tail *pylon_persistence_tail(const pylon_persistence *p);
/* The last change-log seq committed (for /metrics and the sync layer). */
int64_t pylon_persistence_head_seq(const pylon_persistence *p);
/* Transactions committed so far, counted the moment each COMMIT returns (before anyone is
 * answered or told of the change): a reader whose snapshot began after it read value N sees
 * every commit counted up to N (readers.h). */
const _Atomic uint64_t *pylon_persistence_commits(const pylon_persistence *p);
/* Mean requests per transaction since start (for /metrics). */
double pylon_persistence_mean_batch(const pylon_persistence *p);
/* Commits what is queued, checkpoints the WAL (TRUNCATE), closes the connection and stops the
 * actor. Blocks until done. */
void pylon_persistence_stop(pylon_persistence *p);

/* Any thread: shard checkpoints (shards/shard.h), one row per shard id. The row is copied;
 * what is queued for the same id before the next commit is superseded by the newer one. A
 * failure is logged, never answered: the next checkpoint tries again. */
void pylon_persistence_shard_save(pylon_persistence *p, const pylon_shard_row *row);
void pylon_persistence_shard_drop(pylon_persistence *p, const char *id);

pylon_write_req *pylon_write_req_new(size_t nops);
void pylon_write_req_free(pylon_write_req *req);

#endif
