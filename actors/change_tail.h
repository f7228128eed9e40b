/*
 * change_tail.h — the newest change-log events in memory, for pulls.
 *
 * Owns: a bounded ring of the last committed change events, written by the persistence actor
 * after each commit (the only writer) and read by any thread. A pull whose cursor lies inside
 * what the ring covers is answered from it, without a query or a page read; an older cursor
 * falls back to the durable log (store.h changes_since). Both give the same rows.
 *
 * Coverage: the ring holds every event committed after its `floor` seq, until the ring is full
 * and drops its oldest (the floor then moves up). At start the floor is the head of the
 * durable log: what was committed before is only in the database. The capacity is kept below
 * the change log's retention, so no event in the ring has been compacted.
 */
#ifndef PYLON_ACTORS_CHANGE_TAIL_H
#define PYLON_ACTORS_CHANGE_TAIL_H

#include "actors/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_change_tail pylon_change_tail;

/* NULL on exhaustion. `head`: the durable log's head now (the floor). */
pylon_change_tail *pylon_change_tail_new(size_t capacity, int64_t head);
void pylon_change_tail_free(pylon_change_tail *t);

/* Writer: the changes of one commit, in seq order (copied). On exhaustion the tail forgets
 * everything up to the last of them (the floor moves past them) rather than hold a gap. */
void pylon_change_tail_append(pylon_change_tail *t, const pylon_change *changes, size_t n);
/* Writer: the log was emptied (the dev test reset); everything up to `head` is forgotten. */
void pylon_change_tail_clear(pylon_change_tail *t, int64_t head);

/* Any thread. When every event after `since` that was committed so far is in the tail: true,
 * with *rows = the first `limit` of them as store.h changes_since shapes them ({seq, entity,
 * row_id, kind, fields, data, ts}). False when `since` is older than the floor (ask the store)
 * or on exhaustion. */
bool pylon_change_tail_since(pylon_change_tail *t, int64_t since, int64_t limit, json_t **rows);
/* Pulls answered from the tail, and those sent to the store (for /metrics). */
void pylon_change_tail_counts(const pylon_change_tail *t, uint64_t *memory, uint64_t *log);

#endif
