/*
 * ref_queue.h — the reference scheduler the engine benchmark compares pylon's runtime against.
 *
 * A deliberately conventional design: N worker threads share ONE run queue (an intrusive FIFO
 * of ready actors) protected by a pthread mutex and condition variable; each actor has a FIFO
 * mailbox protected by its own mutex. The scheduling semantics are pylon's (actor.h): an actor
 * is queued when its mailbox goes non-empty, a worker runs it over a batch of up to `batch`
 * messages (64 by default), and an actor is never run by two threads at once. Ownership,
 * reference counting and stop() follow actor.h too, so the same workload code runs on both.
 *
 * The API mirrors pylon's name for name (pylon_X -> ref_X) so that bench/engine/workloads.inc
 * can be compiled once against each. Only what the benchmark needs is provided.
 */
#ifndef PYLON_BENCH_REF_QUEUE_H
#define PYLON_BENCH_REF_QUEUE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ref_runtime ref_runtime;
typedef struct ref_actor ref_actor;
typedef struct ref_msg ref_msg;

enum {
    REF_MSG_BORROWED = 1u << 0, /* release() is called after the behaviour (stop requests) */
    REF_MSG_STOP_ = 1u << 2,    /* internal: the actor's stop request */
};

struct ref_msg {
    ref_msg *next; /* mailbox link, guarded by the mailbox mutex */
    uint32_t type;
    uint32_t flags;
    void (*release)(ref_msg *m); /* NULL means free(m) */
};

typedef void (*ref_behaviour_fn)(ref_actor *self, ref_msg *msg);

typedef struct ref_actor_def {
    const char *name;
    ref_behaviour_fn behaviour;
    void (*on_stop)(ref_actor *self);
    uint32_t batch; /* 0 = runtime default */
} ref_actor_def;

typedef struct ref_runtime_options {
    unsigned workers; /* 0 = online cores */
    unsigned batch;   /* 0 = 64 */
} ref_runtime_options;

typedef struct ref_runtime_stats {
    uint64_t runs;
    uint64_t messages;
    uint64_t steals; /* always 0: there is nothing to steal from */
    uint64_t sleeps;
    uint64_t live_actors;
} ref_runtime_stats;

static inline void ref_msg_init(ref_msg *m, uint32_t type, void (*release)(ref_msg *))
{
    m->type = type;
    m->flags = 0;
    m->release = release;
}

void ref_msg_free(ref_msg *m);

ref_runtime *ref_runtime_create(const ref_runtime_options *opt, char *err, size_t errlen);
/* Finishes what is queued, joins the workers, frees the runtime. Stop the actors first. */
void ref_runtime_destroy(ref_runtime *rt);
unsigned ref_runtime_workers(const ref_runtime *rt);
void ref_runtime_stats_get(ref_runtime *rt, ref_runtime_stats *out);

ref_actor *ref_actor_spawn(ref_runtime *rt, const ref_actor_def *def, void *state);
void ref_actor_send(ref_actor *a, ref_msg *m);
void ref_actor_stop(ref_actor *a);
void ref_actor_retain(ref_actor *a);
void ref_actor_release(ref_actor *a);
void *ref_actor_state(const ref_actor *a);

#endif
