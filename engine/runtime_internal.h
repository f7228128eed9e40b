/*
 * runtime_internal.h — what actor.c, runtime.c and timer.c share and nobody else may use.
 *
 * The actor's combined counter `rc` packs two numbers so one atomic operation can tell both
 * "this push made the mailbox non-empty" and "nothing refers to this actor any more":
 *   high 32 bits: references (spawner's handle, the runtime's life reference, retains, timers)
 *   low 32 bits:  messages queued and not yet handled
 * The actor is scheduled exactly when the low half goes 0 → 1 and stays in one run queue until
 * the worker that runs it brings the low half back to 0. Memory is freed when the whole word
 * reaches 0: no reference left and nothing queued, so no run queue holds it either.
 */
#ifndef PYLON_ENGINE_RUNTIME_INTERNAL_H
#define PYLON_ENGINE_RUNTIME_INTERNAL_H

#include "engine/actor.h"
#include "engine/runtime.h"

#include <stdatomic.h>

#define PYLON_RC_REF ((uint64_t)1 << 32)
#define PYLON_RC_QUEUED_MASK ((uint64_t)0xffffffffu)

typedef struct pylon_timers pylon_timers;

struct pylon_actor {
    pylon_mpsc mailbox;
    _Atomic uint64_t rc;
    pylon_actor *next_ready; /* link in the global run queue, guarded by its lock */
    pylon_runtime *rt;
    const pylon_actor_def *def;
    void *state;
    uint32_t batch;
    bool stopped; /* actor context only */
    atomic_bool stop_requested;
    pylon_msg stop_msg;
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
