/*
 * matchmaker.h — fixed-size matches by mode, each a new shard (protocol.md §4.6, made HTTP).
 *
 * Owns: the queue of waiting players (one actor; a 1 s timer runs the matching). A signed-in
 * user (or guest) enqueues with a mode; when `size` players of one mode wait, a shard of
 * `kind` is created with id "match_<hex unix secs>_<n>" and their status becomes matched.
 * Entries older than max_wait are dropped. Enqueuing again replaces the earlier entry.
 *
 *   POST /api/matchmaker/enqueue {"mode": "default"}  → {"status":"queued","position":n,…}
 *   GET  /api/matchmaker/status                        → idle | queued | matched + shard_id
 *   POST /api/matchmaker/dequeue                       → {"dequeued": true|false}
 */
#ifndef PYLON_SHARDS_MATCHMAKER_H
#define PYLON_SHARDS_MATCHMAKER_H

#include "actors/auth.h"
#include "http/router.h"
#include "shards/shard.h"

typedef struct pylon_matchmaker pylon_matchmaker;

typedef struct pylon_matchmaker_options {
    unsigned size;       /* players per match (PYLON_MATCH_SIZE, default 2) */
    const char *kind;    /* simulation of the match shards (PYLON_MATCH_KIND, default arena) */
    unsigned max_wait_s; /* default 60 */
} pylon_matchmaker_options;

pylon_matchmaker *pylon_matchmaker_start(pylon_runtime *rt, pylon_shards *shards, pylon_auth *auth,
                                         const pylon_matchmaker_options *o);
void pylon_matchmaker_stop(pylon_matchmaker *m);
bool pylon_matchmaker_routes(pylon_router *r, pylon_matchmaker *m);

#endif
