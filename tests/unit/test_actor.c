/*
 * test_actor.c — actors on the runtime (engine/actor.h, engine/runtime.h).
 *
 * Proves:
 *  (a) an actor never runs on two threads at once, and always on a worker: every behaviour
 *      sets an "inside" flag with atomic_exchange and counts a violation if it was already set,
 *      with 4 workers, messages flooding in from 4 non-worker threads and actors forwarding
 *      to each other (and to themselves);
 *  (b) 10,000 actors × 100 messages: each message delivered exactly once; stop runs on_stop
 *      exactly once per actor (stop called twice), after the actor's last message;
 *  (c) stop: messages queued before stop are delivered, later ones are released and never
 *      delivered, on_stop runs once in the actor's context; the same when an actor stops itself;
 *      borrowed messages are given back through release() after the behaviour (free() when
 *      release is NULL);
 *  (d) the batch limit: with one worker, two actors with 10,000 queued messages each take
 *      turns (whether the messages came from outside or from an actor on the worker), and
 *      the runtime counts at least one run per batch;
 *  (e) ping-pong: one message bounced between two actors for 100,000 round trips;
 *  (f) reference counting: an actor lives while anyone holds a reference and is freed
 *      (live_actors back to 0) once stopped and released by everyone (ASan checks the rest);
 *  (g) a non-worker thread that batches (pylon_runtime_defer) holds the actors it readies
 *      until it flushes: nothing runs before, everything after, sleeping workers are woken.
 * Violations seen on workers are counted and asserted on the test's own thread.
 */
#include "engine/actor.h"
#include "engine/clock.h"
#include "engine/runtime.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "support.h"

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls until *v >= want; false after timeout_ms. */
static int wait_u64(_Atomic uint64_t *v, uint64_t want, unsigned timeout_ms)
{
    uint64_t end = pylon_clock_now_ns() + (uint64_t)timeout_ms * PYLON_NS_PER_MS;
    while (atomic_load(v) < want) {
        if (pylon_clock_now_ns() > end) return 0;
        sleep_ms(1);
    }
    return 1;
}

static uint64_t live_actors(pylon_runtime *rt)
{
    pylon_runtime_stats s;
    pylon_runtime_stats_get(rt, &s);
    return s.live_actors;
}

/* The runtime may free actors asynchronously: poll. */
static int wait_live(pylon_runtime *rt, uint64_t want, unsigned timeout_ms)
{
    uint64_t end = pylon_clock_now_ns() + (uint64_t)timeout_ms * PYLON_NS_PER_MS;
    while (live_actors(rt) != want) {
        if (pylon_clock_now_ns() > end) return 0;
        sleep_ms(1);
    }
    return 1;
}

static pylon_runtime *make_runtime(unsigned workers, unsigned batch)
{
    char err[256] = "";
    pylon_runtime_options opt = {.workers = workers, .batch = batch};
    pylon_runtime *rt = pylon_runtime_create(&opt, err, sizeof err);
    cr_assert_not_null(rt, "pylon_runtime_create: %s", err);
    cr_assert_eq(pylon_runtime_workers(rt), workers);
    cr_assert_eq(live_actors(rt), 0);
    return rt;
}

/* A gate that holds a worker inside a behaviour until the test opens it. */
static _Atomic int g_gate_entered;
static _Atomic int g_gate_open;

static void gate_wait(void)
{
    atomic_store(&g_gate_entered, 1);
    uint64_t end = pylon_clock_now_ns() + 20 * PYLON_NS_PER_SEC; /* never hang the suite */
    while (!atomic_load(&g_gate_open) && pylon_clock_now_ns() < end)
        sleep_ms(1);
}

static void gate_reset(void)
{
    atomic_store(&g_gate_entered, 0);
    atomic_store(&g_gate_open, 0);
}

static int wait_gate_entered(void)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(&g_gate_entered)) return 1;
        sleep_ms(1);
    }
    return 0;
}

