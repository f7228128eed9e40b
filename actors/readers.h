/*
 * readers.h — the read pool: N actors, each owning one read-only connection.
 *
 * Owns: the reader connections (PYLON_READ_POOL, default 4). A read request carries its own
 * work as a function run on whichever reader takes it, with that reader's connection; reads
 * never wait behind writes (WAL readers see the last committed state). Requests go to the
 * reader with the fewest queued, so one slow query does not hold up the others. A reader
 * reuses one read snapshot for the requests of one run while the writer commits nothing, and
 * never holds it while idle.
 */
#ifndef PYLON_ACTORS_READERS_H
#define PYLON_ACTORS_READERS_H

#include "actors/store.h"
#include "engine/actor.h"
#include "http/http.h"
#include "engine/runtime.h"

#include <stdatomic.h>
#include <stdint.h>

typedef struct pylon_readers pylon_readers;
typedef struct pylon_read_req pylon_read_req;

struct pylon_read_req {
    pylon_msg msg;
    /* Runs on a reader; owns the request (frees it when done). */
    void (*run)(pylon_read_req *req, const pylon_store_backend *b, pylon_store_conn *c);
    /* Runs instead when the pool has stopped; owns the request. NULL: the exchange below
     * is answered 503 SHUTTING_DOWN and the request is freed with free(). */
    void (*cancelled)(pylon_read_req *req);
    pylon_http_exchange *ex;
};

/* `writer_commits` (pylon_persistence_commits): lets a reader keep one snapshot for the
 * requests of a run as long as the writer commits nothing meanwhile; NULL: one per read. */
pylon_readers *pylon_readers_start(pylon_runtime *rt, const pylon_store_backend *b,
                                   const char *target, const pylon_manifest *m, unsigned n,
                                   const _Atomic uint64_t *writer_commits, pylon_store_error *err);
void pylon_readers_submit(pylon_readers *r, pylon_read_req *req);
void pylon_readers_stop(pylon_readers *r);

#endif
