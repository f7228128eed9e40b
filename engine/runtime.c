/*
 * runtime.c — worker threads, run queues, work stealing, sleeping and waking.
 *
 * Run queues. Each worker owns a ring of RING_SIZE ready actors: the owner appends at `tail`
 * (a plain release store), anyone takes from `head` with a CAS. That is the Go scheduler's
 * local queue: FIFO, so an actor that used up its batch goes behind the others, and stealable.
 * A full ring spills half of itself, plus the new actor, to the global queue (a mutex-guarded
 * list), which is also where threads that are not workers schedule. A worker looks at the
 * global queue first every GLOBAL_CHECK_EVERY runs so it can never be starved by busy rings.
 *
 * Sleeping. A worker that finds nothing spins a little (counted in `nspinning`), then puts
 * itself on the idle stack (`nidle`), re-checks every queue, and only then waits on its
 * semaphore. A scheduler of work publishes the actor, then wakes one idle worker unless one is
 * already spinning. Both sides use seq_cst operations, so either the waker sees the idle
 * worker or the worker's re-check sees the work. No wake-up is lost. (A worker readying
 * an actor on its own otherwise empty ring skips the wake-up: see schedule_on.)
 *
 * runnext. Like Go, a worker keeps the actor it readied last in a private slot and runs it
 * next: a request/reply pair then stays on one core with its cache lines hot and costs no
 * run-queue atomics. The slot is not stealable, so an actor waits in it at most for the rest
 * of the current behaviour (behaviours must not block), and a pair can hold the worker for at
 * most RUNNEXT_STREAK_MAX runs before the ring gets a turn.
 */
#include "engine/runtime_internal.h"
#include "engine/log.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RING_SIZE          256u
#define GLOBAL_CHECK_EVERY 61u
#define GLOBAL_GRAB_MAX    32u
#define SPIN_ROUNDS        64
#define RUNNEXT_STREAK_MAX 16u
#define MAX_WORKERS        256u

typedef struct worker {
    _Atomic uint32_t head; /* next to take: owner and thieves CAS it */
    _Atomic uint32_t tail; /* next free slot: written by the owner only */
    _Atomic(pylon_actor *) ring[RING_SIZE];
    pylon_runtime *rt;
    unsigned index;
    pthread_t thread;
    sem_t wake;
    pylon_actor *runnext; /* owner only: the actor readied last, run next (see schedule_on) */
    uint32_t runnext_streak;
    uint32_t rand;
    uint64_t runs_since_global;
    /* counters written by the owner only, read (approximately) by stats */
    _Atomic uint64_t runs, messages, steals, sleeps;
} __attribute__((aligned(64))) worker;

struct pylon_runtime {
    worker *workers;
    unsigned nworkers;
    uint32_t batch;

    pthread_mutex_t global_lock; /* guards the global queue */
    pylon_actor *global_head, *global_tail;
    _Atomic uint32_t global_len;

    pthread_mutex_t idle_lock; /* guards idle_stack */
    unsigned *idle_stack;
    unsigned idle_count;
    _Atomic unsigned nidle;
    _Atomic unsigned nspinning;

    atomic_bool shutting_down;
    _Atomic uint64_t live_actors;
    pylon_timers *timers;
};

static _Thread_local worker *current_worker;

/* ---- global queue ------------------------------------------------------------------------ */

static void global_push_list(pylon_runtime *rt, pylon_actor *first, pylon_actor *last, uint32_t n)
{
    last->next_ready = NULL;
    pthread_mutex_lock(&rt->global_lock);
    if (rt->global_tail)
        rt->global_tail->next_ready = first;
    else
        rt->global_head = first;
    rt->global_tail = last;
    atomic_fetch_add_explicit(&rt->global_len, n, memory_order_seq_cst);
    pthread_mutex_unlock(&rt->global_lock);
}

