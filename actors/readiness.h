/*
 * readiness.h — /readyz: does the database answer, now?
 *
 * Owns: the readiness probes. Each GET /readyz sends one empty transaction through the
 * persistence actor (the writer) and a SELECT 1 through the read pool, and answers 200
 * {"status":"ready"} when both come back within 1 s, else 503 {"status":"unavailable",
 * "reason":…}. A probe goes through the same queues as real work, so a stuck writer makes the
 * instance unready (DECISIONS.md §1). While draining it answers 503 at once.
 */
#ifndef PYLON_ACTORS_READINESS_H
#define PYLON_ACTORS_READINESS_H

#include "actors/persistence.h"
#include "actors/readers.h"
#include "engine/actor.h"
#include "engine/runtime.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pylon_readiness pylon_readiness;

pylon_readiness *pylon_readiness_start(pylon_runtime *rt, pylon_persistence *writer,
                                       pylon_readers *readers);
/* The actor that answers /readyz route messages (pylon_http_msg). */
pylon_actor *pylon_readiness_actor(pylon_readiness *r);
/* From now on /readyz answers 503 (shutdown step 1). */
void pylon_readiness_set_draining(pylon_readiness *r);
/* Before the writer and readers stop: pending probes are answered 503. */
void pylon_readiness_stop(pylon_readiness *r);

#endif
