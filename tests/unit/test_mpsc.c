/*
 * test_mpsc.c — the intrusive MPSC queue (engine/mpsc.h), alone and as an actor's mailbox.
 *
 * Proves:
 *  - single thread: pop on an empty queue is NULL, FIFO order, nodes re-pushable, and the
 *    idle mark (only the push that finds the queue idle reports it; try_idle only when empty);
 *  - the idle protocol with 4 producers and a consumer that sleeps when idle: no wake-up lost,
 *    never a second wake-up for an active consumer, one wake-up per idle period;
 *  - 4 producer threads × 1,000,000 nodes, one consumer thread popping concurrently: every
 *    node comes out exactly once (nothing lost, nothing duplicated) and each producer's
 *    nodes come out in the order it pushed them;
 *  - the same 4 × 1,000,000 sent with pylon_actor_send into one actor: the behaviour sees
 *    every message once, in per-producer order, and frees each one exactly once.
 * Failures seen on helper threads are recorded and asserted on the test's own thread.
 */
#include "engine/actor.h"
#include "engine/clock.h"
#include "engine/mpsc.h"
#include "engine/runtime.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "support.h"

#define PRODUCERS    4
#define PER_PRODUCER 1000000u
#define TOTAL        ((uint64_t)PRODUCERS * PER_PRODUCER)

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Single-thread basics                                                                      */
/* ---------------------------------------------------------------------------------------- */

typedef struct item {
    pylon_mpsc_node node; /* first member: a popped node is the item */
    uint32_t producer;
    uint32_t seq;
} item;

Test(mpsc, empty_queue_pops_null)
{
    pylon_mpsc q;
    pylon_mpsc_init(&q);
    cr_assert_null(pylon_mpsc_pop(&q));
    cr_assert_null(pylon_mpsc_pop(&q));
    item a = {0};
    cr_assert(pylon_mpsc_push(&q, &a.node), "first push into a new queue must report idle");
    cr_assert_eq(pylon_mpsc_pop(&q), &a.node);
    cr_assert_null(pylon_mpsc_pop(&q));
    assert_no_leaks();
}

Test(mpsc, fifo_single_thread)
{
    pylon_mpsc q;
    pylon_mpsc_init(&q);
    item it[1000];
    for (uint32_t i = 0; i < 1000; i++) {
        it[i].seq = i;
        bool was_idle = pylon_mpsc_push(&q, &it[i].node);
        cr_assert_eq(was_idle, i == 0, "push %u reported idle=%d", i, was_idle);
    }
    for (uint32_t i = 0; i < 1000; i++) {
        item *got = (item *)pylon_mpsc_pop(&q);
        cr_assert_not_null(got, "pop %u returned NULL with items queued", i);
        cr_assert_eq(got, &it[i], "pop %u returned item %u", i, got->seq);
    }
    cr_assert_null(pylon_mpsc_pop(&q));
    cr_assert(pylon_mpsc_try_idle(&q), "empty queue refused to go idle");
    assert_no_leaks();
}

Test(mpsc, single_node_and_interleaved_push_pop)
{
    pylon_mpsc q;
    pylon_mpsc_init(&q);
    item a = {0}, b = {0}, c = {0}, d = {0};

    /* One node in, one node out, twice with the same node (a popped node is free to reuse). */
    for (int round = 0; round < 2; round++) {
        pylon_mpsc_push(&q, &a.node);
        cr_assert_eq(pylon_mpsc_pop(&q), &a.node);
        cr_assert_null(pylon_mpsc_pop(&q));
    }

    pylon_mpsc_push(&q, &b.node);
    pylon_mpsc_push(&q, &c.node);
    cr_assert_eq(pylon_mpsc_pop(&q), &b.node);
    pylon_mpsc_push(&q, &d.node);
    pylon_mpsc_push(&q, &b.node); /* b again, behind d */
    cr_assert_eq(pylon_mpsc_pop(&q), &c.node);
    cr_assert_eq(pylon_mpsc_pop(&q), &d.node);
    cr_assert_not(pylon_mpsc_try_idle(&q), "went idle with b still queued");
    cr_assert_eq(pylon_mpsc_pop(&q), &b.node);
    cr_assert_null(pylon_mpsc_pop(&q));
    assert_no_leaks();
}

