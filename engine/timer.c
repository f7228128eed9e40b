/*
 * timer.c — the timer thread: a binary heap of deadlines under one lock.
 *
 * A timer's references (`refs`, guarded by the lock): the caller's handle until cancel, the
 * heap while armed, and its tick message while that is queued or being handled. The timer is
 * freed when the last goes, and only then drops its reference on the target actor.
 *
 * Ticks are sent after the lock is released, so the lock is never held while scheduling.
 */
#include "engine/runtime_internal.h"
#include "engine/timer.h"
#include "engine/clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOT_IN_HEAP SIZE_MAX

struct pylon_timer {
    pylon_tick tick; /* first member: the tick message is the timer */
    pylon_timers *ts;
    pylon_actor *target;
    uint64_t first_ns, interval_ns;
    uint64_t next_n; /* index of the next deadline to fire */
    uint64_t owed;   /* deadlines that passed while the tick was still in flight */
    uint32_t max_catchup;
    uint32_t refs;
    size_t heap_index;
    bool in_flight;
    atomic_bool cancelled;
    pylon_timer *fire_next;
};

struct pylon_timers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pylon_timer **heap;
    size_t len, cap;
    bool stop;
    pthread_t thread;
};

static uint64_t deadline_of(const pylon_timer *t)
{
    return t->first_ns + t->next_n * t->interval_ns;
}

/* ---- heap (lock held) -------------------------------------------------------------------- */

static void heap_set(pylon_timers *ts, size_t i, pylon_timer *t)
{
    ts->heap[i] = t;
    t->heap_index = i;
}

static void heap_up(pylon_timers *ts, size_t i)
{
    pylon_timer *t = ts->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (deadline_of(ts->heap[p]) <= deadline_of(t)) break;
        heap_set(ts, i, ts->heap[p]);
        i = p;
    }
    heap_set(ts, i, t);
}

static void heap_down(pylon_timers *ts, size_t i)
{
    pylon_timer *t = ts->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= ts->len) break;
        if (c + 1 < ts->len && deadline_of(ts->heap[c + 1]) < deadline_of(ts->heap[c])) c++;
        if (deadline_of(t) <= deadline_of(ts->heap[c])) break;
        heap_set(ts, i, ts->heap[c]);
        i = c;
    }
    heap_set(ts, i, t);
}

static bool heap_push(pylon_timers *ts, pylon_timer *t)
{
    if (ts->len == ts->cap) {
        size_t cap = ts->cap ? ts->cap * 2 : 64;
        pylon_timer **h = realloc(ts->heap, cap * sizeof *h);
        if (!h) return false;
        ts->heap = h;
        ts->cap = cap;
    }
    heap_set(ts, ts->len++, t);
    heap_up(ts, ts->len - 1);
    return true;
}

static void heap_remove(pylon_timers *ts, pylon_timer *t)
{
    size_t i = t->heap_index;
    t->heap_index = NOT_IN_HEAP;
    pylon_timer *last = ts->heap[--ts->len];
    if (i == ts->len) return;
    heap_set(ts, i, last);
    heap_up(ts, i);
    heap_down(ts, last->heap_index);
}

/* ---- references -------------------------------------------------------------------------- */

/* Lock held. Returns true when the caller must free `t` (after unlocking). */
static bool unref_locked(pylon_timer *t)
{
    return --t->refs == 0;
}

static void timer_free(pylon_timer *t)
{
    pylon_actor_release(t->target);
    free(t);
}

/* ---- the timer thread -------------------------------------------------------------------- */

/* Lock held: the deadline at the top of the heap has passed. Prepares the tick (or counts it
 * as owed) and re-arms. Returns the timer if its tick must be sent. */
static pylon_timer *fire_locked(pylon_timers *ts, pylon_timer *t, uint64_t now, bool *free_it)
{
    uint64_t passed = 1;
    if (t->interval_ns) passed = (now - t->first_ns) / t->interval_ns - t->next_n + 1;
    pylon_timer *send = NULL;
    if (t->in_flight) {
        t->owed += passed;
    } else {
        uint64_t total = passed + t->owed;
        uint64_t due = total < 1 + (uint64_t)t->max_catchup ? total : 1 + (uint64_t)t->max_catchup;
        t->owed = 0;
        t->tick.seq = t->next_n + passed - 1;
        t->tick.deadline_ns = t->first_ns + t->tick.seq * t->interval_ns;
        t->tick.due = (uint32_t)due;
        t->tick.skipped = (uint32_t)(total - due);
        t->in_flight = true;
        t->refs++;
        send = t;
    }
    if (t->interval_ns) {
        t->next_n += passed; /* the deadline only moves later: sift down from where it is */
        heap_down(ts, t->heap_index);
    } else {
        heap_remove(ts, t);
        *free_it = unref_locked(t); /* one-shot: the heap's reference goes */
    }
    return send;
}