Test(runtime, current_worker_is_minus_one_off_workers)
{
    cr_assert_eq(pylon_runtime_current_worker(), -1);
    pylon_runtime *rt = make_runtime(2, 0);
    cr_assert_eq(pylon_runtime_current_worker(), -1);
    pylon_runtime_destroy(rt);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (a) one actor, one thread at a time                                                       */
/* ---------------------------------------------------------------------------------------- */

#define EX_ACTORS     64
#define EX_SENDERS    4
#define EX_PER_SENDER 20000u
#define EX_HOPS       3u /* each message is forwarded 3 times: 4 deliveries */
#define EX_WORKERS    4

typedef struct ex_state {
    _Atomic int inside;
    uint32_t idx;
    uint64_t handled; /* plain on purpose: a concurrent run is also a data race for TSan */
} ex_state;

typedef struct hop_msg {
    pylon_msg msg;
    uint32_t hops;
} hop_msg;

static pylon_actor *ex_actors[EX_ACTORS];
static ex_state ex_states[EX_ACTORS];
static _Atomic uint64_t ex_violations, ex_bad_worker, ex_delivered;
static _Atomic uint64_t ex_worker_used[EX_WORKERS];
static _Atomic int ex_go;

static void ex_behaviour(pylon_actor *self, pylon_msg *m)
{
    ex_state *st = pylon_actor_state(self);
    if (atomic_exchange(&st->inside, 1) != 0) atomic_fetch_add(&ex_violations, 1);
    int w = pylon_runtime_current_worker();
    if (w < 0 || w >= EX_WORKERS)
        atomic_fetch_add(&ex_bad_worker, 1);
    else
        atomic_fetch_add_explicit(&ex_worker_used[w], 1, memory_order_relaxed);
    st->handled++;
    for (volatile int spin = 0; spin < 200; spin++) {
    } /* widen the window a second run would hit */

    hop_msg *h = (hop_msg *)m;
    atomic_fetch_add(&ex_delivered, 1);
    if (h->hops > 0) {
        /* Forward: to an actor 31 away, then to the next one, then to itself. The send happens
         * while our flag is still set, so a self-send run early would be caught. */
        static const uint32_t step[EX_HOPS] = {0, 1, 31};
        h->hops--;
        pylon_actor_send(ex_actors[(st->idx + step[h->hops]) % EX_ACTORS], m);
    } else {
        pylon_msg_free(m);
    }
    atomic_store(&st->inside, 0);
}

static const pylon_actor_def ex_def = {.name = "exclusive", .behaviour = ex_behaviour};

static void *ex_sender(void *arg)
{
    uint32_t t = (uint32_t)(uintptr_t)arg;
    while (!atomic_load(&ex_go)) {
    }
    for (uint32_t i = 0; i < EX_PER_SENDER; i++) {
        hop_msg *h = malloc(sizeof *h);
        if (!h) abort();
        pylon_msg_init(&h->msg, 1, NULL);
        h->hops = EX_HOPS;
        pylon_actor_send(ex_actors[(t * 7919u + i * 13u) % EX_ACTORS], &h->msg);
    }
    return NULL;
}

Test(actor, never_runs_on_two_threads, .timeout = 120)
{
    pylon_runtime *rt = make_runtime(EX_WORKERS, 0);
    for (uint32_t i = 0; i < EX_ACTORS; i++) {
        ex_states[i].idx = i;
        ex_actors[i] = pylon_actor_spawn(rt, &ex_def, &ex_states[i]);
        cr_assert_not_null(ex_actors[i]);
    }
    cr_assert_eq(live_actors(rt), EX_ACTORS);

    pthread_t th[EX_SENDERS];
    for (uintptr_t t = 0; t < EX_SENDERS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, ex_sender, (void *)t), 0);
    atomic_store(&ex_go, 1);
    for (int t = 0; t < EX_SENDERS; t++)
        pthread_join(th[t], NULL);

    const uint64_t want = (uint64_t)EX_SENDERS * EX_PER_SENDER * (EX_HOPS + 1);
    cr_assert(wait_u64(&ex_delivered, want, 90000), "delivered %llu of %llu",
              (unsigned long long)atomic_load(&ex_delivered), (unsigned long long)want);

    cr_assert_eq(atomic_load(&ex_violations), 0, "an actor ran on two threads at once %llu times",
                 (unsigned long long)atomic_load(&ex_violations));
    cr_assert_eq(atomic_load(&ex_bad_worker), 0, "behaviour ran off a worker %llu times",
                 (unsigned long long)atomic_load(&ex_bad_worker));

    for (uint32_t i = 0; i < EX_ACTORS; i++)
        pylon_actor_stop(ex_actors[i]);
    for (uint32_t i = 0; i < EX_ACTORS; i++)
        pylon_actor_release(ex_actors[i]);
    cr_assert(wait_live(rt, 0, 10000), "live_actors stuck at %llu",
              (unsigned long long)live_actors(rt));
    pylon_runtime_destroy(rt);

    uint64_t sum = 0;
    for (uint32_t i = 0; i < EX_ACTORS; i++)
        sum += ex_states[i].handled;
    cr_assert_eq(sum, want);
    cr_assert_eq(atomic_load(&ex_delivered), want, "extra deliveries after the count was reached");
    int used = 0;
    for (int w = 0; w < EX_WORKERS; w++)
        used += atomic_load(&ex_worker_used[w]) > 0;
    cr_assert_geq(used, 2, "only %d worker(s) ran actors: the test proved nothing", used);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (b) 10,000 actors × 100 messages                                                          */
/* ---------------------------------------------------------------------------------------- */

#define MANY_ACTORS 10000u
#define MANY_MSGS   100u

typedef struct many_state {
    uint32_t received; /* behaviour only */
    uint32_t received_at_stop;
    _Atomic uint32_t stops;
    _Atomic int stop_off_worker;
} many_state;

static pylon_actor *many_actors[MANY_ACTORS];
static many_state many_states[MANY_ACTORS];
static _Atomic uint64_t many_delivered, many_stopped;

static void many_behaviour(pylon_actor *self, pylon_msg *m)
{
    many_state *st = pylon_actor_state(self);
    st->received++;
    pylon_msg_free(m); /* release == NULL: free() */
    atomic_fetch_add(&many_delivered, 1);
}

static void many_on_stop(pylon_actor *self)
{
    many_state *st = pylon_actor_state(self);
    st->received_at_stop = st->received;
    if (pylon_runtime_current_worker() < 0) atomic_store(&st->stop_off_worker, 1);
    atomic_fetch_add(&st->stops, 1);
    atomic_fetch_add(&many_stopped, 1);
}

static const pylon_actor_def many_def = {
    .name = "many", .behaviour = many_behaviour, .on_stop = many_on_stop};

static void *many_sender(void *arg)
{
    uint32_t half = (uint32_t)(uintptr_t)arg;
    uint32_t from = half * (MANY_ACTORS / 2), to = from + MANY_ACTORS / 2;
    for (uint32_t r = 0; r < MANY_MSGS; r++)
        for (uint32_t i = from; i < to; i++) {
            pylon_msg *m = malloc(sizeof *m);
            if (!m) abort();
            pylon_msg_init(m, r, NULL);
            pylon_actor_send(many_actors[i], m);
        }
    return NULL;
}

Test(actor, ten_thousand_actors_hundred_messages_each, .timeout = 120)
{
    pylon_runtime *rt = make_runtime(2, 0);
    for (uint32_t i = 0; i < MANY_ACTORS; i++) {
        many_actors[i] = pylon_actor_spawn(rt, &many_def, &many_states[i]);
        cr_assert_not_null(many_actors[i]);
    }
    cr_assert_eq(live_actors(rt), MANY_ACTORS);

    pthread_t th[2];
    for (uintptr_t t = 0; t < 2; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, many_sender, (void *)t), 0);
    for (int t = 0; t < 2; t++)
        pthread_join(th[t], NULL);

    const uint64_t want = (uint64_t)MANY_ACTORS * MANY_MSGS;
    cr_assert(wait_u64(&many_delivered, want, 60000), "delivered %llu of %llu",
              (unsigned long long)atomic_load(&many_delivered), (unsigned long long)want);
    cr_assert_eq(atomic_load(&many_stopped), 0, "on_stop ran before any stop");

    /* Stop twice: stop is idempotent, on_stop must still run once. */
    for (uint32_t i = 0; i < MANY_ACTORS; i++)
        pylon_actor_stop(many_actors[i]);
    for (uint32_t i = 0; i < MANY_ACTORS; i++)
        pylon_actor_stop(many_actors[i]);
    cr_assert(wait_u64(&many_stopped, MANY_ACTORS, 60000), "on_stop ran for %llu of %u actors",
              (unsigned long long)atomic_load(&many_stopped), MANY_ACTORS);
    sleep_ms(20); /* room for a wrong second on_stop to show up */

    for (uint32_t i = 0; i < MANY_ACTORS; i++) {
        many_state *st = &many_states[i];
        cr_assert_eq(atomic_load(&st->stops), 1, "actor %u: on_stop ran %u times", i,
                     atomic_load(&st->stops));
        cr_assert_eq(st->received_at_stop, MANY_MSGS, "actor %u: on_stop after %u messages", i,
                     st->received_at_stop);
        cr_assert_not(atomic_load(&st->stop_off_worker), "actor %u: on_stop ran off a worker", i);
    }
    cr_assert_eq(atomic_load(&many_stopped), MANY_ACTORS);

    for (uint32_t i = 0; i < MANY_ACTORS; i++)
        pylon_actor_release(many_actors[i]);
    cr_assert(wait_live(rt, 0, 10000), "live_actors stuck at %llu",
              (unsigned long long)live_actors(rt));

    pylon_runtime_stats stats;
    pylon_runtime_stats_get(rt, &stats);
    cr_assert_geq(stats.messages, want);
    pylon_runtime_destroy(rt);

    for (uint32_t i = 0; i < MANY_ACTORS; i++)
        cr_assert_eq(many_states[i].received, MANY_MSGS, "actor %u received %u", i,
                     many_states[i].received);
    cr_assert_eq(atomic_load(&many_delivered), want);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (c) stop semantics                                                                        */
/* ---------------------------------------------------------------------------------------- */

enum { T_GATE = 1, T_EARLY = 2, T_LATE = 3, T_STOP_SELF = 4 };

typedef struct num_msg {
    pylon_msg msg;
    uint32_t n;
} num_msg;

typedef struct stop_state {
    _Atomic int inside;
    uint32_t next_early;    /* behaviour only */
    uint32_t early_at_stop; /* on_stop only */
    _Atomic uint64_t early, late, odd_flags, out_of_order, overlap;
    _Atomic int stops, stop_worker, stop_inside;
} stop_state;

static _Atomic uint64_t stop_released;

static void stop_release(pylon_msg *m)
{
    atomic_fetch_add(&stop_released, 1);
    free(m);
}

static num_msg *num_new(uint32_t type, uint32_t n)
{
    num_msg *m = malloc(sizeof *m);
    cr_assert_not_null(m);
    pylon_msg_init(&m->msg, type, stop_release);
    m->n = n;
    return m;
}

static void stop_behaviour(pylon_actor *self, pylon_msg *m)
{
    stop_state *st = pylon_actor_state(self);
    if (atomic_exchange(&st->inside, 1)) atomic_fetch_add(&st->overlap, 1);
    if (m->flags & (PYLON_MSG_STOP_ | PYLON_MSG_TIMER_)) atomic_fetch_add(&st->odd_flags, 1);
    switch (m->type) {
    case T_GATE:
        gate_wait();
        break;
    case T_EARLY:
        if (((num_msg *)m)->n != st->next_early) atomic_fetch_add(&st->out_of_order, 1);
        st->next_early = ((num_msg *)m)->n + 1;
        atomic_fetch_add(&st->early, 1);
        break;
    case T_STOP_SELF:
        pylon_actor_stop(self);
        atomic_fetch_add(&st->early, 1);
        break;
    case T_LATE:
        atomic_fetch_add(&st->late, 1);
        break;
    default:
        atomic_fetch_add(&st->odd_flags, 1);
        break;
    }
    atomic_store(&st->inside, 0);
    pylon_msg_free(m);
}

static void stop_on_stop(pylon_actor *self)
{
    stop_state *st = pylon_actor_state(self);
    if (atomic_load(&st->inside)) atomic_store(&st->stop_inside, 1);
    st->early_at_stop = (uint32_t)atomic_load(&st->early);
    atomic_store(&st->stop_worker, pylon_runtime_current_worker());
    atomic_fetch_add(&st->stops, 1);
}

static const pylon_actor_def stop_def = {
    .name = "stopper", .behaviour = stop_behaviour, .on_stop = stop_on_stop, .track_pending = true};

static int wait_int(_Atomic int *v, int want, unsigned timeout_ms)
{
    uint64_t end = pylon_clock_now_ns() + (uint64_t)timeout_ms * PYLON_NS_PER_MS;
    while (atomic_load(v) < want) {
        if (pylon_clock_now_ns() > end) return 0;
        sleep_ms(1);
    }
    return 1;
}

#define EARLY 100u
#define LATE  50u

Test(actor, stop_delivers_queued_and_releases_later, .timeout = 60)
{
    pylon_runtime *rt = make_runtime(2, 0);
    stop_state *st = calloc(1, sizeof *st);
    atomic_store(&st->stop_worker, -2);
    gate_reset();
    pylon_actor *a = pylon_actor_spawn(rt, &stop_def, st);
    cr_assert_not_null(a);

    /* Hold the actor inside a behaviour so that everything below is queued, not handled. */
    pylon_actor_send(a, &num_new(T_GATE, 0)->msg);
    cr_assert(wait_gate_entered(), "gate message never ran");
    for (uint32_t i = 0; i < EARLY; i++)
        pylon_actor_send(a, &num_new(T_EARLY, i)->msg);
    cr_assert_geq(pylon_actor_pending(a), EARLY);
    cr_assert_leq(pylon_actor_pending(a), EARLY + 1);
    pylon_actor_stop(a);
    pylon_actor_stop(a); /* idempotent */
    for (uint32_t i = 0; i < LATE; i++)
        pylon_actor_send(a, &num_new(T_LATE, i)->msg);
    cr_assert_eq(atomic_load(&st->stops), 0, "on_stop ran while the actor was busy");
    atomic_store(&g_gate_open, 1);

    cr_assert(wait_int(&st->stops, 1, 10000), "on_stop never ran");
    cr_assert_eq(st->early_at_stop, EARLY, "on_stop ran after %u of %u queued messages",
                 st->early_at_stop, EARLY);
    cr_assert_geq(atomic_load(&st->stop_worker), 0, "on_stop ran off a worker");
    cr_assert_not(atomic_load(&st->stop_inside), "on_stop ran during a behaviour");

    /* A message sent after on_stop ran (we still hold a reference) is released too. */
    pylon_actor_send(a, &num_new(T_LATE, 999)->msg);
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000), "stopped, released actor not freed");
    cr_assert(wait_u64(&stop_released, 1 + EARLY + LATE + 1, 5000), "released %llu of %u",
              (unsigned long long)atomic_load(&stop_released), 1 + EARLY + LATE + 1);
    pylon_runtime_destroy(rt);

    cr_assert_eq(atomic_load(&st->early), EARLY);
    cr_assert_eq(atomic_load(&st->out_of_order), 0);
    cr_assert_eq(atomic_load(&st->late), 0, "%llu messages delivered after stop",
                 (unsigned long long)atomic_load(&st->late));
    cr_assert_eq(atomic_load(&st->stops), 1);
    cr_assert_eq(atomic_load(&st->odd_flags), 0, "behaviour saw an internal message");
    cr_assert_eq(atomic_load(&st->overlap), 0);
    cr_assert_eq(atomic_load(&stop_released), 1 + EARLY + LATE + 1, "a message released twice");
    free(st);
    assert_no_leaks();
}

