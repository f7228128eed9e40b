/*
 * loop.c — an I/O thread running a uv_loop, and the task queue other threads post to.
 *
 * Wake-ups: the task queue is idle-marked (mpsc.h). Only the post that finds it idle calls
 * uv_async_send; the loop drains until it manages to mark the queue idle again, so a burst of
 * posts costs one wake-up and none is lost. A wake-up runs at most DRAIN_BUDGET tasks, then
 * the loop serves I/O and wakes itself for the rest. Posting after pylon_loop_destroy began is
 * a bug.
 */
#include "engine/loop.h"
#include "engine/log.h"
#include "engine/runtime.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pylon_loop {
    uv_loop_t uv;
    uv_async_t async;
    uv_prepare_t before_poll; /* both hand the actors readied by this thread to the workers */
    uv_check_t after_poll;    /* (pylon_runtime_defer), so none waits across a blocking poll */
    pylon_mpsc tasks;
    atomic_bool stopping;
    pthread_t thread; /* for the join (the starting thread only) */
    bool started;     /* the starting thread only */
    /* The loop thread's identity, published by the loop thread itself before it runs any
     * task: pthread_create may store `thread` after the new thread already runs tasks (queued
     * before the start) that ask pylon_loop_on_thread. */
    pthread_t self;
    atomic_bool running;
    char name[32];
    _Atomic uint64_t tasks_run, wakeups;
};

/* Tasks run per wake-up before the loop serves its sockets again: a flood of posts (a
 * fan-out to thousands of streams) must not hold back reads, accepts and timers, e.g. the
 * HTTP requests whose answers are waiting. A stream task is about one writev (5-10 us), so
 * this is a few milliseconds of work. */
#define DRAIN_BUDGET 1024

/* Runs at most `budget` tasks (SIZE_MAX: all); returns how many ran. */
static size_t drain(pylon_loop *loop, size_t budget)
{
    size_t n = 0;
    while (n < budget) {
        pylon_mpsc_node *node = pylon_mpsc_pop(&loop->tasks);
        if (!node) break;
        pylon_loop_task *task = (pylon_loop_task *)node;
        task->run(task, loop);
        n++;
    }
    atomic_fetch_add_explicit(&loop->tasks_run, n, memory_order_relaxed);
    return n;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_async(uv_async_t *async)
{
    pylon_loop *loop = async->data;
    atomic_fetch_add_explicit(&loop->wakeups, 1, memory_order_relaxed);
    size_t budget = DRAIN_BUDGET;
    for (int round = 0;; round++) {
        budget -= drain(loop, budget);
        if (budget == 0) {
            /* More may be queued: the queue stays marked busy (posters send no wake-up), so
             * wake ourselves for after this turn's I/O. */
            uv_async_send(&loop->async);
            break;
        }
        if (pylon_mpsc_try_idle(&loop->tasks)) break;
        if (round == 3) {
            /* A post is between its two steps (its poster was preempted): serve I/O meanwhile
             * and come back, rather than spin on the loop thread. */
            uv_async_send(&loop->async);
            break;
        }
    }
    if (atomic_load_explicit(&loop->stopping, memory_order_acquire)) {
        /* Close every handle still open (sockets, timers, this async); the close callbacks
         * their owners registered run during the last turns of uv_run. */
        uv_walk(&loop->uv, close_walk_cb, NULL);
    }
}

static void flush_readied(uv_prepare_t *h)
{
    (void)h;
    pylon_runtime_flush();
}

static void flush_readied_check(uv_check_t *h)
{
    (void)h;
    pylon_runtime_flush();
}

static void *loop_thread(void *arg)
{
    pylon_loop *loop = arg;
    loop->self = pthread_self();
    /* Named for top -H, perf and /proc/<pid>/task/<tid>/comm (15 characters at most). */
    char thread_name[16];
    snprintf(thread_name, sizeof thread_name, "pylon-%.9s", loop->name);
    pthread_setname_np(loop->self, thread_name);
    atomic_store_explicit(&loop->running, true, memory_order_release);
    pylon_runtime_defer(true);
    uv_run(&loop->uv, UV_RUN_DEFAULT);
    pylon_runtime_defer(false);
    /* Its id may be reused by a later thread: not "on the loop thread" any more. */
    atomic_store_explicit(&loop->running, false, memory_order_release);
    return NULL;
}

pylon_loop *pylon_loop_create(const char *name, char *err, size_t errlen)
{
    pylon_loop *loop = calloc(1, sizeof *loop);
    if (!loop) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int rc = uv_loop_init(&loop->uv);
    if (rc == 0) {
        rc = uv_async_init(&loop->uv, &loop->async, on_async);
        if (rc != 0) uv_loop_close(&loop->uv);
    }
    if (rc == 0) { /* cannot fail on an initialised loop */
        uv_prepare_init(&loop->uv, &loop->before_poll);
        uv_prepare_start(&loop->before_poll, flush_readied);
        uv_unref((uv_handle_t *)&loop->before_poll);
        uv_check_init(&loop->uv, &loop->after_poll);
        uv_check_start(&loop->after_poll, flush_readied_check);
        uv_unref((uv_handle_t *)&loop->after_poll);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot create I/O loop %s: %s", name, uv_strerror(rc));
        free(loop);
        return NULL;
    }
    loop->async.data = loop;
    loop->uv.data = loop;
    pylon_mpsc_init(&loop->tasks);
    snprintf(loop->name, sizeof loop->name, "%s", name ? name : "io");
    return loop;
}

int pylon_loop_start(pylon_loop *loop)
{
    int rc = pthread_create(&loop->thread, NULL, loop_thread, loop);
    if (rc != 0) return -rc;
    loop->started = true;
    return 0;
}

void pylon_loop_post(pylon_loop *loop, pylon_loop_task *task)
{
    if (pylon_mpsc_push(&loop->tasks, &task->node)) uv_async_send(&loop->async);
}

void pylon_loop_destroy(pylon_loop *loop)
{
    if (!loop) return;
    atomic_store_explicit(&loop->stopping, true, memory_order_release);
    uv_async_send(&loop->async);
    if (loop->started) {
        pthread_join(loop->thread, NULL);
    } else {
        on_async(&loop->async);
        uv_run(&loop->uv, UV_RUN_DEFAULT);
    }
    drain(loop, SIZE_MAX); /* posts that landed while the handles closed */
    int rc = uv_loop_close(&loop->uv);
    if (rc != 0)
        pylon_log_error("engine", "loop %s closed with handles still open: %s", loop->name,
                        uv_strerror(rc));
    free(loop);
}

uv_loop_t *pylon_loop_uv(pylon_loop *loop)
{
    return &loop->uv;
}

bool pylon_loop_on_thread(const pylon_loop *loop)
{
    return atomic_load_explicit(&((pylon_loop *)loop)->running, memory_order_acquire) &&
           pthread_equal(pthread_self(), loop->self);
}

const char *pylon_loop_name(const pylon_loop *loop)
{
    return loop->name;
}

void pylon_loop_stats_get(pylon_loop *loop, pylon_loop_stats *out)
{
    out->tasks_run = atomic_load_explicit(&loop->tasks_run, memory_order_relaxed);
    out->wakeups = atomic_load_explicit(&loop->wakeups, memory_order_relaxed);
}
