/*
 * data_api.h — the entity API (spec/backend.md §3) over the storage interface.
 *
 * Owns: the HTTP side of data: parsing, the entity and policy checks that need no database,
 * and the shape of every answer. Reads run on the read pool, writes on the persistence actor;
 * the policy checks that need the stored row (update, delete) run inside the write
 * transaction, so what is checked is what is changed.
 *
 * Where we differ from the original (DECISIONS.md): unknown entity is 404; lists, cursors and
 * queries are filtered row by row by the read policy (a policy reading data.* no longer makes
 * the whole list 403); client-supplied ids are kept unless they start with "_pending_";
 * booleans come back as true/false; a unique violation is 409; a bad filter operator is 400.
 */
#ifndef PYLON_ACTORS_DATA_API_H
#define PYLON_ACTORS_DATA_API_H

#include "actors/auth.h"
#include "actors/manifest.h"
#include "actors/persistence.h"
#include "actors/policy.h"
#include "actors/readers.h"
#include "http/router.h"

typedef struct pylon_data_api {
    const pylon_manifest *m;
    const pylon_policy_set *policies;
    pylon_persistence *writer;
    pylon_readers *readers;
    pylon_auth *auth;
    bool reset_allowed; /* dev mode with PYLON_DB_PATH=:memory: (DECISIONS.md §1) */
} pylon_data_api;

bool pylon_data_routes(pylon_router *r, pylon_data_api *api);

/* The update/delete policy check, run inside the write transaction with the stored row:
 * update sees data = the row as it will be (stored row + patch) and existing = the stored
 * row; delete sees the stored row as both. The admin passes. False with 403 in *err. */
bool pylon_data_authorize_write(const pylon_policy_set *policies, const pylon_identity *who,
                                const pylon_write_op *op, const json_t *existing,
                                pylon_store_error *err);

#endif