Test(actor, stop_from_inside_the_behaviour, .timeout = 60)
{
    pylon_runtime *rt = make_runtime(2, 0);
    stop_state *st = calloc(1, sizeof *st);
    gate_reset();
    pylon_actor *a = pylon_actor_spawn(rt, &stop_def, st);
    cr_assert_not_null(a);

    /* Queue: gate, 10 early, stop-self, 10 early — all queued before the actor stops itself,
     * so all 21 are delivered; the late ones sent after on_stop are not. */
    pylon_actor_send(a, &num_new(T_GATE, 0)->msg);
    cr_assert(wait_gate_entered());
    for (uint32_t i = 0; i < 10; i++)
        pylon_actor_send(a, &num_new(T_EARLY, i)->msg);
    pylon_actor_send(a, &num_new(T_STOP_SELF, 0)->msg);
    for (uint32_t i = 10; i < 20; i++)
        pylon_actor_send(a, &num_new(T_EARLY, i)->msg);
    atomic_store(&g_gate_open, 1);

    cr_assert(wait_int(&st->stops, 1, 10000), "on_stop never ran");
    cr_assert_eq(st->early_at_stop, 21, "on_stop ran after %u of 21 queued messages",
                 st->early_at_stop);
    for (uint32_t i = 0; i < 5; i++)
        pylon_actor_send(a, &num_new(T_LATE, i)->msg);
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000));
    cr_assert(wait_u64(&stop_released, 1 + 21 + 5, 5000));
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&st->late), 0);
    cr_assert_eq(atomic_load(&st->out_of_order), 0);
    cr_assert_eq(atomic_load(&st->stops), 1);
    free(st);
    assert_no_leaks();
}

