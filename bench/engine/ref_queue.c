/*
 * ref_queue.c — the conventional reference scheduler (see ref_queue.h).
 *
 * One global run queue (mutex + condition variable) shared by every worker; one mutex per
 * mailbox. An actor's `scheduled` flag, guarded by its mailbox mutex, is what keeps it from
 * being queued (and so run) twice: it is set by the send that makes the mailbox non-empty and
 * cleared by the worker that finds the mailbox empty.
 */
#include "ref_queue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ref_actor {
    ref_actor *next_ready; /* run-queue link, guarded by rt->lock */
    ref_runtime *rt;
    const ref_actor_def *def;
    void *state;
    uint32_t batch;
    _Atomic uint32_t refs;
    atomic_bool stop_requested;

    pthread_mutex_t lock; /* guards everything below */
    ref_msg *head, *tail;
    bool scheduled; /* in the run queue or being run */
    bool stopped;

    ref_msg stop_msg;
};

typedef struct ref_worker {
    ref_runtime *rt;
    pthread_t thread;
    /* Written by the owner only (relaxed load + store), read by stats_get. */
    _Atomic uint64_t runs, messages, sleeps;
    char pad[64];
} ref_worker;

struct ref_runtime {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    ref_actor *rq_head, *rq_tail;
    unsigned idle; /* workers waiting on cv */
    bool shutdown;

    unsigned nworkers;
    unsigned batch;
    ref_worker *workers;
    _Atomic uint64_t live;
};

static void bump(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void ref_msg_free(ref_msg *m)
{
    if (m->release)
        m->release(m);
    else
        free(m);
}

static void noop_release(ref_msg *m)
{
    (void)m;
}

/* ---- run queue ---------------------------------------------------------------------------- */

static void schedule(ref_runtime *rt, ref_actor *a)
{
    a->next_ready = NULL;
    pthread_mutex_lock(&rt->lock);
    if (rt->rq_tail)
        rt->rq_tail->next_ready = a;
    else
        rt->rq_head = a;
    rt->rq_tail = a;
    if (rt->idle > 0) pthread_cond_signal(&rt->cv);
    pthread_mutex_unlock(&rt->lock);
}

/* ---- actors ------------------------------------------------------------------------------- */

ref_actor *ref_actor_spawn(ref_runtime *rt, const ref_actor_def *def, void *state)
{
    ref_actor *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->rt = rt;
    a->def = def;
    a->state = state;
    a->batch = def->batch ? def->batch : rt->batch;
    atomic_init(&a->refs, 2); /* the caller's and the runtime's (dropped when stopped) */
    atomic_init(&a->stop_requested, false);
    pthread_mutex_init(&a->lock, NULL);
    atomic_fetch_add_explicit(&rt->live, 1, memory_order_relaxed);
    return a;
}

void ref_actor_retain(ref_actor *a)
{
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

void ref_actor_release(ref_actor *a)
{
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) != 1) return;
    ref_runtime *rt = a->rt;
    pthread_mutex_destroy(&a->lock);
    free(a);
    atomic_fetch_sub_explicit(&rt->live, 1, memory_order_release);
}

void *ref_actor_state(const ref_actor *a)
{
    return a->state;
}

/* Appends `m` and queues the actor if its mailbox was empty; false if the actor has stopped. */
static bool enqueue(ref_actor *a, ref_msg *m)
{
    m->next = NULL;
    pthread_mutex_lock(&a->lock);
    if (a->stopped) {
        pthread_mutex_unlock(&a->lock);
        return false;
    }
    if (a->tail)
        a->tail->next = m;
    else
        a->head = m;
    a->tail = m;
    bool sched = !a->scheduled;
    a->scheduled = true;
    pthread_mutex_unlock(&a->lock);
    if (sched) schedule(a->rt, a);
    return true;
}

void ref_actor_send(ref_actor *a, ref_msg *m)
{
    if (!enqueue(a, m)) ref_msg_free(m);
}

void ref_actor_stop(ref_actor *a)
{
    if (atomic_exchange_explicit(&a->stop_requested, true, memory_order_acq_rel)) return;
    ref_msg_init(&a->stop_msg, 0, noop_release);
    a->stop_msg.flags = REF_MSG_STOP_ | REF_MSG_BORROWED;
    (void)enqueue(a, &a->stop_msg); /* borrowed: nothing to give back if already stopped */
}

/* The stop request reached the front of the mailbox: run on_stop, drop whatever is left, and
 * give up the runtime's reference. `a` may be freed on return. */
static void finish_stop(ref_actor *a)
{
    if (a->def->on_stop) a->def->on_stop(a);
    pthread_mutex_lock(&a->lock);
    a->stopped = true;
    a->scheduled = false;
    ref_msg *rest = a->head;
    a->head = a->tail = NULL;
    pthread_mutex_unlock(&a->lock);
    while (rest) {
        ref_msg *next = rest->next;
        ref_msg_free(rest);
        rest = next;
    }
    ref_actor_release(a);
}

