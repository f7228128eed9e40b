/*
 * runtime.h — the scheduler: a fixed pool of worker threads that run actors.
 *
 * Owns: worker threads, their run queues, the global (injection) queue, idle/wake-up, and the
 * timer thread (timer.h). It does not own any actor's state.
 *
 * Each worker has a bounded lock-free ring of ready actors (FIFO; the owner pushes, the owner
 * and thieves pop). Threads that are not workers (I/O loops, the timer thread) schedule into
 * the global queue. An idle worker looks in its ring, then the global queue, then steals half
 * of another worker's ring; after a short spin it sleeps on its own semaphore, and a push that
 * finds a sleeping worker and no spinning one wakes exactly one.
 */
#ifndef PYLON_ENGINE_RUNTIME_H
#define PYLON_ENGINE_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pylon_runtime pylon_runtime;

typedef struct pylon_runtime_options {
    unsigned workers; /* 0 = number of online cores */
    unsigned batch;   /* default messages per actor run; 0 = 64 */
} pylon_runtime_options;

typedef struct pylon_runtime_stats {
    uint64_t runs;     /* actor runs (each up to one batch) */
    uint64_t messages; /* messages delivered */
    uint64_t steals;   /* successful steals */
    uint64_t sleeps;   /* times a worker went to sleep */
    uint64_t live_actors;
} pylon_runtime_stats;

/* Starts the workers and the timer thread. NULL with a reason in `err` on failure. */
pylon_runtime *pylon_runtime_create(const pylon_runtime_options *opt, char *err, size_t errlen);

/* Stops the timer thread, lets the workers finish what is queued, joins them and frees the
 * runtime. Cancel your timers and stop your actors first: actors still alive are reported in
 * the log and leaked, never freed under a sender's feet. Must not be called from a worker. */
void pylon_runtime_destroy(pylon_runtime *rt);

unsigned pylon_runtime_workers(const pylon_runtime *rt);
void pylon_runtime_stats_get(pylon_runtime *rt, pylon_runtime_stats *out);

/* Batching for threads that are not workers (an I/O loop). After pylon_runtime_defer(true),
 * the actors this thread readies are held and handed to the workers together by the next
 * pylon_runtime_flush(): one global-queue lock and at most two wake-ups per batch instead of
 * one of each per message (a loop reading 50 requests in one poll wakes workers once). The
 * thread must flush before it can block: the I/O loop flushes right after each poll and
 * before the next. pylon_runtime_defer(false) flushes and ends batching. Worker threads
 * ignore this (they schedule on their own ring without a lock or a wake-up). */
void pylon_runtime_defer(bool on);
void pylon_runtime_flush(void);

/* Index of the worker running the calling thread, or -1 for any other thread. */
int pylon_runtime_current_worker(void);

#endif
