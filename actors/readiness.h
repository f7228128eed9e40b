/*
 * readiness.h — the database check behind /readyz, and the flush at shutdown.
 *
 * Owns: one SQLite connection pair on PYLON_DB_PATH (a writer and a reader, WAL mode), used
 * only to prove the database answers. It runs as an actor because SQLite calls block and must
 * never run on an I/O loop. When the persistence actor lands it takes this role over.
 */
#ifndef PYLON_ACTORS_READINESS_H
#define PYLON_ACTORS_READINESS_H

#include "engine/actor.h"
#include "engine/runtime.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct pylon_readiness pylon_readiness;

/* Opens (creating if needed) the database in WAL mode. NULL with a reason in `err`. */
pylon_readiness *pylon_readiness_start(pylon_runtime *rt, const char *db_path, char *err,
                                       size_t errlen);
/* The actor that answers /readyz route messages (pylon_http_msg). */
pylon_actor *pylon_readiness_actor(pylon_readiness *r);
/* Marks the server as draining: /readyz answers 503 from now on. */
void pylon_readiness_set_draining(pylon_readiness *r);
/* Checkpoints the WAL (TRUNCATE) and closes the database; blocks until done. */
void pylon_readiness_stop(pylon_readiness *r);

#endif