/* A message flagged PYLON_MSG_BORROWED is given back through release() once, after the
 * behaviour returned, and also when it reaches a stopped actor. */
static _Atomic uint64_t borrowed_released, borrowed_released_inside, borrowed_seen;
static _Atomic int borrowed_inside;

static void borrowed_release(pylon_msg *m)
{
    (void)m;
    if (atomic_load(&borrowed_inside)) atomic_fetch_add(&borrowed_released_inside, 1);
    atomic_fetch_add(&borrowed_released, 1);
}

static void borrowed_behaviour(pylon_actor *self, pylon_msg *m)
{
    atomic_store(&borrowed_inside, 1);
    atomic_fetch_add(&borrowed_seen, 1);
    sleep_ms(2); /* a release that races the behaviour would land here */
    atomic_store(&borrowed_inside, 0);
    /* Borrowed: neither freed nor kept. */
}

static const pylon_actor_def borrowed_def = {.name = "borrower", .behaviour = borrowed_behaviour};

Test(actor, borrowed_message_released_after_behaviour, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(2, 0);
    pylon_actor *a = pylon_actor_spawn(rt, &borrowed_def, NULL);
    cr_assert_not_null(a);
    pylon_msg m;
    pylon_msg_init(&m, 5, borrowed_release);
    m.flags = PYLON_MSG_BORROWED;

    for (uint64_t round = 1; round <= 5; round++) {
        pylon_actor_send(a, &m);
        cr_assert(wait_u64(&borrowed_released, round, 5000), "borrowed message not given back");
        cr_assert_eq(atomic_load(&borrowed_seen), round);
        m.flags = PYLON_MSG_BORROWED; /* reuse, as its owner may */
    }
    cr_assert_eq(atomic_load(&borrowed_released_inside), 0, "released while the behaviour ran");

    pylon_actor_stop(a);
    sleep_ms(10);
    pylon_actor_send(a, &m); /* to a stopped actor: released, not delivered */
    cr_assert(wait_u64(&borrowed_released, 6, 5000));
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&borrowed_seen), 5);
    cr_assert_eq(atomic_load(&borrowed_released), 6);
    assert_no_leaks();
}