/* Takes one actor for the caller and moves up to `extra` more into the caller's ring. */
static pylon_actor *global_take(pylon_runtime *rt, worker *w, uint32_t extra)
{
    if (atomic_load_explicit(&rt->global_len, memory_order_seq_cst) == 0) return NULL;
    pthread_mutex_lock(&rt->global_lock);
    pylon_actor *a = rt->global_head;
    if (!a) {
        pthread_mutex_unlock(&rt->global_lock);
        return NULL;
    }
    rt->global_head = a->next_ready;
    uint32_t taken = 1;
    if (w) {
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        uint32_t room = RING_SIZE - (t - h);
        if (extra > room / 2) extra = room / 2;
        while (extra-- > 0 && rt->global_head) {
            pylon_actor *b = rt->global_head;
            rt->global_head = b->next_ready;
            atomic_store_explicit(&w->ring[t % RING_SIZE], b, memory_order_relaxed);
            t++;
            taken++;
        }
        atomic_store_explicit(&w->tail, t, memory_order_release);
    }
    if (!rt->global_head) rt->global_tail = NULL;
    atomic_fetch_sub_explicit(&rt->global_len, taken, memory_order_seq_cst);
    pthread_mutex_unlock(&rt->global_lock);
    return a;
}

/* ---- local rings ------------------------------------------------------------------------- */

static pylon_actor *ring_pop(worker *w)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_acquire);
        if (h == t) return NULL;
        pylon_actor *a = atomic_load_explicit(&w->ring[h % RING_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&w->head, &h, h + 1, memory_order_acq_rel,
                                                  memory_order_relaxed))
            return a;
    }
}

/* Owner only. A full ring sends half of itself and `a` to the global queue. Returns how many
 * actors were ready before this one (in the ring, or the spilled batch). */
static uint32_t ring_push(worker *w, pylon_actor *a)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&w->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&w->tail, memory_order_relaxed);
        if (t - h < RING_SIZE) {
            atomic_store_explicit(&w->ring[t % RING_SIZE], a, memory_order_relaxed);
            atomic_store_explicit(&w->tail, t + 1, memory_order_release);
            return t - h;
        }
        uint32_t n = RING_SIZE / 2;
        pylon_actor *batch[RING_SIZE / 2];
        for (uint32_t i = 0; i < n; i++)
            batch[i] = atomic_load_explicit(&w->ring[(h + i) % RING_SIZE], memory_order_relaxed);
        if (!atomic_compare_exchange_strong_explicit(&w->head, &h, h + n, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue; /* thieves took some: there may be room now */
        for (uint32_t i = 0; i + 1 < n; i++)
            batch[i]->next_ready = batch[i + 1];
        batch[n - 1]->next_ready = a;
        global_push_list(w->rt, batch[0], a, n + 1);
        return n;
    }
}

/* Moves half of victim's ring into thief's (empty) ring; returns one actor to run now. */
static pylon_actor *ring_steal(worker *thief, worker *victim)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&victim->tail, memory_order_acquire);
        uint32_t n = t - h;
        if (n == 0 || n > RING_SIZE) {
            if (n == 0) return NULL;
            continue; /* torn read of head/tail: retry */
        }
        n -= n / 2;
        uint32_t tt = atomic_load_explicit(&thief->tail, memory_order_relaxed);
        for (uint32_t i = 0; i < n; i++) {
            pylon_actor *a =
                atomic_load_explicit(&victim->ring[(h + i) % RING_SIZE], memory_order_relaxed);
            atomic_store_explicit(&thief->ring[(tt + i) % RING_SIZE], a, memory_order_relaxed);
        }
        if (!atomic_compare_exchange_strong_explicit(&victim->head, &h, h + n, memory_order_acq_rel,
                                                     memory_order_relaxed))
            continue;
        /* Keep the last one to run; publish the others in our ring. */
        pylon_actor *run =
            atomic_load_explicit(&thief->ring[(tt + n - 1) % RING_SIZE], memory_order_relaxed);
        if (n > 1) atomic_store_explicit(&thief->tail, tt + n - 1, memory_order_release);
        return run;
    }
}

/* ---- waking ------------------------------------------------------------------------------ */

/* `sure`: the caller made work visible that only a woken worker would find (the global queue,
 * published by a seq_cst add to global_len), so the loads below must be seq_cst too: with the
 * sleeper's seq_cst increment of nidle and its seq_cst re-read of global_len this is the
 * store-buffering pattern, where at least one side sees the other. A worker waking peers for
 * work in its own ring passes false: there the wake-up is only a hint for parallelism (the
 * owner runs its ring anyway) and relaxed loads are enough. */