static void *timer_thread(void *arg)
{
    pylon_timers *ts = arg;
    pthread_setname_np(pthread_self(), "pylon-timers"); /* for top -H, perf, /proc comm */
    pthread_mutex_lock(&ts->lock);
    while (!ts->stop) {
        if (ts->len == 0) {
            pthread_cond_wait(&ts->cond, &ts->lock);
            continue;
        }
        uint64_t now = pylon_clock_now_ns();
        uint64_t next = deadline_of(ts->heap[0]);
        if (next > now) {
            struct timespec until = {.tv_sec = (time_t)(next / PYLON_NS_PER_SEC),
                                     .tv_nsec = (long)(next % PYLON_NS_PER_SEC)};
            pthread_cond_timedwait(&ts->cond, &ts->lock, &until);
            continue;
        }
        /* Sent in deadline order: the list keeps the order the heap gives them. */
        pylon_timer *to_send = NULL, **send_tail = &to_send, *to_free = NULL;
        while (ts->len > 0 && deadline_of(ts->heap[0]) <= now) {
            bool free_it = false;
            pylon_timer *t = ts->heap[0];
            if (fire_locked(ts, t, now, &free_it)) {
                t->fire_next = NULL;
                *send_tail = t;
                send_tail = &t->fire_next;
            } else if (free_it) {
                t->fire_next = to_free;
                to_free = t;
            }
        }
        pthread_mutex_unlock(&ts->lock);
        while (to_send) {
            pylon_timer *t = to_send;
            to_send = t->fire_next;
            pylon_actor_send(t->target, &t->tick.msg);
        }
        while (to_free) {
            pylon_timer *t = to_free;
            to_free = t->fire_next;
            timer_free(t);
        }
        pthread_mutex_lock(&ts->lock);
    }
    pthread_mutex_unlock(&ts->lock);
    return NULL;
}

pylon_timers *pylon_timers_create_(char *err, size_t errlen)
{
    pylon_timers *ts = calloc(1, sizeof *ts);
    if (!ts) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ts->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&ts->lock, NULL);
    int rc = pthread_create(&ts->thread, NULL, timer_thread, ts);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the timer thread: %s", strerror(rc));
        pthread_cond_destroy(&ts->cond);
        pthread_mutex_destroy(&ts->lock);
        free(ts);
        return NULL;
    }
    return ts;
}

void pylon_timers_stop_(pylon_timers *ts)
{
    pthread_mutex_lock(&ts->lock);
    bool was_stopped = ts->stop;
    ts->stop = true;
    pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    if (!was_stopped) pthread_join(ts->thread, NULL);
}

void pylon_timers_destroy_(pylon_timers *ts)
{
    if (!ts) return;
    pylon_timers_stop_(ts);
    /* Timers still armed lose the heap's reference; their handles stay valid until cancel. */
    for (size_t i = 0; i < ts->len; i++) {
        pylon_timer *t = ts->heap[i];
        t->heap_index = NOT_IN_HEAP;
        if (unref_locked(t)) timer_free(t);
    }
    free(ts->heap);
    pthread_cond_destroy(&ts->cond);
    pthread_mutex_destroy(&ts->lock);
    free(ts);
}

/* ---- public API -------------------------------------------------------------------------- */

pylon_timer *pylon_timer_start(pylon_actor *target, uint32_t msg_type, uint64_t first_ns,
                               uint64_t interval_ns, uint32_t max_catchup, uint64_t user)
{
    pylon_timers *ts = pylon_runtime_timers_(pylon_actor_runtime(target));
    pylon_timer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pylon_msg_init(&t->tick.msg, msg_type, NULL);
    t->tick.msg.flags = PYLON_MSG_BORROWED | PYLON_MSG_TIMER_;
    t->tick.timer = t;
    t->tick.user = user;
    t->ts = ts;
    t->target = target;
    t->first_ns = first_ns;
    t->interval_ns = interval_ns;
    t->max_catchup = max_catchup;
    t->refs = 2; /* handle + heap */
    atomic_init(&t->cancelled, false);
    pylon_actor_retain(target);
    pthread_mutex_lock(&ts->lock);
    bool ok = heap_push(ts, t);
    if (ok && t->heap_index == 0) pthread_cond_signal(&ts->cond);
    pthread_mutex_unlock(&ts->lock);
    if (!ok) {
        timer_free(t);
        return NULL;
    }
    return t;
}

void pylon_timer_cancel(pylon_timer *t)
{
    pylon_timers *ts = t->ts;
    pthread_mutex_lock(&ts->lock);
    atomic_store_explicit(&t->cancelled, true, memory_order_release);
    bool free_it = false;
    if (t->heap_index != NOT_IN_HEAP) {
        heap_remove(ts, t);
        free_it = unref_locked(t);
    }
    free_it = unref_locked(t) || free_it;
    pthread_mutex_unlock(&ts->lock);
    if (free_it) timer_free(t);
}

bool pylon_timer_deliverable_(pylon_msg *m)
{
    pylon_timer *t = (pylon_timer *)m;
    return !atomic_load_explicit(&t->cancelled, memory_order_acquire);
}

void pylon_timer_returned_(pylon_msg *m)
{
    pylon_timer *t = (pylon_timer *)m;
    pylon_timers *ts = t->ts;
    pthread_mutex_lock(&ts->lock);
    t->in_flight = false;
    bool free_it = unref_locked(t);
    pthread_mutex_unlock(&ts->lock);
    if (free_it) timer_free(t);
}