/* A borrowed message whose release is NULL: "NULL means free(m)", so the runtime frees it
 * after the behaviour (ASan's leak check sees it if not). */
static _Atomic uint64_t borrowed_null_seen;

static void borrowed_null_behaviour(pylon_actor *self, pylon_msg *m)
{
    atomic_fetch_add(&borrowed_null_seen, 1); /* neither freed nor kept */
}

static const pylon_actor_def borrowed_null_def = {.name = "borrower-null",
                                                  .behaviour = borrowed_null_behaviour};

Test(actor, borrowed_message_with_null_release_is_freed, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(2, 0);
    pylon_actor *a = pylon_actor_spawn(rt, &borrowed_null_def, NULL);
    cr_assert_not_null(a);
    for (int i = 0; i < 10; i++) {
        pylon_msg *m = malloc(sizeof *m);
        pylon_msg_init(m, 1, NULL);
        m->flags = PYLON_MSG_BORROWED;
        pylon_actor_send(a, m);
    }
    cr_assert(wait_u64(&borrowed_null_seen, 10, 5000));
    pylon_actor_stop(a);
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&borrowed_null_seen), 10);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (d) batch limit and fairness                                                              */
/* ---------------------------------------------------------------------------------------- */

#define FAIR_MSGS  10000u
#define FAIR_BATCH 16u

static _Atomic uint32_t fair_log_len;
static uint8_t fair_log[2 * FAIR_MSGS + 16];
static pylon_actor *fair_a, *fair_b;

static void fair_behaviour(pylon_actor *self, pylon_msg *m)
{
    uint32_t at = atomic_fetch_add(&fair_log_len, 1);
    if (at < sizeof fair_log) fair_log[at] = (uint8_t)(uintptr_t)pylon_actor_state(self);
    pylon_msg_free(m);
}

static const pylon_actor_def fair_def = {
    .name = "fair", .behaviour = fair_behaviour, .batch = FAIR_BATCH, .track_pending = true};

static void fair_flood(void)
{
    for (uint32_t i = 0; i < FAIR_MSGS; i++) {
        pylon_msg *m = malloc(sizeof *m);
        if (!m) abort();
        pylon_msg_init(m, 0, NULL);
        pylon_actor_send(fair_a, m);
    }
    for (uint32_t i = 0; i < FAIR_MSGS; i++) {
        pylon_msg *m = malloc(sizeof *m);
        if (!m) abort();
        pylon_msg_init(m, 0, NULL);
        pylon_actor_send(fair_b, m);
    }
}

/* The gate actor either only waits (senders outside) or floods A and B itself (from the
 * worker, which schedules into its own run queue) and then waits. */
static void gate_behaviour(pylon_actor *self, pylon_msg *m)
{
    if (m->type == 1) fair_flood();
    gate_wait();
    pylon_msg_free(m);
}

static const pylon_actor_def gate_def = {.name = "gate", .behaviour = gate_behaviour};

static void run_fairness(int flood_from_worker)
{
    pylon_runtime *rt = make_runtime(1, 0);
    gate_reset();
    atomic_store(&fair_log_len, 0);
    pylon_actor *g = pylon_actor_spawn(rt, &gate_def, NULL);
    fair_a = pylon_actor_spawn(rt, &fair_def, (void *)(uintptr_t)1);
    fair_b = pylon_actor_spawn(rt, &fair_def, (void *)(uintptr_t)2);
    cr_assert(g && fair_a && fair_b);

    pylon_runtime_stats before;
    pylon_runtime_stats_get(rt, &before);
    pylon_msg *gm = malloc(sizeof *gm);
    pylon_msg_init(gm, flood_from_worker ? 1 : 0, NULL);
    pylon_actor_send(g, gm);
    cr_assert(wait_gate_entered(), "gate never ran");
    if (!flood_from_worker) fair_flood();
    cr_assert_eq(atomic_load(&fair_log_len), 0, "A or B ran while the only worker was busy");
    cr_assert_eq(pylon_actor_pending(fair_a), FAIR_MSGS);
    cr_assert_eq(pylon_actor_pending(fair_b), FAIR_MSGS);
    atomic_store(&g_gate_open, 1);

    for (int i = 0; i < 30000 && atomic_load(&fair_log_len) < 2 * FAIR_MSGS; i++)
        sleep_ms(1);
    uint32_t n = atomic_load(&fair_log_len);
    cr_assert_eq(n, 2 * FAIR_MSGS, "delivered %u of %u", n, 2 * FAIR_MSGS);

    pylon_runtime_stats after;
    pylon_runtime_stats_get(rt, &after);
    uint64_t runs = after.runs - before.runs;

    uint32_t switches = 0, longest = 0, run = 0, first_b = UINT32_MAX, last_a = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i > 0 && fair_log[i] != fair_log[i - 1]) {
            switches++;
            run = 0;
        }
        if (++run > longest) longest = run;
        if (fair_log[i] == 2 && first_b == UINT32_MAX) first_b = i;
        if (fair_log[i] == 1) last_a = i;
    }
    const uint32_t min_runs = 2 * ((FAIR_MSGS + FAIR_BATCH - 1) / FAIR_BATCH);
    cr_assert_geq(runs, min_runs, "%llu runs for %u messages at batch %u: batch limit ignored",
                  (unsigned long long)runs, 2 * FAIR_MSGS, FAIR_BATCH);
    cr_assert_lt(first_b, last_a, "A finished all %u messages before B started (first B at %u)",
                 FAIR_MSGS, first_b);
    cr_assert_geq(switches, FAIR_MSGS / FAIR_BATCH,
                  "A and B switched only %u times (longest stretch %u): not taking turns", switches,
                  longest);

    pylon_actor_stop(g);
    pylon_actor_stop(fair_a);
    pylon_actor_stop(fair_b);
    pylon_actor_release(g);
    pylon_actor_release(fair_a);
    pylon_actor_release(fair_b);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_destroy(rt);
}

