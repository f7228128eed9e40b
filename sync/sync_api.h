/*
 * sync_api.h — GET /api/sync/pull and POST /api/sync/push (protocol.md §1.3-1.5, with the
 * improvements of DECISIONS.md §2).
 *
 * Pull reads the durable change log (a table written in the same transaction as each row
 * change), so a cursor stays valid across restarts: 410 RESYNC_REQUIRED only when it is older
 * than the retention window or ahead of the head, never for since=0. Events the caller may not
 * read are left out of the page, and the cursor still moves past them.
 *
 * Push takes any identity and runs the entity policies, applies the operations in order and
 * stops at the first failure (so the clients' positional mapping — first `applied` ops
 * applied, then errors[0] for the next — stays exact; the rest are re-sent). Op ids are
 * remembered durably with the change; a repeated op counts as applied. Pushed changes are
 * broadcast live like any other write.
 */
#ifndef PYLON_SYNC_SYNC_API_H
#define PYLON_SYNC_SYNC_API_H

#include "actors/data_api.h"

bool pylon_sync_routes(pylon_router *r, pylon_data_api *api);

#endif