static void wake_one(pylon_runtime *rt, bool sure)
{
    memory_order mo = sure ? memory_order_seq_cst : memory_order_relaxed;
    if (atomic_load_explicit(&rt->nidle, mo) == 0) return;
    if (atomic_load_explicit(&rt->nspinning, mo) != 0) return;
    pthread_mutex_lock(&rt->idle_lock);
    if (rt->idle_count == 0) {
        pthread_mutex_unlock(&rt->idle_lock);
        return;
    }
    worker *w = &rt->workers[rt->idle_stack[--rt->idle_count]];
    atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&rt->idle_lock);
    sem_post(&w->wake);
}

/* A worker readying an actor puts it in runnext; the one it displaces goes to the ring. A
 * peer is woken only when that leaves work a peer could take: the owner runs its own ring and
 * runnext anyway, and waking a peer just to steal a ping-pong partner costs a futex call per
 * message. The owner never sleeps while it has work, so nothing is stranded. */
static void schedule_on(worker *w, pylon_actor *a)
{
    pylon_actor *prev = w->runnext;
    w->runnext = a;
    if (prev) {
        ring_push(w, prev);
        wake_one(w->rt, false);
    }
}

/* The end of a run that used its whole batch: behind every other ready actor, for fairness. */
static void requeue(worker *w, pylon_actor *a)
{
    if (ring_push(w, a) > 0 || w->runnext) wake_one(w->rt, false);
}

/* A non-worker thread's readied actors while it batches (pylon_runtime_defer). */
static _Thread_local struct {
    bool on;
    pylon_runtime *rt;
    pylon_actor *head, *tail;
    uint32_t n;
} deferred;

void pylon_runtime_flush(void)
{
    if (deferred.n == 0) return;
    pylon_runtime *rt = deferred.rt;
    uint32_t n = deferred.n;
    global_push_list(rt, deferred.head, deferred.tail, n);
    deferred.head = deferred.tail = NULL;
    deferred.n = 0;
    wake_one(rt, true);
    if (n > 1) wake_one(rt, true); /* a second worker if one sleeps: more than one is ready */
}

void pylon_runtime_defer(bool on)
{
    if (!on) pylon_runtime_flush();
    deferred.on = on;
}

void pylon_runtime_schedule_(pylon_runtime *rt, pylon_actor *a)
{
    worker *w = current_worker;
    if (w && w->rt == rt) {
        schedule_on(w, a);
        return;
    }
    if (deferred.on) {
        if (deferred.n && deferred.rt != rt) pylon_runtime_flush(); /* one runtime per batch */
        deferred.rt = rt;
        a->next_ready = NULL;
        if (deferred.tail)
            deferred.tail->next_ready = a;
        else
            deferred.head = a;
        deferred.tail = a;
        deferred.n++;
        return;
    }
    global_push_list(rt, a, a, 1);
    wake_one(rt, true);
}

/* ---- the worker loop --------------------------------------------------------------------- */

static pylon_actor *find_work(worker *w)
{
    pylon_runtime *rt = w->rt;
    pylon_actor *a;
    if (++w->runs_since_global >= GLOBAL_CHECK_EVERY) {
        w->runs_since_global = 0;
        if ((a = global_take(rt, w, 0))) return a;
    }
    if (w->runnext && w->runnext_streak < RUNNEXT_STREAK_MAX) {
        a = w->runnext;
        w->runnext = NULL;
        w->runnext_streak++;
        return a;
    }
    w->runnext_streak = 0;
    if ((a = ring_pop(w))) return a;
    if ((a = w->runnext)) {
        w->runnext = NULL;
        return a;
    }
    if ((a = global_take(rt, w, GLOBAL_GRAB_MAX))) return a;
    if (rt->nworkers > 1) {
        unsigned start = (w->rand = w->rand * 1103515245u + 12345u) % rt->nworkers;
        for (unsigned i = 0; i < rt->nworkers; i++) {
            worker *v = &rt->workers[(start + i) % rt->nworkers];
            if (v == w) continue;
            if ((a = ring_steal(w, v))) {
                atomic_fetch_add_explicit(&w->steals, 1, memory_order_relaxed);
                return a;
            }
        }
    }
    return NULL;
}