Test(actor, batch_limit_interleaves_actors_sent_from_outside, .timeout = 60)
{
    run_fairness(0);
    assert_no_leaks();
}

Test(actor, batch_limit_interleaves_actors_sent_from_a_worker, .timeout = 60)
{
    run_fairness(1);
    assert_no_leaks();
}

/* batch 0 in the definition takes the runtime's default batch. */
Test(actor, default_batch_comes_from_runtime_options, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(1, 8);
    gate_reset();
    static const pylon_actor_def plain = {.name = "plain", .behaviour = fair_behaviour};
    atomic_store(&fair_log_len, 0);
    pylon_actor *g = pylon_actor_spawn(rt, &gate_def, NULL);
    pylon_actor *a = pylon_actor_spawn(rt, &plain, (void *)(uintptr_t)1);
    pylon_msg *gm = malloc(sizeof *gm);
    pylon_msg_init(gm, 0, NULL);
    pylon_actor_send(g, gm);
    cr_assert(wait_gate_entered());
    for (int i = 0; i < 800; i++) {
        pylon_msg *m = malloc(sizeof *m);
        pylon_msg_init(m, 0, NULL);
        pylon_actor_send(a, m);
    }
    pylon_runtime_stats before, after;
    pylon_runtime_stats_get(rt, &before);
    atomic_store(&g_gate_open, 1);
    for (int i = 0; i < 10000 && atomic_load(&fair_log_len) < 800; i++)
        sleep_ms(1);
    cr_assert_eq(atomic_load(&fair_log_len), 800);
    pylon_runtime_stats_get(rt, &after);
    cr_assert_geq(after.runs - before.runs, 100, "800 messages at batch 8 took %llu runs",
                  (unsigned long long)(after.runs - before.runs));
    pylon_actor_stop(g);
    pylon_actor_stop(a);
    pylon_actor_release(g);
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_destroy(rt);
    assert_no_leaks();
}

/* on_batch_end: once after each run that delivered messages, seeing exactly that run's batch
 * (what the persistence actor's group commit relies on). */
typedef struct batch_seen {
    uint32_t in_batch; /* messages since the last on_batch_end; actor context only */
    uint32_t max_batch, batches, total;
    _Atomic int done;
} batch_seen;

static void batch_behaviour(pylon_actor *self, pylon_msg *m)
{
    batch_seen *b = pylon_actor_state(self);
    b->in_batch++;
    pylon_msg_free(m);
}

static void batch_end(pylon_actor *self)
{
    batch_seen *b = pylon_actor_state(self);
    cr_assert_gt(b->in_batch, 0, "on_batch_end after a run that delivered nothing");
    if (b->in_batch > b->max_batch) b->max_batch = b->in_batch;
    b->batches++;
    b->total += b->in_batch;
    b->in_batch = 0;
    if (b->total == 100) atomic_store(&b->done, 1);
}

