/*
 * runtime_internal.h — what actor.c, runtime.c and timer.c share and nobody else may use.
 *
 * Scheduling: an actor is scheduled exactly when a send finds its mailbox IDLE (mpsc.h), and it
 * stays in one run queue, or on one worker, until the worker that runs it succeeds in marking
 * the mailbox IDLE again. That is the whole "never on two threads" argument.
 *
 * Lifetime: `refs` counts references (the spawner's handle, the runtime's life reference held
 * until the actor stops, retains, timers). The release that takes it to 0 sends the actor its
 * own `final_msg` instead of freeing: only the worker running the actor ever frees it, after
 * handling that message. It is necessarily the last message (every other send happened before
 * its sender's release), so nothing can touch the actor afterwards.
 */
#ifndef PYLON_ENGINE_RUNTIME_INTERNAL_H
#define PYLON_ENGINE_RUNTIME_INTERNAL_H

#include "engine/actor.h"
#include "engine/runtime.h"

#include <stdatomic.h>

typedef struct pylon_timers pylon_timers;

/* Cache-line aligned so that actors run by different workers never share a line. */
struct __attribute__((aligned(64))) pylon_actor {
    pylon_mpsc mailbox;
    _Atomic uint32_t pending; /* only when def->track_pending */
    _Atomic uint32_t refs;
    pylon_actor *next_ready; /* link in the global run queue, guarded by its lock */
    pylon_runtime *rt;
    const pylon_actor_def *def;
    void *state;
    uint32_t batch;
    bool track_pending; /* copied from def: read on every send, keep it on this line */
    bool stopped;       /* actor context only */
    atomic_bool stop_requested;
    bool finished; /* final_msg handled: free at the end of this run */
    pylon_msg stop_msg;
    pylon_msg final_msg;
};

/* runtime.c */
void pylon_runtime_schedule_(pylon_runtime *rt, pylon_actor *a);
uint32_t pylon_runtime_default_batch_(const pylon_runtime *rt);
void pylon_runtime_actor_born_(pylon_runtime *rt);
void pylon_runtime_actor_freed_(pylon_runtime *rt);
pylon_timers *pylon_runtime_timers_(pylon_runtime *rt);

/* actor.c: runs up to one batch; returns true when the actor must be scheduled again. */
bool pylon_actor_run_(pylon_actor *a, uint32_t *delivered);

/* timer.c */
pylon_timers *pylon_timers_create_(char *err, size_t errlen);
void pylon_timers_stop_(pylon_timers *ts);    /* no tick is sent after it returns */
void pylon_timers_destroy_(pylon_timers *ts); /* after the workers are gone */
bool pylon_timer_deliverable_(pylon_msg *m);
void pylon_timer_returned_(pylon_msg *m);

#endif
