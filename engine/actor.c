/*
 * actor.c — spawning, sending, stopping and running one actor's batch.
 *
 * See runtime_internal.h for the scheduling and lifetime rules: a send costs one exchange
 * (plus one add when the actor tracks its pending count).
 */
#include "engine/runtime_internal.h"
#include "engine/log.h"

#include <stdlib.h>
#include <string.h>

void pylon_msg_free(pylon_msg *m)
{
    if (m->release)
        m->release(m);
    else
        free(m);
}

pylon_actor *pylon_actor_spawn(pylon_runtime *rt, const pylon_actor_def *def, void *state)
{
    pylon_actor *a = aligned_alloc(64, sizeof *a); /* sizeof is a multiple of the alignment */
    if (!a) return NULL;
    memset(a, 0, sizeof *a);
    pylon_mpsc_init(&a->mailbox);
    /* Two references: the caller's handle and the runtime's, held until the actor stops. */
    atomic_init(&a->refs, 2);
    atomic_init(&a->pending, 0);
    a->rt = rt;
    a->def = def;
    a->state = state;
    a->batch = def->batch ? def->batch : pylon_runtime_default_batch_(rt);
    a->track_pending = def->track_pending;
    atomic_init(&a->stop_requested, false);
    pylon_msg_init(&a->stop_msg, 0, NULL);
    a->stop_msg.flags = PYLON_MSG_BORROWED | PYLON_MSG_STOP_;
    pylon_msg_init(&a->final_msg, 0, NULL);
    a->final_msg.flags = PYLON_MSG_BORROWED | PYLON_MSG_FINAL_;
    pylon_runtime_actor_born_(rt);
    return a;
}

void pylon_actor_send(pylon_actor *a, pylon_msg *m)
{
    /* Counted before the push, so the count never goes below zero when the run subtracts. */
    if (a->track_pending) atomic_fetch_add_explicit(&a->pending, 1, memory_order_relaxed);
    if (pylon_mpsc_push(&a->mailbox, &m->node)) pylon_runtime_schedule_(a->rt, a);
}

void pylon_actor_stop(pylon_actor *a)
{
    if (atomic_exchange_explicit(&a->stop_requested, true, memory_order_acq_rel)) return;
    pylon_actor_send(a, &a->stop_msg);
}

void pylon_actor_retain(pylon_actor *a)
{
    atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
}

void pylon_actor_release(pylon_actor *a)
{
    /* The last reference hands the actor to its own worker to free (runtime_internal.h). */
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        pylon_actor_send(a, &a->final_msg);
}

void *pylon_actor_state(const pylon_actor *a)
{
    return a->state;
}

void pylon_actor_set_state(pylon_actor *a, void *state)
{
    a->state = state;
}

pylon_runtime *pylon_actor_runtime(const pylon_actor *a)
{
    return a->rt;
}

const char *pylon_actor_name(const pylon_actor *a)
{
    return a->def->name ? a->def->name : "actor";
}

uint32_t pylon_actor_pending(const pylon_actor *a)
{
    return atomic_load_explicit(&a->pending, memory_order_relaxed);
}

/* Gives a message back without delivering it (the actor has stopped). */
static void drop_undelivered(pylon_msg *m)
{
    if (m->flags & PYLON_MSG_TIMER_)
        pylon_timer_returned_(m);
    else if (m->flags & (PYLON_MSG_STOP_ | PYLON_MSG_FINAL_))
        return;
    else
        pylon_msg_free(m); /* borrowed or owned: release() gives it back either way */
}

static void deliver(pylon_actor *a, pylon_msg *m)
{
    if (m->flags & PYLON_MSG_FINAL_) {
        a->finished = true;
        return;
    }
    if (m->flags & PYLON_MSG_STOP_) {
        if (a->stopped) return;
        a->stopped = true;
        if (a->def->on_stop) a->def->on_stop(a);
        a->state = NULL;
        /* Drop the runtime's life reference; if it was the last, final_msg is queued behind. */
        pylon_actor_release(a);
        return;
    }
    if (a->stopped) {
        drop_undelivered(m);
        return;
    }
    if (m->flags & PYLON_MSG_TIMER_) {
        if (pylon_timer_deliverable_(m)) a->def->behaviour(a, m);
        pylon_timer_returned_(m);
        return;
    }
    /* Read before the call: an owned message may be freed or forwarded by the behaviour. */
    bool borrowed = m->flags & PYLON_MSG_BORROWED;
    a->def->behaviour(a, m);
    if (borrowed) pylon_msg_free(m); /* hands it back through its release function */
}

bool pylon_actor_run_(pylon_actor *a, uint32_t *delivered)
{
    uint32_t n = 0;
    while (n < a->batch) {
        pylon_mpsc_node *node = pylon_mpsc_pop(&a->mailbox);
        if (!node) break; /* empty, or a producer is mid-push: try_idle below tells which */
        n++;
        deliver(a, (pylon_msg *)node);
    }
    *delivered = n;
    if (n && a->def->on_batch_end && !a->stopped) a->def->on_batch_end(a);
    if (a->track_pending) atomic_fetch_sub_explicit(&a->pending, n, memory_order_relaxed);
    if (a->finished) { /* final_msg was the last message: nobody can reach the actor now */
        pylon_runtime *rt = a->rt;
        free(a);
        pylon_runtime_actor_freed_(rt);
        return false;
    }
    return n == a->batch || !pylon_mpsc_try_idle(&a->mailbox);
}