Test(actor, on_batch_end_follows_each_run_with_its_batch, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(1, 64);
    gate_reset();
    static const pylon_actor_def def = {
        .name = "batcher", .behaviour = batch_behaviour, .on_batch_end = batch_end, .batch = 8};
    batch_seen *b = calloc(1, sizeof *b);
    pylon_actor *g = pylon_actor_spawn(rt, &gate_def, NULL);
    pylon_actor *a = pylon_actor_spawn(rt, &def, b);
    pylon_msg *gm = malloc(sizeof *gm);
    pylon_msg_init(gm, 0, NULL);
    pylon_actor_send(g, gm);
    cr_assert(wait_gate_entered()); /* the only worker is held: the 100 messages queue up */
    for (int i = 0; i < 100; i++) {
        pylon_msg *m = malloc(sizeof *m);
        pylon_msg_init(m, 0, NULL);
        pylon_actor_send(a, m);
    }
    atomic_store(&g_gate_open, 1);
    for (int i = 0; i < 5000 && !atomic_load(&b->done); i++)
        sleep_ms(1);
    cr_assert(atomic_load(&b->done), "only %u messages seen by on_batch_end", b->total);
    cr_assert_eq(b->max_batch, 8, "batches are the runs: 8 at a time, got up to %u", b->max_batch);
    cr_assert_eq(b->batches, 13, "100 queued messages at batch 8 = 13 runs, got %u", b->batches);
    pylon_actor_stop(g);
    pylon_actor_stop(a);
    pylon_actor_release(g);
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_destroy(rt);
    free(b);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (e) ping-pong                                                                             */
/* ---------------------------------------------------------------------------------------- */

#define ROUND_TRIPS 100000u

typedef struct ball {
    pylon_msg msg;
    uint32_t trips;
} ball;

static ball *pp_ball;
static pylon_actor *pp_ping, *pp_pong;
static uint64_t pp_ping_seen, pp_pong_seen; /* each written by its own actor only */
static _Atomic uint64_t pp_wrong_msg;
static _Atomic int pp_done;

static void ping_behaviour(pylon_actor *self, pylon_msg *m)
{
    ball *b = (ball *)m;
    if (b != pp_ball) atomic_fetch_add(&pp_wrong_msg, 1);
    pp_ping_seen++;
    if (++b->trips == ROUND_TRIPS) {
        pylon_msg_free(m);
        atomic_store(&pp_done, 1);
        return;
    }
    pylon_actor_send(pp_pong, m);
}

static void pong_behaviour(pylon_actor *self, pylon_msg *m)
{
    if ((ball *)m != pp_ball) atomic_fetch_add(&pp_wrong_msg, 1);
    pp_pong_seen++;
    pylon_actor_send(pp_ping, m);
}

static const pylon_actor_def ping_def = {.name = "ping", .behaviour = ping_behaviour};
static const pylon_actor_def pong_def = {.name = "pong", .behaviour = pong_behaviour};

Test(actor, ping_pong_one_message_100k_round_trips, .timeout = 120)
{
    pylon_runtime *rt = make_runtime(2, 0);
    pp_ping = pylon_actor_spawn(rt, &ping_def, NULL);
    pp_pong = pylon_actor_spawn(rt, &pong_def, NULL);
    cr_assert(pp_ping && pp_pong);
    pp_ball = malloc(sizeof *pp_ball);
    pylon_msg_init(&pp_ball->msg, 9, NULL);
    pp_ball->trips = 0;
    pylon_actor_send(pp_pong, &pp_ball->msg);

    cr_assert(wait_int(&pp_done, 1, 100000), "ping-pong did not finish");
    pylon_actor_stop(pp_ping);
    pylon_actor_stop(pp_pong);
    pylon_actor_release(pp_ping);
    pylon_actor_release(pp_pong);
    cr_assert(wait_live(rt, 0, 5000));
    pylon_runtime_stats s;
    pylon_runtime_stats_get(rt, &s);
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&pp_wrong_msg), 0);
    cr_assert_eq(pp_ping_seen, ROUND_TRIPS);
    cr_assert_eq(pp_pong_seen, ROUND_TRIPS);
    cr_assert_geq(s.messages, 2 * ROUND_TRIPS);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (f) reference counting                                                                    */
/* ---------------------------------------------------------------------------------------- */

static _Atomic uint64_t rc_delivered;
static _Atomic int rc_stops;

static void rc_behaviour(pylon_actor *self, pylon_msg *m)
{
    atomic_fetch_add(&rc_delivered, 1);
    pylon_msg_free(m);
}

static void rc_on_stop(pylon_actor *self)
{
    free(pylon_actor_state(self)); /* the state is freed in on_stop, as actor.h suggests */
    atomic_fetch_add(&rc_stops, 1);
}

static const pylon_actor_def rc_def = {
    .name = "rc", .behaviour = rc_behaviour, .on_stop = rc_on_stop};

Test(actor, lives_while_referenced_freed_after_last_release, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(2, 0);
    pylon_actor *a = pylon_actor_spawn(rt, &rc_def, malloc(64));
    cr_assert_not_null(a);
    cr_assert_eq(live_actors(rt), 1);
    pylon_actor_retain(a);
    pylon_actor_retain(a);
    pylon_actor_stop(a);
    cr_assert(wait_int(&rc_stops, 1, 5000));
    sleep_ms(20);
    cr_assert_eq(live_actors(rt), 1, "freed while 3 references were held");
    pylon_actor_release(a);
    pylon_actor_release(a);
    sleep_ms(20);
    cr_assert_eq(live_actors(rt), 1, "freed while 1 reference was held");
    cr_assert_str_eq(pylon_actor_name(a), "rc"); /* still valid memory */
    pylon_actor_release(a);
    cr_assert(wait_live(rt, 0, 5000), "not freed after the last release");
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&rc_stops), 1);
    assert_no_leaks();
}

Test(actor, released_right_after_stop_still_drains_and_frees, .timeout = 30)
{
    pylon_runtime *rt = make_runtime(2, 0);
    for (int k = 0; k < 100; k++) {
        pylon_actor *a = pylon_actor_spawn(rt, &rc_def, malloc(16));
        cr_assert_not_null(a);
        for (int i = 0; i < 100; i++) {
            pylon_msg *m = malloc(sizeof *m);
            pylon_msg_init(m, 0, NULL);
            pylon_actor_send(a, m);
        }
        pylon_actor_stop(a);
        pylon_actor_release(a); /* the runtime's own reference keeps it until stopped */
    }
    cr_assert(wait_u64(&rc_delivered, 100 * 100, 10000), "delivered %llu of 10000",
              (unsigned long long)atomic_load(&rc_delivered));
    cr_assert(wait_int(&rc_stops, 100, 10000));
    cr_assert(wait_live(rt, 0, 5000), "live_actors stuck at %llu",
              (unsigned long long)live_actors(rt));
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&rc_delivered), 100 * 100);
    cr_assert_eq(atomic_load(&rc_stops), 100);
    assert_no_leaks();
}

/* Other threads keep sending through their own references while the actor stops; every
 * message is either delivered or released, exactly once, and the actor is freed at the end. */
static _Atomic uint64_t race_released, race_delivered;
static pylon_actor *race_actor;

static void race_release(pylon_msg *m)
{
    atomic_fetch_add(&race_released, 1);
    free(m);
}

static void race_behaviour(pylon_actor *self, pylon_msg *m)
{
    atomic_fetch_add(&race_delivered, 1);
    pylon_msg_free(m);
}

