/*
 * bench_common.h — what the engine benchmark's workloads share, whatever engine they run on:
 * parameters, results, the end-of-run rendezvous and the message pool.
 */
#ifndef PYLON_BENCH_COMMON_H
#define PYLON_BENCH_COMMON_H

#include "engine/clock.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { BENCH_MSG_PING = 1, BENCH_MSG_GO, BENCH_MSG_DATA, BENCH_MSG_END };

typedef struct bench_params {
    unsigned workers;
    uint64_t duration_ns;   /* measured phase of each run */
    unsigned burst;         /* messages a producer sends per "go" */
    unsigned pool_fanin;    /* preallocated messages per fan-in producer */
    unsigned pool_fanout;   /* preallocated messages of the fan-out producer */
    bool verbose;
} bench_params;

typedef struct bench_result {
    uint64_t msgs;  /* counted messages (see README: what counts) */
    double secs;    /* from the first send to the last actor's end of run */
    double rate;    /* msgs / secs */
    uint64_t runs, delivered, steals, sleeps; /* runtime stats at the end of the run */
} bench_result;

/* ---- end-of-run rendezvous ---------------------------------------------------------------
 * Main sets `stop` after the measured phase; every actor that notices it reports once through
 * bench_ctx_done(); the last of `target` reports stamps the end time and sets `finished`. */
typedef struct bench_ctx {
    alignas(64) atomic_bool stop; /* read on every message: keep it alone on its line */
    alignas(64) _Atomic unsigned done;
    unsigned target;
    uint64_t t_end;
    atomic_int finished;
} bench_ctx;

static inline void bench_ctx_init(bench_ctx *c, unsigned target)
{
    atomic_init(&c->stop, false);
    atomic_init(&c->done, 0);
    c->target = target;
    c->t_end = 0;
    atomic_init(&c->finished, 0);
}

static inline bool bench_ctx_stopping(bench_ctx *c)
{
    return atomic_load_explicit(&c->stop, memory_order_relaxed);
}

static inline void bench_ctx_done(bench_ctx *c)
{
    if (atomic_fetch_add_explicit(&c->done, 1, memory_order_acq_rel) + 1 == c->target) {
        c->t_end = pylon_clock_now_ns();
        atomic_store_explicit(&c->finished, 1, memory_order_release);
    }
}

static inline void bench_sleep_until(uint64_t t_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(t_ns / PYLON_NS_PER_SEC), .tv_nsec = (long)(t_ns % PYLON_NS_PER_SEC)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {
    }
}

/* Waits for `finished`; false after `timeout_ns`. */
static inline bool bench_ctx_wait(bench_ctx *c, uint64_t timeout_ns)
{
    uint64_t deadline = pylon_clock_now_ns() + timeout_ns;
    while (!atomic_load_explicit(&c->finished, memory_order_acquire)) {
        if (pylon_clock_now_ns() > deadline) return false;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    return true;
}

/* ---- message pool ---------------------------------------------------------------------------
 * A fixed set of preallocated messages owned by one producer actor. The producer takes from
 * its private list and, when that runs dry, grabs the whole shared list in one exchange;
 * receivers (any thread, any number) give messages back by pushing onto the shared list (a
 * Treiber push; push-only plus take-all has no ABA problem). No malloc on the hot path, for
 * either engine. */
typedef struct bench_pool_node {
    struct bench_pool_node *next;
    struct bench_pool *pool;
} bench_pool_node;

typedef struct bench_pool {
    alignas(64) _Atomic(bench_pool_node *) shared; /* returns, any thread */
    alignas(64) bench_pool_node *local;             /* the owning producer only */
} bench_pool;

static inline void bench_pool_init(bench_pool *p)
{
    atomic_init(&p->shared, NULL);
    p->local = NULL;
}

static inline void bench_pool_put(bench_pool_node *n)
{
    bench_pool *p = n->pool;
    bench_pool_node *head = atomic_load_explicit(&p->shared, memory_order_relaxed);
    do {
        n->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&p->shared, &head, n, memory_order_release,
                                                    memory_order_relaxed));
}

static inline bench_pool_node *bench_pool_get(bench_pool *p)
{
    bench_pool_node *n = p->local;
    if (!n) {
        if (!atomic_load_explicit(&p->shared, memory_order_relaxed)) return NULL;
        n = atomic_exchange_explicit(&p->shared, NULL, memory_order_acquire);
        if (!n) return NULL;
    }
    p->local = n->next;
    return n;
}

/* State blocks are written by whichever worker runs the actor: give each its own lines. */
static inline void *bench_alloc_state(size_t size)
{
    size_t rounded = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        fprintf(stderr, "bench_engine: out of memory\n");
        abort();
    }
    return p;
}

#endif
