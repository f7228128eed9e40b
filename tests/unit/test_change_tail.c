/*
 * test_change_tail.c — the newest change-log events in memory (actors/change_tail.h).
 *
 * Proves: a tail answers a cursor at or after its floor with the events after it, in seq
 * order, at most `limit`, shaped as the store's changes_since shapes them (an insert's data
 * parsed from its text, an update's fields and row, a delete's row); a cursor before the floor
 * is refused (the caller asks the store); a full tail drops its oldest events and its floor
 * follows; a clear forgets everything up to the given head; the counters say which pulls were
 * answered where.
 */
#include "actors/change_tail.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void append_insert(pylon_change_tail *t, int64_t seq, const char *id, const char *text)
{
    pylon_change c = {.seq = seq,
                      .entity = "Todo",
                      .row_id = id,
                      .kind = PYLON_CHANGE_INSERT,
                      .data_text = text,
                      .data_len = strlen(text),
                      .ts_ms = 1000 * seq};
    pylon_change_tail_append(t, &c, 1);
}

static json_t *since(pylon_change_tail *t, int64_t from, int64_t limit)
{
    json_t *rows = NULL;
    return pylon_change_tail_since(t, from, limit, &rows) ? rows : NULL;
}

static int64_t seq_at(json_t *rows, size_t i)
{
    return json_integer_value(json_object_get(json_array_get(rows, i), "seq"));
}

Test(change_tail, answers_from_its_floor_on_in_the_stores_shape)
{
    pylon_change_tail *t = pylon_change_tail_new(8, 10);
    cr_assert_not_null(t);
    json_t *rows = since(t, 10, 100);
    cr_assert(rows && json_array_size(rows) == 0, "at the floor: nothing yet");
    json_decref(rows);
    cr_assert_null(since(t, 9, 100), "before the floor: the store answers");

    append_insert(t, 11, "a", "{\"id\":\"a\",\"title\":\"x\"}");
    json_t *row = json_pack("{s:s,s:s,s:b}", "id", "a", "title", "x", "done", 1);
    json_t *fields = json_pack("[s]", "done");
    pylon_change batch[2] = {{.seq = 12,
                              .entity = "Todo",
                              .row_id = "a",
                              .kind = PYLON_CHANGE_UPDATE,
                              .fields = fields,
                              .data = row,
                              .ts_ms = 12000},
                             {.seq = 13,
                              .entity = "Todo",
                              .row_id = "a",
                              .kind = PYLON_CHANGE_DELETE,
                              .data = row,
                              .ts_ms = 13000}};
    pylon_change_tail_append(t, batch, 2);
    json_decref(row); /* the tail holds its own references */
    json_decref(fields);

    rows = since(t, 10, 100);
    cr_assert_eq(json_array_size(rows), 3);
    json_t *want =
        json_loads("["
                   "{\"seq\":11,\"entity\":\"Todo\",\"row_id\":\"a\",\"kind\":\"insert\","
                   "\"fields\":null,\"data\":{\"id\":\"a\",\"title\":\"x\"},\"ts\":11000},"
                   "{\"seq\":12,\"entity\":\"Todo\",\"row_id\":\"a\",\"kind\":\"update\","
                   "\"fields\":[\"done\"],\"data\":{\"id\":\"a\",\"title\":\"x\","
                   "\"done\":true},\"ts\":12000},"
                   "{\"seq\":13,\"entity\":\"Todo\",\"row_id\":\"a\",\"kind\":\"delete\","
                   "\"fields\":null,\"data\":{\"id\":\"a\",\"title\":\"x\","
                   "\"done\":true},\"ts\":13000}]",
                   0, NULL);
    cr_assert(json_equal(rows, want), "%s", json_dumps(rows, JSON_COMPACT));
    json_decref(want);
    json_decref(rows);

    rows = since(t, 12, 100);
    cr_assert(json_array_size(rows) == 1 && seq_at(rows, 0) == 13);
    json_decref(rows);
    rows = since(t, 10, 2);
    cr_assert(json_array_size(rows) == 2 && seq_at(rows, 1) == 12, "at most `limit`");
    json_decref(rows);
    rows = since(t, 13, 100);
    cr_assert_eq(json_array_size(rows), 0, "at the head: nothing");
    json_decref(rows);

    uint64_t mem, log;
    pylon_change_tail_counts(t, &mem, &log);
    cr_assert_eq(mem, 5);
    cr_assert_eq(log, 1);
    pylon_change_tail_free(t);
}

Test(change_tail, a_full_tail_drops_its_oldest_and_the_floor_follows)
{
    pylon_change_tail *t = pylon_change_tail_new(4, 0);
    char id[8];
    for (int64_t s = 1; s <= 10; s++) { /* wraps around the ring twice */
        snprintf(id, sizeof id, "r%lld", (long long)s);
        append_insert(t, s, id, "{}");
    }
    cr_assert_null(since(t, 5, 100), "events 6 and older were dropped: 5 is before the floor");
    json_t *rows = since(t, 6, 100);
    cr_assert_eq(json_array_size(rows), 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(seq_at(rows, i), 7 + (int64_t)i);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(rows, 3), "row_id")), "r10");
    json_decref(rows);
    rows = since(t, 8, 1);
    cr_assert(json_array_size(rows) == 1 && seq_at(rows, 0) == 9, "search within the wrap");
    json_decref(rows);

    pylon_change_tail_clear(t, 25); /* the log was emptied at head 25 */
    cr_assert_null(since(t, 10, 100));
    rows = since(t, 25, 100);
    cr_assert(rows && json_array_size(rows) == 0);
    json_decref(rows);
    append_insert(t, 26, "n", "{\"id\":\"n\"}");
    rows = since(t, 25, 100);
    cr_assert(json_array_size(rows) == 1 && seq_at(rows, 0) == 26);
    json_decref(rows);
    pylon_change_tail_free(t);
}