/* Runs `a` over up to one batch. */
static void run_actor(ref_worker *w, ref_actor *a)
{
    uint32_t n = 0;
    for (;;) {
        pthread_mutex_lock(&a->lock);
        ref_msg *m = a->head;
        if (!m) {
            a->scheduled = false;
            pthread_mutex_unlock(&a->lock);
            break;
        }
        a->head = m->next;
        if (!a->head) a->tail = NULL;
        pthread_mutex_unlock(&a->lock);

        n++;
        if (m->flags & REF_MSG_STOP_) {
            bump(&w->messages, n - 1);
            bump(&w->runs, 1);
            finish_stop(a);
            return;
        }
        /* Read the flag first: once the behaviour returns, an owned message may already have
         * been forwarded and freed by another thread. */
        bool borrowed = m->flags & REF_MSG_BORROWED;
        a->def->behaviour(a, m);
        if (borrowed) ref_msg_free(m);

        if (n == a->batch) {
            pthread_mutex_lock(&a->lock);
            bool more = a->head != NULL;
            if (!more) a->scheduled = false;
            pthread_mutex_unlock(&a->lock);
            if (more) schedule(a->rt, a); /* to the back of the shared queue */
            break;
        }
    }
    bump(&w->messages, n);
    bump(&w->runs, 1);
}

static void *worker_main(void *arg)
{
    ref_worker *w = arg;
    ref_runtime *rt = w->rt;
    pthread_mutex_lock(&rt->lock);
    for (;;) {
        while (!rt->rq_head && !rt->shutdown) {
            rt->idle++;
            bump(&w->sleeps, 1);
            pthread_cond_wait(&rt->cv, &rt->lock);
            rt->idle--;
        }
        ref_actor *a = rt->rq_head;
        if (!a) break; /* shut down and nothing queued */
        rt->rq_head = a->next_ready;
        if (!rt->rq_head) rt->rq_tail = NULL;
        pthread_mutex_unlock(&rt->lock);
        run_actor(w, a);
        pthread_mutex_lock(&rt->lock);
    }
    pthread_mutex_unlock(&rt->lock);
    return NULL;
}

/* ---- runtime ------------------------------------------------------------------------------ */

ref_runtime *ref_runtime_create(const ref_runtime_options *opt, char *err, size_t errlen)
{
    ref_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    rt->nworkers = opt && opt->workers ? opt->workers : (unsigned)(cores > 0 ? cores : 1);
    rt->batch = opt && opt->batch ? opt->batch : 64;
    pthread_mutex_init(&rt->lock, NULL);
    pthread_cond_init(&rt->cv, NULL);
    rt->workers = calloc(rt->nworkers, sizeof *rt->workers);
    if (!rt->workers) {
        snprintf(err, errlen, "out of memory");
        free(rt);
        return NULL;
    }
    for (unsigned i = 0; i < rt->nworkers; i++) {
        rt->workers[i].rt = rt;
        int rc = pthread_create(&rt->workers[i].thread, NULL, worker_main, &rt->workers[i]);
        if (rc != 0) {
            snprintf(err, errlen, "pthread_create: %s", strerror(rc));
            pthread_mutex_lock(&rt->lock);
            rt->shutdown = true;
            pthread_cond_broadcast(&rt->cv);
            pthread_mutex_unlock(&rt->lock);
            for (unsigned j = 0; j < i; j++)
                pthread_join(rt->workers[j].thread, NULL);
            free(rt->workers);
            free(rt);
            return NULL;
        }
    }
    return rt;
}

void ref_runtime_destroy(ref_runtime *rt)
{
    pthread_mutex_lock(&rt->lock);
    rt->shutdown = true;
    pthread_cond_broadcast(&rt->cv);
    pthread_mutex_unlock(&rt->lock);
    for (unsigned i = 0; i < rt->nworkers; i++)
        pthread_join(rt->workers[i].thread, NULL);
    uint64_t live = atomic_load_explicit(&rt->live, memory_order_acquire);
    if (live)
        fprintf(stderr, "ref_runtime_destroy: %llu actors still alive (leaked)\n",
                (unsigned long long)live);
    pthread_cond_destroy(&rt->cv);
    pthread_mutex_destroy(&rt->lock);
    free(rt->workers);
    free(rt);
}

unsigned ref_runtime_workers(const ref_runtime *rt)
{
    return rt->nworkers;
}

void ref_runtime_stats_get(ref_runtime *rt, ref_runtime_stats *out)
{
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        ref_worker *w = &rt->workers[i];
        out->runs += atomic_load_explicit(&w->runs, memory_order_relaxed);
        out->messages += atomic_load_explicit(&w->messages, memory_order_relaxed);
        out->sleeps += atomic_load_explicit(&w->sleeps, memory_order_relaxed);
    }
    out->live_actors = atomic_load_explicit(&rt->live, memory_order_acquire);
}