static bool idle_remove(pylon_runtime *rt, worker *w)
{
    bool removed = false;
    pthread_mutex_lock(&rt->idle_lock);
    for (unsigned i = 0; i < rt->idle_count; i++) {
        if (rt->idle_stack[i] == w->index) {
            rt->idle_stack[i] = rt->idle_stack[--rt->idle_count];
            atomic_fetch_sub_explicit(&rt->nidle, 1, memory_order_seq_cst);
            removed = true;
            break;
        }
    }
    pthread_mutex_unlock(&rt->idle_lock);
    return removed;
}

/* Spins, then sleeps until woken. Returns work, or NULL when the runtime shuts down idle. */
static pylon_actor *wait_for_work(worker *w)
{
    pylon_runtime *rt = w->rt;
    pylon_actor *a = NULL;
    atomic_fetch_add_explicit(&rt->nspinning, 1, memory_order_seq_cst);
    for (int i = 0; i < SPIN_ROUNDS && !a; i++) {
        for (int j = 0; j < 16; j++)
            __builtin_ia32_pause();
        a = find_work(w);
    }
    if (a) {
        atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
        return a;
    }
    bool spinning = true;
    for (;;) {
        pthread_mutex_lock(&rt->idle_lock);
        rt->idle_stack[rt->idle_count++] = w->index;
        atomic_fetch_add_explicit(&rt->nidle, 1, memory_order_seq_cst);
        pthread_mutex_unlock(&rt->idle_lock);
        if (spinning) {
            /* Only now: a waker that saw us spinning relies on this re-check. */
            atomic_fetch_sub_explicit(&rt->nspinning, 1, memory_order_seq_cst);
            spinning = false;
        }
        /* Re-check after announcing ourselves idle (seq_cst, see wake_one). */
        a = find_work(w);
        if (!a && atomic_load_explicit(&rt->shutting_down, memory_order_seq_cst)) {
            idle_remove(rt, w);
            return NULL;
        }
        if (a) {
            idle_remove(rt, w); /* if a waker popped us first, its post only causes a re-check */
            return a;
        }
        atomic_fetch_add_explicit(&w->sleeps, 1, memory_order_relaxed);
        while (sem_wait(&w->wake) != 0 && errno == EINTR) {
        }
        idle_remove(rt, w);
        a = find_work(w);
        if (a) return a;
        if (atomic_load_explicit(&rt->shutting_down, memory_order_seq_cst)) return NULL;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    current_worker = w;
    char thread_name[16]; /* for top -H, perf and /proc/<pid>/task/<tid>/comm */
    snprintf(thread_name, sizeof thread_name, "pylon-work%u", w->index);
    pthread_setname_np(pthread_self(), thread_name);
    for (;;) {
        pylon_actor *a = find_work(w);
        if (!a) a = wait_for_work(w);
        if (!a) break;
        uint32_t delivered;
        bool again = pylon_actor_run_(a, &delivered);
        atomic_store_explicit(&w->runs, atomic_load_explicit(&w->runs, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        atomic_store_explicit(&w->messages,
                              atomic_load_explicit(&w->messages, memory_order_relaxed) + delivered,
                              memory_order_relaxed);
        if (again) requeue(w, a);
    }
    current_worker = NULL;
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------------------------- */

pylon_runtime *pylon_runtime_create(const pylon_runtime_options *opt, char *err, size_t errlen)
{
    pylon_runtime_options o = opt ? *opt : (pylon_runtime_options){0};
    if (o.workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.workers = n > 0 ? (unsigned)n : 1;
    }
    if (o.workers > MAX_WORKERS) {
        snprintf(err, errlen, "too many workers: %u (at most %u)", o.workers, MAX_WORKERS);
        return NULL;
    }
    pylon_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->nworkers = o.workers;
    rt->batch = o.batch ? o.batch : 64;
    pthread_mutex_init(&rt->global_lock, NULL);
    pthread_mutex_init(&rt->idle_lock, NULL);
    rt->idle_stack = calloc(o.workers, sizeof *rt->idle_stack);
    if (posix_memalign((void **)&rt->workers, 64, o.workers * sizeof(worker)) != 0 ||
        !rt->idle_stack) {
        snprintf(err, errlen, "out of memory");
        free(rt->idle_stack);
        free(rt);
        return NULL;
    }
    memset(rt->workers, 0, o.workers * sizeof(worker));
    rt->timers = pylon_timers_create_(err, errlen);
    if (!rt->timers) {
        free(rt->workers);
        free(rt->idle_stack);
        free(rt);
        return NULL;
    }
    for (unsigned i = 0; i < o.workers; i++) {
        worker *w = &rt->workers[i];
        w->rt = rt;
        w->index = i;
        w->rand = 0x9e3779b9u * (i + 1);
        sem_init(&w->wake, 0, 0);
    }
    for (unsigned i = 0; i < o.workers; i++) {
        int rc = pthread_create(&rt->workers[i].thread, NULL, worker_main, &rt->workers[i]);
        if (rc != 0) {
            snprintf(err, errlen, "cannot start worker thread %u: %s", i, strerror(rc));
            rt->nworkers = i; /* destroy joins the ones that started */
            pylon_runtime_destroy(rt);
            return NULL;
        }
    }
    return rt;
}

void pylon_runtime_destroy(pylon_runtime *rt)
{
    if (!rt) return;
    /* Timers stop first, so no tick arrives while the workers wind down; their memory goes
     * last, because ticks still queued are handed back to it. */
    pylon_timers_stop_(rt->timers);
    atomic_store_explicit(&rt->shutting_down, true, memory_order_seq_cst);
    for (unsigned i = 0; i < rt->nworkers; i++)
        sem_post(&rt->workers[i].wake);
    for (unsigned i = 0; i < rt->nworkers; i++)
        pthread_join(rt->workers[i].thread, NULL);
    pylon_timers_destroy_(rt->timers);
    uint64_t live = atomic_load(&rt->live_actors);
    if (live > 0)
        pylon_log_warn("engine", "runtime destroyed with %llu actor(s) not stopped and released",
                       (unsigned long long)live);
    for (unsigned i = 0; i < rt->nworkers; i++)
        sem_destroy(&rt->workers[i].wake);
    pthread_mutex_destroy(&rt->global_lock);
    pthread_mutex_destroy(&rt->idle_lock);
    free(rt->idle_stack);
    free(rt->workers);
    free(rt);
}

unsigned pylon_runtime_workers(const pylon_runtime *rt)
{
    return rt->nworkers;
}

uint32_t pylon_runtime_default_batch_(const pylon_runtime *rt)
{
    return rt->batch;
}

void pylon_runtime_actor_born_(pylon_runtime *rt)
{
    atomic_fetch_add_explicit(&rt->live_actors, 1, memory_order_relaxed);
}

void pylon_runtime_actor_freed_(pylon_runtime *rt)
{
    atomic_fetch_sub_explicit(&rt->live_actors, 1, memory_order_relaxed);
}

pylon_timers *pylon_runtime_timers_(pylon_runtime *rt)
{
    return rt->timers;
}

int pylon_runtime_current_worker(void)
{
    return current_worker ? (int)current_worker->index : -1;
}

void pylon_runtime_stats_get(pylon_runtime *rt, pylon_runtime_stats *out)
{
    memset(out, 0, sizeof *out);
    for (unsigned i = 0; i < rt->nworkers; i++) {
        worker *w = &rt->workers[i];
        out->runs += atomic_load_explicit(&w->runs, memory_order_relaxed);
        out->messages += atomic_load_explicit(&w->messages, memory_order_relaxed);
        out->steals += atomic_load_explicit(&w->steals, memory_order_relaxed);
        out->sleeps += atomic_load_explicit(&w->sleeps, memory_order_relaxed);
    }
    out->live_actors = atomic_load_explicit(&rt->live_actors, memory_order_relaxed);
}