/* The idle mark: only the push that finds the queue idle reports it; try_idle succeeds only
 * on an empty queue; after it, the next push reports idle again. */
Test(mpsc, idle_mark_single_thread)
{
    pylon_mpsc q;
    pylon_mpsc_init(&q);
    item a = {0}, b = {0};
    cr_assert(pylon_mpsc_push(&q, &a.node));
    cr_assert_not(pylon_mpsc_push(&q, &b.node));
    cr_assert_not(pylon_mpsc_try_idle(&q), "idle with two nodes queued");
    cr_assert_eq(pylon_mpsc_pop(&q), &a.node);
    cr_assert_not(pylon_mpsc_try_idle(&q), "idle with one node queued");
    cr_assert_eq(pylon_mpsc_pop(&q), &b.node);
    cr_assert_null(pylon_mpsc_pop(&q));
    cr_assert(pylon_mpsc_try_idle(&q), "empty queue refused to go idle");
    cr_assert(pylon_mpsc_push(&q, &a.node), "push after try_idle did not report idle");
    cr_assert_not(pylon_mpsc_push(&q, &b.node));
    cr_assert_eq(pylon_mpsc_pop(&q), &a.node);
    cr_assert_eq(pylon_mpsc_pop(&q), &b.node);
    cr_assert(pylon_mpsc_try_idle(&q));
    cr_assert(pylon_mpsc_push(&q, &b.node));
    cr_assert_eq(pylon_mpsc_pop(&q), &b.node);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* 4 producers × 1,000,000 into one raw queue, one consumer thread                          */
/* ---------------------------------------------------------------------------------------- */

typedef struct mp_ctx {
    pylon_mpsc q;
    item *items; /* TOTAL items; producer p owns items[p*PER_PRODUCER ...] */
    uint8_t *seen;
    _Atomic int go;
    /* consumer results */
    uint64_t received;
    uint64_t duplicates;
    uint64_t order_errors;
    uint64_t bad_producer;
    uint32_t next[PRODUCERS];
    int timed_out;
} mp_ctx;

typedef struct producer_arg {
    mp_ctx *ctx;
    uint32_t id;
} producer_arg;

static void *raw_producer(void *p)
{
    producer_arg *a = p;
    while (!atomic_load(&a->ctx->go)) {
    }
    item *mine = a->ctx->items + (size_t)a->id * PER_PRODUCER;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        mine[i].producer = a->id;
        mine[i].seq = i;
        pylon_mpsc_push(&a->ctx->q, &mine[i].node);
    }
    return NULL;
}

static void *raw_consumer(void *p)
{
    mp_ctx *c = p;
    uint64_t deadline = pylon_clock_now_ns() + 90 * PYLON_NS_PER_SEC;
    uint64_t empty_polls = 0;
    atomic_store(&c->go, 1);
    while (c->received < TOTAL) {
        item *it = (item *)pylon_mpsc_pop(&c->q);
        if (it == NULL) {
            if ((++empty_polls & 0xfff) == 0 && pylon_clock_now_ns() > deadline) {
                c->timed_out = 1;
                return NULL;
            }
            continue;
        }
        c->received++;
        if (it->producer >= PRODUCERS) {
            c->bad_producer++;
            continue;
        }
        size_t idx = (size_t)(it - c->items);
        if (idx >= TOTAL) {
            c->bad_producer++;
            continue;
        }
        if (c->seen[idx]++) c->duplicates++;
        if (it->seq != c->next[it->producer]) c->order_errors++;
        c->next[it->producer] = it->seq + 1;
    }
    return NULL;
}