static const pylon_actor_def race_def = {.name = "race", .behaviour = race_behaviour};

static void *race_sender(void *arg)
{
    pylon_actor *a = arg; /* this thread's own reference */
    for (int i = 0; i < 20000; i++) {
        pylon_msg *m = malloc(sizeof *m);
        if (!m) abort();
        pylon_msg_init(m, 0, race_release);
        pylon_actor_send(a, m);
    }
    pylon_actor_release(a);
    return NULL;
}

Test(actor, stop_races_with_senders_every_message_accounted_once, .timeout = 60)
{
    pylon_runtime *rt = make_runtime(2, 0);
    race_actor = pylon_actor_spawn(rt, &race_def, NULL);
    pthread_t th[3];
    for (int t = 0; t < 3; t++) {
        pylon_actor_retain(race_actor);
        cr_assert_eq(pthread_create(&th[t], NULL, race_sender, race_actor), 0);
    }
    sleep_ms(1);
    pylon_actor_stop(race_actor);
    pylon_actor_release(race_actor);
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    cr_assert(wait_live(rt, 0, 10000), "actor not freed");
    cr_assert(wait_u64(&race_released, 60000, 5000), "released %llu of 60000",
              (unsigned long long)atomic_load(&race_released));
    pylon_runtime_destroy(rt);
    cr_assert_eq(atomic_load(&race_released), 60000);
    cr_assert_leq(atomic_load(&race_delivered), 60000);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* Accessors                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static int acc_a, acc_b;
static _Atomic int acc_ok, acc_steps;
static pylon_runtime *acc_rt;

static void acc_behaviour(pylon_actor *self, pylon_msg *m)
{
    int ok = 1;
    if (m->type == 1) {
        ok = pylon_actor_state(self) == &acc_a && pylon_actor_runtime(self) == acc_rt;
        pylon_actor_set_state(self, &acc_b);
    } else {
        ok = pylon_actor_state(self) == &acc_b;
    }
    if (!ok) atomic_store(&acc_ok, 0);
    atomic_fetch_add(&acc_steps, 1);
    pylon_msg_free(m);
}

static const pylon_actor_def acc_def = {
    .name = "accessors", .behaviour = acc_behaviour, .track_pending = true};

Test(actor, accessors)
{
    acc_rt = make_runtime(2, 0);
    atomic_store(&acc_ok, 1);
    pylon_actor *a = pylon_actor_spawn(acc_rt, &acc_def, &acc_a);
    cr_assert_not_null(a);
    cr_assert_str_eq(pylon_actor_name(a), "accessors");
    cr_assert_eq(pylon_actor_runtime(a), acc_rt);
    cr_assert_eq(pylon_actor_state(a), &acc_a);
    cr_assert_eq(pylon_actor_pending(a), 0);
    for (uint32_t t = 1; t <= 2; t++) {
        pylon_msg *m = malloc(sizeof *m);
        pylon_msg_init(m, t, NULL);
        pylon_actor_send(a, m);
    }
    cr_assert(wait_int(&acc_steps, 2, 5000));
    cr_assert(atomic_load(&acc_ok), "state/runtime seen wrongly inside the behaviour");
    cr_assert_eq(pylon_actor_state(a), &acc_b);
    pylon_actor_stop(a);
    pylon_actor_release(a);
    cr_assert(wait_live(acc_rt, 0, 5000));
    pylon_runtime_destroy(acc_rt);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------- */
/* (g) batching from a non-worker thread (pylon_runtime_defer)                               */
/* ---------------------------------------------------------------------------------------- */

static _Atomic uint64_t g_deferred_seen;

static void deferred_count(pylon_actor *self, pylon_msg *m)
{
    (void)self;
    atomic_fetch_add(&g_deferred_seen, 1);
    pylon_msg_free(m);
}

static const pylon_actor_def deferred_def = {.name = "deferred", .behaviour = deferred_count};

static void send_plain(pylon_actor *a)
{
    pylon_msg *m = malloc(sizeof *m);
    cr_assert_not_null(m);
    pylon_msg_init(m, 1, NULL);
    pylon_actor_send(a, m);
}

Test(runtime, deferred_sends_are_held_until_flush_then_all_delivered, .timeout = 30)
{
    atomic_store(&g_deferred_seen, 0);
    pylon_runtime *rt = make_runtime(2, 0);
    pylon_actor *actors[8];
    for (int i = 0; i < 8; i++)
        actors[i] = pylon_actor_spawn(rt, &deferred_def, NULL);
    sleep_ms(20); /* both workers go to sleep: the flush must wake them */

    pylon_runtime_defer(true);
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < 8; i++)
            send_plain(actors[i]);
    sleep_ms(50);
    cr_assert_eq(atomic_load(&g_deferred_seen), 0, "ran before the flush");
    pylon_runtime_flush();
    cr_assert(wait_u64(&g_deferred_seen, 400, 10000), "delivered %llu of 400 after the flush",
              (unsigned long long)atomic_load(&g_deferred_seen));

    for (int i = 0; i < 8; i++) /* ending the batching hands over what is held */
        send_plain(actors[i]);
    pylon_runtime_defer(false);
    cr_assert(wait_u64(&g_deferred_seen, 408, 10000), "defer(false) left %llu of 408",
              (unsigned long long)atomic_load(&g_deferred_seen));

    send_plain(actors[0]); /* not batching any more: delivered at once */
    cr_assert(wait_u64(&g_deferred_seen, 409, 10000));
    for (int i = 0; i < 8; i++) {
        pylon_actor_stop(actors[i]);
        pylon_actor_release(actors[i]);
    }
    cr_assert(wait_live(rt, 0, 10000));
    pylon_runtime_destroy(rt);
    assert_no_leaks();
}
