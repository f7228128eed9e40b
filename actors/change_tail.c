/* change_tail.c — the newest change-log events in memory (see change_tail.h). */
#include "actors/change_tail.h"

#include "actors/json_load.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct tail_event {
    int64_t seq, ts_ms;
    pylon_change_kind kind;
    char *strings; /* one block: entity, row_id, then the insert's data text */
    size_t strings_len;
    const char *entity, *row_id, *text;
    size_t text_len;
    json_t *fields; /* shared, immutable after the commit (the hub holds them too) */
    json_t *data;   /* updates and deletes: the row, shared likewise; inserts: NULL, see text */
} tail_event;

struct pylon_change_tail {
    pthread_rwlock_t lock;
    tail_event *ring;
    size_t cap, first, n; /* the events are ring[(first + k) % cap], k < n, seqs ascending */
    int64_t floor;        /* every event committed after this seq is here (until dropped) */
    _Atomic uint64_t memory, log; /* pulls answered here / sent to the store */
};

pylon_change_tail *pylon_change_tail_new(size_t capacity, int64_t head)
{
    pylon_change_tail *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ring = calloc(capacity ? capacity : 1, sizeof *t->ring);
    if (!t->ring) {
        free(t);
        return NULL;
    }
    t->cap = capacity ? capacity : 1;
    t->floor = head;
    pthread_rwlock_init(&t->lock, NULL);
    return t;
}

static void event_clear(tail_event *e)
{
    free(e->strings);
    json_decref(e->fields);
    json_decref(e->data);
    memset(e, 0, sizeof *e);
}

/* With the write lock: forgets the oldest event; the floor moves up to it. */
static void drop_oldest(pylon_change_tail *t)
{
    tail_event *e = &t->ring[t->first];
    t->floor = e->seq;
    event_clear(e);
    t->first = (t->first + 1) % t->cap;
    t->n--;
}

void pylon_change_tail_free(pylon_change_tail *t)
{
    if (!t) return;
    while (t->n)
        drop_oldest(t);
    free(t->ring);
    pthread_rwlock_destroy(&t->lock);
    free(t);
}

static bool event_fill(tail_event *e, const pylon_change *c)
{
    size_t el = strlen(c->entity) + 1, rl = strlen(c->row_id) + 1;
    size_t tl = c->data ? 0 : c->data_text ? c->data_len : 0;
    e->strings = malloc(el + rl + tl + 1);
    if (!e->strings) return false;
    memcpy(e->strings, c->entity, el);
    memcpy(e->strings + el, c->row_id, rl);
    if (tl) memcpy(e->strings + el + rl, c->data_text, tl);
    e->strings[el + rl + tl] = '\0';
    e->strings_len = el + rl + tl + 1;
    e->entity = e->strings;
    e->row_id = e->strings + el;
    e->text = tl ? e->strings + el + rl : NULL;
    e->text_len = tl;
    e->seq = c->seq;
    e->ts_ms = c->ts_ms;
    e->kind = c->kind;
    e->fields = c->fields ? json_incref(c->fields) : NULL;
    e->data = c->data ? json_incref(c->data) : NULL;
    return true;
}

void pylon_change_tail_append(pylon_change_tail *t, const pylon_change *changes, size_t n)
{
    if (n == 0) return;
    pthread_rwlock_wrlock(&t->lock);
    for (size_t i = 0; i < n; i++) {
        if (t->n == t->cap) drop_oldest(t);
        tail_event *e = &t->ring[(t->first + t->n) % t->cap];
        if (!event_fill(e, &changes[i])) { /* no gap: forget up to the last change */
            while (t->n)
                drop_oldest(t);
            t->first = 0;
            t->floor = changes[n - 1].seq;
            break;
        }
        t->n++;
    }
    pthread_rwlock_unlock(&t->lock);
}

void pylon_change_tail_clear(pylon_change_tail *t, int64_t head)
{
    pthread_rwlock_wrlock(&t->lock);
    while (t->n)
        drop_oldest(t);
    t->first = 0;
    t->floor = head;
    pthread_rwlock_unlock(&t->lock);
}

/* The row as changes_since shapes it. */
static json_t *event_row(const tail_event *e)
{
    json_t *data = e->data   ? json_incref(e->data)
                   : e->text ? pylon_json_loadb(e->text, e->text_len, 0, NULL)
                             : json_null();
    return json_pack("{s:I,s:s,s:s,s:s,s:o,s:o,s:I}", "seq", (json_int_t)e->seq, "entity",
                     e->entity, "row_id", e->row_id, "kind", pylon_change_kind_name(e->kind),
                     "fields", e->fields ? json_incref(e->fields) : json_null(), "data",
                     data ? data : json_null(), "ts", (json_int_t)e->ts_ms);
}

bool pylon_change_tail_since(pylon_change_tail *t, int64_t since, int64_t limit, json_t **rows)
{
    json_t *out = json_array();
    if (!out) return false;
    pthread_rwlock_rdlock(&t->lock);
    if (since < t->floor) {
        pthread_rwlock_unlock(&t->lock);
        json_decref(out);
        atomic_fetch_add_explicit(&t->log, 1, memory_order_relaxed);
        return false;
    }
    /* seqs ascend: binary search for the first event after `since` */
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->ring[(t->first + mid) % t->cap].seq <= since)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Copies under the lock, JSON built after it: the writer appending after each commit
     * never waits for a pull's parsing. */
    size_t n = t->n - lo < (size_t)limit ? t->n - lo : (size_t)limit, got = 0;
    tail_event *copy = n ? calloc(n, sizeof *copy) : NULL;
    bool ok = !n || copy;
    for (size_t k = 0; ok && k < n; k++, got++) {
        const tail_event *e = &t->ring[(t->first + lo + k) % t->cap];
        copy[k] = *e;
        if (!(copy[k].strings = malloc(e->strings_len))) {
            ok = false;
            break;
        }
        memcpy(copy[k].strings, e->strings, e->strings_len);
        copy[k].entity = copy[k].strings + (e->entity - e->strings);
        copy[k].row_id = copy[k].strings + (e->row_id - e->strings);
        copy[k].text = e->text ? copy[k].strings + (e->text - e->strings) : NULL;
        json_incref(copy[k].fields);
        json_incref(copy[k].data);
    }
    pthread_rwlock_unlock(&t->lock);
    for (size_t k = 0; k < got; k++) {
        json_t *row = ok ? event_row(&copy[k]) : NULL;
        if (!row || json_array_append_new(out, row) != 0) ok = false;
        event_clear(&copy[k]);
    }
    free(copy);
    if (!ok) {
        json_decref(out);
        atomic_fetch_add_explicit(&t->log, 1, memory_order_relaxed);
        return false;
    }
    atomic_fetch_add_explicit(&t->memory, 1, memory_order_relaxed);
    *rows = out;
    return true;
}

void pylon_change_tail_counts(const pylon_change_tail *t, uint64_t *memory, uint64_t *log)
{
    pylon_change_tail *m = (pylon_change_tail *)t;
    *memory = atomic_load_explicit(&m->memory, memory_order_relaxed);
    *log = atomic_load_explicit(&m->log, memory_order_relaxed);
}