Test(mpsc, four_producers_one_consumer_exactly_once_in_order, .timeout = 180)
{
    mp_ctx *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->items = calloc(TOTAL, sizeof *c->items);
    c->seen = calloc(TOTAL, 1);
    cr_assert(c->items && c->seen);
    pylon_mpsc_init(&c->q);

    pthread_t cons, prod[PRODUCERS];
    producer_arg args[PRODUCERS];
    cr_assert_eq(pthread_create(&cons, NULL, raw_consumer, c), 0);
    for (uint32_t p = 0; p < PRODUCERS; p++) {
        args[p] = (producer_arg){c, p};
        cr_assert_eq(pthread_create(&prod[p], NULL, raw_producer, &args[p]), 0);
    }
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(prod[p], NULL);
    pthread_join(cons, NULL);

    cr_assert_not(c->timed_out, "consumer timed out after %llu of %llu nodes",
                  (unsigned long long)c->received, (unsigned long long)TOTAL);
    cr_assert_eq(c->received, TOTAL);
    cr_assert_eq(c->bad_producer, 0);
    cr_assert_eq(c->duplicates, 0, "%llu nodes popped twice", (unsigned long long)c->duplicates);
    cr_assert_eq(c->order_errors, 0, "%llu nodes out of per-producer order",
                 (unsigned long long)c->order_errors);
    for (int p = 0; p < PRODUCERS; p++)
        cr_assert_eq(c->next[p], PER_PRODUCER, "producer %d: last seq seen %u", p, c->next[p]);
    for (size_t i = 0; i < TOTAL; i++)
        if (c->seen[i] != 1) cr_assert_fail("node %zu seen %u times", i, c->seen[i]);
    cr_assert_null(pylon_mpsc_pop(&c->q));
    cr_assert(pylon_mpsc_try_idle(&c->q), "drained queue refused to go idle");

    free(c->items);
    free(c->seen);
    free(c);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* The idle protocol under 4 producers: the consumer sleeps when try_idle succeeds and only  */
/* the push that reports idle wakes it                                                       */
/* ---------------------------------------------------------------------------------------- */

#define IDLE_PER_PRODUCER 200000u
#define IDLE_TOTAL        ((uint64_t)PRODUCERS * IDLE_PER_PRODUCER)

typedef struct idle_ctx {
    pylon_mpsc q;
    item *items;
    sem_t wake;
    _Atomic int active;            /* 1 while a consumer is (or is being) woken */
    _Atomic uint64_t double_wakes; /* a wake-up while the consumer was already active */
    _Atomic uint64_t wakes;
    _Atomic int go;
    uint32_t next[PRODUCERS];
    uint64_t received, order_errors, sleeps;
    int timed_out;
} idle_ctx;

typedef struct idle_arg {
    idle_ctx *ctx;
    uint32_t id;
} idle_arg;

static void *idle_producer(void *p)
{
    idle_arg *a = p;
    idle_ctx *c = a->ctx;
    while (!atomic_load(&c->go)) {
    }
    item *mine = c->items + (size_t)a->id * IDLE_PER_PRODUCER;
    for (uint32_t i = 0; i < IDLE_PER_PRODUCER; i++) {
        mine[i].producer = a->id;
        mine[i].seq = i;
        if (pylon_mpsc_push(&c->q, &mine[i].node)) {
            if (atomic_exchange(&c->active, 1) != 0) atomic_fetch_add(&c->double_wakes, 1);
            atomic_fetch_add(&c->wakes, 1);
            sem_post(&c->wake);
        }
        if ((i & 1023) == 0) {
            struct timespec ts = {0, 20000}; /* pauses let the consumer run dry and sleep */
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void *idle_consumer(void *p)
{
    idle_ctx *c = p;
    while (c->received < IDLE_TOTAL) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        if (sem_timedwait(&c->wake, &until) != 0) {
            c->timed_out = 1; /* a lost wake-up: nodes queued, nobody woke us */
            return NULL;
        }
        for (;;) {
            item *it;
            while ((it = (item *)pylon_mpsc_pop(&c->q)) != NULL) {
                c->received++;
                if (it->producer >= PRODUCERS || it->seq != c->next[it->producer])
                    c->order_errors++;
                else
                    c->next[it->producer] = it->seq + 1;
            }
            atomic_store(&c->active, 0);
            if (pylon_mpsc_try_idle(&c->q)) {
                c->sleeps++;
                break;
            }
            /* Not idle: a push is in flight; keep consuming (nobody else may wake us). */
            if (atomic_exchange(&c->active, 1) != 0) atomic_fetch_add(&c->double_wakes, 1);
        }
    }
    return NULL;
}

Test(mpsc, idle_protocol_no_lost_or_double_wakeups, .timeout = 120)
{
    idle_ctx *c = calloc(1, sizeof *c);
    c->items = calloc(IDLE_TOTAL, sizeof *c->items);
    cr_assert(c && c->items);
    pylon_mpsc_init(&c->q);
    sem_init(&c->wake, 0, 0);
    pthread_t cons, prod[PRODUCERS];
    idle_arg args[PRODUCERS];
    cr_assert_eq(pthread_create(&cons, NULL, idle_consumer, c), 0);
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        args[i] = (idle_arg){c, i};
        cr_assert_eq(pthread_create(&prod[i], NULL, idle_producer, &args[i]), 0);
    }
    atomic_store(&c->go, 1);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(prod[i], NULL);
    pthread_join(cons, NULL);

    cr_assert_not(c->timed_out, "consumer never woken with %llu of %llu nodes received",
                  (unsigned long long)c->received, (unsigned long long)IDLE_TOTAL);
    cr_assert_eq(c->received, IDLE_TOTAL);
    cr_assert_eq(c->order_errors, 0);
    cr_assert_eq(atomic_load(&c->double_wakes), 0, "consumer woken while already active");
    cr_assert_eq(atomic_load(&c->wakes), c->sleeps,
                 "%llu wake-ups for %llu sleeps: each idle period must cost exactly one",
                 (unsigned long long)atomic_load(&c->wakes), (unsigned long long)c->sleeps);
    cr_assert_gt(c->sleeps, 0, "the consumer never went idle: the test proved nothing");
    int v;
    sem_getvalue(&c->wake, &v);
    cr_assert_eq(v, 0);
    sem_destroy(&c->wake);
    free(c->items);
    free(c);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* 4 producers × 1,000,000 through a real actor                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct seq_msg {
    pylon_msg msg;
    uint32_t producer;
    uint32_t seq;
} seq_msg;

/* Written only by the actor's behaviour (one thread at a time, by the runtime's guarantee);
 * read by the test thread after the latch, which orders the accesses. */
typedef struct sink_state {
    uint32_t next[PRODUCERS];
    uint64_t received;
    uint64_t order_errors;
    uint64_t bad;
    uint64_t bad_worker;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} sink_state;

static _Atomic uint64_t g_released;
static seq_msg *g_msgs;
static pylon_actor *g_sink;
static _Atomic int g_go;

static void count_release(pylon_msg *m)
{
    (void)m; /* the array is owned by the test */
    atomic_fetch_add(&g_released, 1);
}

static void sink_behaviour(pylon_actor *self, pylon_msg *m)
{
    sink_state *st = pylon_actor_state(self);
    seq_msg *sm = (seq_msg *)m;
    if (pylon_runtime_current_worker() < 0) st->bad_worker++;
    if (sm->producer >= PRODUCERS || sm < g_msgs || sm >= g_msgs + TOTAL) {
        st->bad++;
    } else {
        if (sm->seq != st->next[sm->producer]) st->order_errors++;
        st->next[sm->producer] = sm->seq + 1;
    }
    pylon_msg_free(m);
    if (++st->received == TOTAL) {
        pthread_mutex_lock(&st->mu);
        st->done = 1;
        pthread_cond_signal(&st->cv);
        pthread_mutex_unlock(&st->mu);
    }
}

static const pylon_actor_def sink_def = {
    .name = "sink", .behaviour = sink_behaviour, .track_pending = true};

static void *actor_producer(void *p)
{
    uint32_t id = (uint32_t)(uintptr_t)p;
    while (!atomic_load(&g_go)) {
    }
    seq_msg *mine = g_msgs + (size_t)id * PER_PRODUCER;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        pylon_msg_init(&mine[i].msg, 1, count_release);
        mine[i].producer = id;
        mine[i].seq = i;
        pylon_actor_send(g_sink, &mine[i].msg);
    }
    return NULL;
}

static int wait_live_actors(pylon_runtime *rt, uint64_t want, unsigned timeout_ms)
{
    pylon_runtime_stats s;
    for (unsigned waited = 0;; waited++) {
        pylon_runtime_stats_get(rt, &s);
        if (s.live_actors == want) return 1;
        if (waited >= timeout_ms) return 0;
        sleep_ms(1);
    }
}

Test(mpsc, four_producers_into_one_actor, .timeout = 180)
{
    char err[256] = "";
    pylon_runtime_options opt = {.workers = 2};
    pylon_runtime *rt = pylon_runtime_create(&opt, err, sizeof err);
    cr_assert_not_null(rt, "runtime_create: %s", err);

    g_msgs = calloc(TOTAL, sizeof *g_msgs);
    cr_assert_not_null(g_msgs);
    sink_state *st = calloc(1, sizeof *st);
    cr_assert_not_null(st);
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);

    g_sink = pylon_actor_spawn(rt, &sink_def, st);
    cr_assert_not_null(g_sink);

    pthread_t th[PRODUCERS];
    for (uintptr_t p = 0; p < PRODUCERS; p++)
        cr_assert_eq(pthread_create(&th[p], NULL, actor_producer, (void *)p), 0);
    atomic_store(&g_go, 1);
    for (int p = 0; p < PRODUCERS; p++)
        pthread_join(th[p], NULL);

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 120;
    pthread_mutex_lock(&st->mu);
    int rc = 0;
    while (!st->done && rc == 0)
        rc = pthread_cond_timedwait(&st->cv, &st->mu, &until);
    int done = st->done;
    uint64_t received = st->received;
    pthread_mutex_unlock(&st->mu);
    cr_assert(done, "actor received %llu of %llu messages before the timeout",
              (unsigned long long)received, (unsigned long long)TOTAL);

    cr_assert_eq(st->bad, 0);
    cr_assert_eq(st->bad_worker, 0, "behaviour ran %llu times outside a worker",
                 (unsigned long long)st->bad_worker);
    cr_assert_eq(st->order_errors, 0, "%llu messages out of per-producer order",
                 (unsigned long long)st->order_errors);
    for (int p = 0; p < PRODUCERS; p++)
        cr_assert_eq(st->next[p], PER_PRODUCER, "producer %d: last seq %u", p, st->next[p]);
    cr_assert_eq(atomic_load(&g_released), TOTAL, "release ran %llu times",
                 (unsigned long long)atomic_load(&g_released));

    /* The mailbox drains to zero once the last behaviour returns. */
    for (int i = 0; i < 2000 && pylon_actor_pending(g_sink) != 0; i++)
        sleep_ms(1);
    cr_assert_eq(pylon_actor_pending(g_sink), 0);

    pylon_runtime_stats stats;
    pylon_runtime_stats_get(rt, &stats);
    cr_assert_geq(stats.messages, TOTAL);

    pylon_actor_stop(g_sink);
    pylon_actor_release(g_sink);
    cr_assert(wait_live_actors(rt, 0, 5000), "actor not freed after stop + release");
    pylon_runtime_destroy(rt);

    /* Nothing is delivered after the count was reached. */
    cr_assert_eq(st->received, TOTAL);
    cr_assert_eq(atomic_load(&g_released), TOTAL);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
    free(g_msgs);
    assert_no_leaks();
}
