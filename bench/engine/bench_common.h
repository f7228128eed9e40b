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
    uint64_t duration_ns; /* measured phase of each run */
    unsigned burst;       /* messages a producer sends per "go" */
    unsigned pool_fanin;  /* preallocated messages per fan-in producer */
    unsigned pool_fanout; /* preallocated messages of the fan-out producer */
    bool verbose;
} bench_params;

typedef struct bench_result {
    uint64_t msgs;     /* counted messages (see README: what counts) */
    double secs;       /* from the first send to the last actor's end of run */
    double drain_secs; /* the part of secs after the stop flag was raised */
    double rate;       /* msgs / secs */
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
    struct timespec ts = {.tv_sec = (time_t)(t_ns / PYLON_NS_PER_SEC),
                          .tv_nsec = (long)(t_ns % PYLON_NS_PER_SEC)};
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
 * A fixed set of preallocated messages owned by one producer actor, so that no malloc runs on
 * the hot path of either engine. The producer takes from its private list; receivers (any
 * thread, any number) give messages back by pushing onto one of BENCH_POOL_SHARDS shared lists,
 * chosen by the calling thread, so that two workers returning messages do not fight over one
 * cache line (with a single list that line's ping-pong cost more than the engines did). When its
 * private list runs dry, the producer takes a whole shared list with one exchange. Treiber push
 * plus take-all has no ABA problem.
 *
 * Back-pressure: a producer that finds its pool empty parks (`parked` = 1) instead of spinning
 * on its "go" message. A returned message records the length of the shard list it lands on; the
 * receiver whose push makes a list `wake_after` long (the burst size) clears `parked` and calls
 * wake(), which sends the producer its go again. (Waking on the first return made the producer
 * run for one message at a time; counting returns in one shared counter cost a contended atomic
 * per message.) All messages are in flight when the producer parks and wake_after is at most
 * pool/SHARDS, so some list always gets that long. Store-flag-then-check-lists on one side and
 * push-then-check-flag on the other (all seq_cst) mean that either the producer sees the
 * returned messages or the receiver sees the flag: the go is never lost, and never doubled. */
#define BENCH_POOL_SHARDS 8u

typedef struct bench_pool_node {
    struct bench_pool_node *next;
    struct bench_pool *pool;
    atomic_uint depth; /* length of the shard list from this node down, set when pushed */
} bench_pool_node;

typedef struct bench_pool_shard {
    alignas(64) _Atomic(bench_pool_node *) head;
} bench_pool_shard;

typedef struct bench_pool {
    bench_pool_shard shard[BENCH_POOL_SHARDS]; /* returns, any thread */
    alignas(64) atomic_int parked;             /* the producer waits for returns */
    unsigned wake_after;                       /* list length that wakes it */
    void (*wake)(struct bench_pool *p);        /* re-sends the producer its go */
    alignas(64) bench_pool_node *local;        /* the owning producer only */
    unsigned next_shard;
} bench_pool;

/* The calling thread's shard: threads are numbered on first use, so the workers of one runtime
 * (started together) land on different shards. */
static inline unsigned bench_pool_my_shard(void)
{
    static atomic_uint counter;
    static _Thread_local unsigned id = ~0u;
    if (id == ~0u) id = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    return id % BENCH_POOL_SHARDS;
}

/* `size` messages will be added; a parked producer wakes after about `burst` returns. */
static inline void bench_pool_init(bench_pool *p, unsigned size, unsigned burst,
                                   void (*wake)(bench_pool *))
{
    for (unsigned i = 0; i < BENCH_POOL_SHARDS; i++)
        atomic_init(&p->shard[i].head, NULL);
    atomic_init(&p->parked, 0);
    unsigned most = size / BENCH_POOL_SHARDS; /* some list reaches it once all are back */
    p->wake_after = burst < most ? burst : most;
    if (p->wake_after == 0) p->wake_after = 1;
    p->wake = wake;
    p->local = NULL;
    p->next_shard = 0;
}

static inline void bench_pool_put(bench_pool_node *n)
{
    bench_pool *p = n->pool;
    _Atomic(bench_pool_node *) *head = &p->shard[bench_pool_my_shard()].head;
    bench_pool_node *h = atomic_load_explicit(head, memory_order_relaxed);
    unsigned depth;
    do {
        n->next = h;
        depth = h ? atomic_load_explicit(&h->depth, memory_order_relaxed) + 1 : 1;
        atomic_store_explicit(&n->depth, depth, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(head, &h, n, memory_order_seq_cst,
                                                    memory_order_relaxed));
    if (depth >= p->wake_after && atomic_load_explicit(&p->parked, memory_order_seq_cst) &&
        atomic_exchange_explicit(&p->parked, 0, memory_order_seq_cst))
        p->wake(p);
}

/* Producer only: a message, or NULL when the pool is empty. */
static inline bench_pool_node *bench_pool_get(bench_pool *p)
{
    bench_pool_node *n = p->local;
    for (unsigned i = 0; !n && i < BENCH_POOL_SHARDS; i++) {
        unsigned k = (p->next_shard + i) % BENCH_POOL_SHARDS;
        if (!atomic_load_explicit(&p->shard[k].head, memory_order_relaxed)) continue;
        n = atomic_exchange_explicit(&p->shard[k].head, NULL, memory_order_acquire);
        p->next_shard = k + 1; /* start at the next shard next time: none is left to pile up */
    }
    if (!n) return NULL;
    p->local = n->next;
    return n;
}

/* Producer only: a message, or NULL after parking; the producer must then NOT re-send its go,
 * a receiver will (through wake()) once enough messages are back. */
static inline bench_pool_node *bench_pool_get_or_park(bench_pool *p)
{
    bench_pool_node *n = bench_pool_get(p);
    if (n) return n;
    atomic_store_explicit(&p->parked, 1, memory_order_seq_cst);
    bool any = false;
    for (unsigned i = 0; i < BENCH_POOL_SHARDS && !any; i++)
        any = atomic_load_explicit(&p->shard[i].head, memory_order_seq_cst) != NULL;
    if (!any) return NULL; /* parked */
    /* Messages came back meanwhile. Unpark, unless a receiver already did (it sends the go). */
    if (!atomic_exchange_explicit(&p->parked, 0, memory_order_seq_cst)) return NULL;
    return bench_pool_get(p); /* not NULL: only this producer takes from the shared lists */
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
